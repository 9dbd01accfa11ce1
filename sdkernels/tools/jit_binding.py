"""Bind an `AotSpec` exactly as `kernel[grid](...)` would on a GPU, with no GPU and no tensors: Triton's own argument
binder fed with fake arguments that carry the spec's dtypes, 16-byte alignment and unit values. The ahead-of-time
compile (sdkernels.tools.aot) compiles what this returns."""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler.compiler import make_backend
from triton.runtime.jit import create_function_from_signature

from sdkernels.kernels._tuning import AotSpec


class _FakePointer:
    """What the JIT's binder reads from a tensor argument: its dtype and address alignment."""

    def __init__(self, dtype: tl.dtype, address: int) -> None:
        self.dtype = dtype
        self.address = address

    def data_ptr(self) -> int:
        return self.address


_INT_NAMES = {"i1": "int1", "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64", "u8": "uint8"}
_INT_BASES = {"i32": 0, "i64": 1 << 33}  # a value whose width makes the binder pick this type


def _fake_argument(name: str, ty: str, divisible: bool, one: bool) -> Any:
    """An argument the binder specialises exactly as the spec says: 16-aligned or not, or the integer 1."""
    if ty.startswith("*"):
        if one:
            raise ValueError(f"{name}: a pointer cannot be equal_to_1")
        return _FakePointer(tl.dtype(_INT_NAMES.get(ty[1:], ty[1:])), 256 if divisible else 8)
    if ty in _INT_BASES:
        return 1 if one else _INT_BASES[ty] + (16 if divisible else 17)
    if divisible or one:
        raise ValueError(f"{name}: only pointers and i32/i64 integers take divisible_by_16 / equal_to_1")
    if ty == "fp32":
        return 1.5
    if ty == "i1":
        return True
    raise ValueError(f"{name}: unsupported argument type {ty!r}")


def bind_like_jit(spec: AotSpec, target: GPUTarget) -> tuple[dict, dict, dict, Any]:
    """(signature, constexprs, attrs, options) exactly as `kernel[grid](...)` would build them on a GPU, from
    Triton's own argument binder fed with fake arguments that carry the spec's alignment and unit values."""
    fn = spec.fn
    if not isinstance(fn, triton.runtime.JITFunction):
        raise TypeError(f"spec.fn is a {type(fn).__name__}, not a JITFunction (is TRITON_INTERPRET=1 set here?)")
    hinted = set(spec.divisible_by_16) | set(spec.equal_to_1)
    for unknown in sorted((hinted - set(spec.signature)) | (set(spec.signature) - set(fn.arg_names))):
        raise ValueError(f"{unknown!r} is not a non-constexpr argument of {fn.__name__}")
    args = {
        name: _fake_argument(name, ty, name in spec.divisible_by_16, name in spec.equal_to_1)
        for name, ty in spec.signature.items()
    }
    # The launch options JITFunction.run passes, so the compile options match a real launch's.
    launch = {
        "num_warps": spec.num_warps,
        "num_stages": spec.num_stages,
        "debug": bool(fn.debug or triton.knobs.runtime.debug),
        "instrumentation_mode": triton.knobs.compilation.instrumentation_mode,
        "fpsan_homomorphic_casts": triton.knobs.compilation.fpsan_homomorphic_casts,
    }
    if spec.maxnreg is not None:
        launch["maxnreg"] = spec.maxnreg
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(**args, **spec.constexprs, **launch)
    options, signature, constexprs, attrs = fn._pack_args(backend, launch, bound, specialization, options)
    for name, ty in spec.signature.items():
        expected = "constexpr" if name in spec.equal_to_1 else ty
        if signature[name] != expected:
            raise ValueError(f"{name}: the spec says {expected} but the JIT would type it {signature[name]}")
    return signature, constexprs, attrs, options


def specialised(fn: Any, signature: dict, attrs: dict, spec: AotSpec) -> dict[str, list[str]]:
    names = fn.arg_names
    return {
        "divisible_by_16": [
            names[key[0]] for key, hints in attrs.items() if len(key) == 1 and ["tt.divisibility", 16] in hints
        ],
        "equal_to_1": [n for n in spec.signature if signature[n] == "constexpr"],
    }
