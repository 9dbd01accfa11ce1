"""Fixes for Triton-interpreter bugs that would otherwise give wrong bf16 answers on CPU.

Applied by the test set-up (tests/conftest.py) and the demo; until then the runtime sends bf16 on the interpreter to
the PyTorch reference (sdkernels/_dispatch.py). Without them the interpreter
multiplies raw bf16 bit patterns in `tl.dot` (results ~1e10) and truncates fp32 -> bf16 casts instead of rounding
to nearest even. Neither affects real GPUs, where this module is never applied.

Version tolerance (triton 3.6 .. 3.9): every fix looks up the interpreter internal it wraps and leaves that part out
when a release does not have it; `applied_fixes()` lists what was applied.
"""

from __future__ import annotations

import numpy as np

from sdkernels._dispatch import mark_interpreter_bf16_fixed

_applied = False
_applied_fixes: list[str] = []


def applied_fixes() -> list[str]:
    """Names of the interpreter fixes applied in this process (for reports)."""
    return list(_applied_fixes)


def _bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _f32_to_bf16_bits_rtne(values: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    is_nan = np.isnan(values)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return np.where(is_nan, np.uint32(0x7FC0), rounded).astype(np.uint16)


def apply_interpreter_fixes() -> None:
    """Patch triton.runtime.interpreter in place (idempotent)."""
    global _applied
    if _applied:
        return
    import triton.language as tl
    from triton.runtime import interpreter as interp

    builder = interp.InterpreterBuilder
    original_dot = builder.create_dot
    original_cast = builder.cast_impl

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.dtype.scalar == tl.bfloat16 or b.dtype.scalar == tl.bfloat16:
            a_data = _bf16_bits_to_f32(a.data) if a.dtype.scalar == tl.bfloat16 else a.data.astype(np.float32)
            b_data = _bf16_bits_to_f32(b.data) if b.dtype.scalar == tl.bfloat16 else b.data.astype(np.float32)
            out = np.matmul(a_data, b_data, dtype=np.float32).astype(d.data.dtype) + d.data
            return interp.TensorHandle(out, d.dtype.scalar)
        return original_dot(self, a, b, d, input_precision, max_num_imprecise_acc)

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            return interp.TensorHandle(_f32_to_bf16_bits_rtne(src.data), tl.bfloat16)
        if src.dtype.scalar == tl.float16 and dst_type.scalar == tl.bfloat16:
            return interp.TensorHandle(_f32_to_bf16_bits_rtne(src.data.astype(np.float32)), tl.bfloat16)
        return original_cast(self, src, dst_type)

    builder.create_dot = create_dot
    builder.cast_impl = cast_impl
    _applied_fixes.append("bf16 dot/cast")
    if _index_any_scalar_shape(interp):
        _applied_fixes.append("scalar __index__ (triton < 3.7 with numpy >= 2.4)")
    if _skip_repeated_lang_patching(interp):
        _applied_fixes.append("lang patched once per grid")
    _applied = True
    mark_interpreter_bf16_fixed()


def _index_any_scalar_shape(interp) -> bool:
    """Triton 3.6's interpreter turns a scalar into a Python int with `int(data)`, but keeps scalars as 1-element
    1-d arrays, which numpy >= 2.4 refuses to convert; so `range(start, runtime_end, BLOCK)` inside a kernel fails.
    Triton 3.7+ squeezes first; do the same on releases that do not."""
    original = getattr(interp, "_patch_lang_tensor", None)
    if original is None or "squeeze" in _source(original):
        return False

    def index(self) -> int:
        return int(np.asarray(self.handle.data).squeeze())

    def patch_lang_tensor(tensor, *args, **kwargs):
        result = original(tensor, *args, **kwargs)
        scope = args[0] if args else kwargs.get("scope")
        if hasattr(scope, "set_attr"):
            scope.set_attr(tensor, "__index__", index)  # restored with the rest when the scope ends
        else:
            tensor.__index__ = index
        return result

    interp._patch_lang_tensor = patch_lang_tensor
    return True


def _source(fn) -> str:
    import inspect

    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return ""


def _skip_repeated_lang_patching(interp) -> bool:
    """Every call of a jit helper inside a kernel (tl.sum, tl.sigmoid, tl.cdiv, ...) re-runs the interpreter's
    `_patch_lang`, ~5-7 ms each, although the language modules are already patched for the running grid. Patch each
    module once per grid run instead; behaviour is unchanged, the interpreter just stops redoing identical work."""
    import inspect

    import triton.language as tl

    original_patch_lang = getattr(interp, "_patch_lang", None)
    executor = getattr(interp, "GridExecutor", None)
    if original_patch_lang is None or executor is None:
        return False  # an interpreter without these internals: run unoptimised rather than break
    original_grid_call = executor.__call__
    patched_in_run: set[int] = set()
    depth = [0]

    class _NoRestore:
        def restore(self) -> None:
            pass

    def lang_ids(fn) -> set[int]:
        return {id(v) for v in fn.__globals__.values() if inspect.ismodule(v) and v in (tl, tl.core)}

    def patch_lang(fn):
        ids = lang_ids(fn)
        if depth[0] > 0 and ids <= patched_in_run:
            return _NoRestore()
        scope = original_patch_lang(fn)
        if depth[0] > 0:
            patched_in_run.update(ids)
        return scope

    def grid_call(self, *args, **kwargs):
        depth[0] += 1
        patched_in_run.clear()
        try:
            return original_grid_call(self, *args, **kwargs)
        finally:
            depth[0] -= 1
            patched_in_run.clear()

    interp._patch_lang = patch_lang
    executor.__call__ = grid_call
    return True
