"""Lets the ahead-of-time tools (aot.py, jit_binding.py, written against triton 3.9) run on the oldest supported
triton (3.6).

jit_binding.bind_like_jit passes the launch options triton 3.9's JIT passes, read from `triton.knobs.compilation`,
among them `fpsan_homomorphic_casts`, which older triton neither has as a knob nor accepts as an option. Rather than
a version switch in the binding, an older triton gets the knob at 3.9's default (off) and its JITFunction drops that
option before packing, which is exactly what its own JIT does: it never passes it. Tools only; the runtime never
imports this.
"""

from __future__ import annotations

from typing import Any

import triton

# knob -> the value triton 3.9 defaults it to
NEWER_LAUNCH_KNOBS = {"fpsan_homomorphic_casts": False}
_installed: list[str] = []


def accept_newer_launch_knobs() -> list[str]:
    """Idempotent; returns the knobs this triton lacked (empty on triton 3.9)."""
    compilation = triton.knobs.compilation
    missing = [k for k in NEWER_LAUNCH_KNOBS if not hasattr(compilation, k) and k not in _installed]
    if not missing:
        return list(_installed)
    for knob in missing:
        setattr(compilation, knob, NEWER_LAUNCH_KNOBS[knob])
    jit_function = triton.runtime.JITFunction
    original = jit_function._pack_args

    def pack_args(self: Any, backend: Any, kwargs: dict[str, Any], *rest: Any) -> Any:
        return original(self, backend, {k: v for k, v in kwargs.items() if k not in missing}, *rest)

    jit_function._pack_args = pack_args
    _installed.extend(missing)
    return list(_installed)
