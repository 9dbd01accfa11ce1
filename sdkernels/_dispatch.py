"""Which implementation an op runs on a given device, and a visible record of every fallback.

Rule: CUDA tensor -> Triton kernel; CPU tensor -> the same Triton kernel under TRITON_INTERPRET=1, else the
PyTorch reference. The interpreter flag is read once, at import, because Triton reads it when it is imported.
"""

from __future__ import annotations

import collections
import logging
import os
import threading

import torch

from sdkernels.kernels._launch import _state as _launch_state

logger = logging.getLogger("sdkernels")

INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"

_fallback_lock = threading.Lock()
_fallback_counts: collections.Counter[tuple[str, str]] = collections.Counter()


# The Triton interpreter gets bf16 wrong (tl.dot multiplies raw bit patterns, casts truncate). The fixes live with
# the test fixtures (sdkernels.testing.interpreter), which the runtime never imports; until they are applied, bf16
# on the interpreter takes the PyTorch reference instead of a silently wrong kernel.
_interpreter_bf16_fixed = False


def mark_interpreter_bf16_fixed() -> None:
    """Called by sdkernels.testing.interpreter.apply_interpreter_fixes once the interpreter computes bf16 right."""
    global _interpreter_bf16_fixed
    _interpreter_bf16_fixed = True


def interpreter_bf16_problem(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why a bf16 tensor on `device` cannot take the interpreted kernel, or None."""
    if (
        dtype == torch.bfloat16
        and device.type == "cpu"
        and INTERPRET
        and not _interpreter_bf16_fixed
        and not recording()
    ):
        return "bf16 under the Triton interpreter needs sdkernels.testing.interpreter.apply_interpreter_fixes()"
    return None


def use_triton(device: torch.device) -> bool:
    """True when a tensor on `device` should go through the Triton kernel (on any device while a LaunchRecorder
    records launches instead of running them)."""
    if device.type == "cuda" or (device.type == "cpu" and INTERPRET):
        return True
    return recording()


def recording() -> bool:
    """True while a sdkernels.kernels._launch.LaunchRecorder is active in this thread."""
    return getattr(_launch_state, "recorder", None) is not None


def path_name(device: torch.device) -> str:
    """Human-readable name of the path an op takes for tensors on `device`."""
    if device.type == "cuda":
        return "triton (cuda)"
    if device.type == "cpu" and INTERPRET:
        return "triton interpreter (cpu)"
    if device.type == "meta":
        return "meta (shapes only)"
    return f"pytorch reference ({device.type})"


def note_fallback(op: str, reason: str, *, took: str = "the PyTorch reference") -> None:
    """Record (and log once per (op, reason)) that `op` did not run its kernel the fast way: it `took` the PyTorch
    reference, or another slower path (e.g. "a contiguous copy of its input"), for `reason`. One record for every
    such case, so `fallback_counts()` is the whole story."""
    with _fallback_lock:
        first = (op, reason) not in _fallback_counts
        _fallback_counts[(op, reason)] += 1
    if first:
        logger.warning("sdkernels.%s took %s: %s", op, took, reason)


def fallback_counts() -> dict[tuple[str, str], int]:
    """How often each (op, reason) fallback or slower path happened in this process."""
    with _fallback_lock:
        return dict(_fallback_counts)


def reset_fallback_counts() -> None:
    with _fallback_lock:
        _fallback_counts.clear()


# Tests set this (tests/conftest.py) so every kernel output starts as NaN: an element a kernel forgets to write
# then fails the comparison instead of passing by luck with whatever torch.empty returned.
POISON_OUTPUTS: bool = os.environ.get("SDKERNELS_POISON_OUTPUTS", "0") == "1"


def poison(out: torch.Tensor) -> torch.Tensor:
    """Fill a freshly allocated kernel output with NaN when POISON_OUTPUTS is on; return it."""
    if POISON_OUTPUTS:
        out.fill_(float("nan"))
    return out
