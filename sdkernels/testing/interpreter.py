"""Fixes for Triton-interpreter bugs that would otherwise give wrong bf16 answers on CPU.

Applied by the test set-up (tests/conftest.py) and the demo; until then the runtime sends bf16 on the interpreter to
the PyTorch reference (sdkernels/_dispatch.py). Without them the interpreter
multiplies raw bf16 bit patterns in `tl.dot` (results ~1e10) and truncates fp32 -> bf16 casts instead of rounding
to nearest even. Neither affects real GPUs, where this module is never applied.
"""

from __future__ import annotations

import numpy as np

from sdkernels._dispatch import mark_interpreter_bf16_fixed

_applied = False


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
    _skip_repeated_lang_patching(interp)
    _applied = True
    mark_interpreter_bf16_fixed()


def _skip_repeated_lang_patching(interp) -> None:
    """Every call of a jit helper inside a kernel (tl.sum, tl.sigmoid, tl.cdiv, ...) re-runs the interpreter's
    `_patch_lang`, ~5-7 ms each, although the language modules are already patched for the running grid. Patch each
    module once per grid run instead; behaviour is unchanged, the interpreter just stops redoing identical work."""
    import inspect

    import triton.language as tl

    original_patch_lang = interp._patch_lang
    original_grid_call = interp.GridExecutor.__call__
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
    interp.GridExecutor.__call__ = grid_call
