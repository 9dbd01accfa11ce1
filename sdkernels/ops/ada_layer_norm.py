"""`sdkernels.ops.ada_layer_norm`: LayerNorm(x) · (1 + scale) + shift per token in one pass (the AdaLayerNorm-Zero
modulation of SD3 / SD3.5), as the custom op `torch.ops.sdkernels.ada_layer_norm`."""

from __future__ import annotations

import torch

from sdkernels import reference
from sdkernels._dispatch import note_fallback
from sdkernels.kernels import ada_layer_norm as kernels
from sdkernels.kernels._launch import signature_cache
from sdkernels.ops._common import (
    Tensor,
    check,
    check_float_tensors,
    check_same_device,
    kernel_ok,
    register_reference_backward,
    remember,
    remembered,
    run_directly,
)


def _check(x: Tensor, scale: Tensor, shift: Tensor, eps: float) -> None:
    op = "ada_layer_norm"
    check_float_tensors(op, x=x, scale=scale, shift=shift)
    check(x.dim() == 3, op, lambda: f"x must be a float (B, L, dim) tensor, got {tuple(x.shape)}")
    want = (x.shape[0], x.shape[2])
    for name, t in (("scale", scale), ("shift", shift)):
        check(
            t.dim() == 2 and tuple(t.shape) == want,
            op,
            lambda name=name, t=t: f"{name} must be (B, dim) = {want}, got {tuple(t.shape)}",
        )
        check(t.dtype == x.dtype, op, lambda name=name, t=t: f"{name} dtype {t.dtype} differs from x's {x.dtype}")
    check(eps >= 0, op, lambda: f"eps must be >= 0, got {eps}")
    check_same_device(op, x=x, scale=scale, shift=shift)


def _ada_layer_norm_impl(x: Tensor, scale: Tensor, shift: Tensor, eps: float) -> Tensor:
    if kernel_ok("ada_layer_norm", x.device, x.dtype):
        if x.shape[-1] <= kernels.MAX_DIM:
            # the kernel reads scale/shift rows with unit column stride (chunks of the emb Linear's output are)
            scale = scale if scale.stride(-1) == 1 else scale.contiguous()
            shift = shift if shift.stride(-1) == 1 else shift.contiguous()
            return kernels.ada_layer_norm(x, scale, shift, eps)
        note_fallback("ada_layer_norm", f"dim {x.shape[-1]} > {kernels.MAX_DIM} (one row per program in registers)")
    return reference.ada_layer_norm(x, scale, shift, eps)


# Checked eager calls by signature: a repeat skips the checks and plans (sdkernels/kernels/_direct.py).
_direct_calls: dict[tuple, kernels.AdaLayerNormCall] = signature_cache()


def _signature(x: Tensor, scale: Tensor, shift: Tensor, eps: float) -> tuple:
    return (x.shape, x.stride(), scale.shape, scale.stride(), shift.shape, shift.stride(), x.dtype, scale.dtype,
            shift.dtype, x.device, scale.device, shift.device, eps)  # fmt: skip


@torch.library.custom_op("sdkernels::ada_layer_norm", mutates_args=())
def _ada_layer_norm(x: Tensor, scale: Tensor, shift: Tensor, eps: float) -> Tensor:
    return _ada_layer_norm_impl(x, scale, shift, eps)


@_ada_layer_norm.register_fake
def _(x, scale, shift, eps):
    return x.new_empty(x.shape)


def ada_layer_norm(x: Tensor, scale: Tensor, shift: Tensor, eps: float = 1e-6) -> Tensor:
    """LayerNorm(x, no affine, eps) · (1 + scale[:, None]) + shift[:, None] for x (B, L, dim) and scale, shift
    (B, dim): statistics and modulation in fp32, rounded once to x's dtype. Returns a contiguous (B, L, dim)."""
    call = remembered(_direct_calls, _signature, x, scale, shift, eps)
    if call is not None and run_directly(x, scale, shift):
        return call(x, scale, shift)
    _check(x, scale, shift, eps)
    if run_directly(x, scale, shift):  # eager inference: skip the dispatcher, same implementation
        call = None
        if x.shape[-1] <= kernels.MAX_DIM and scale.stride(-1) == 1 == shift.stride(-1):  # else: a copy or reference
            make = lambda: kernels.ada_layer_norm_call(x, scale, shift, float(eps))  # noqa: E731
            call = remember(_direct_calls, _signature, (x, scale, shift, eps), make)
        return _ada_layer_norm_impl(x, scale, shift, float(eps)) if call is None else call(x, scale, shift)
    return torch.ops.sdkernels.ada_layer_norm(x, scale, shift, float(eps))


register_reference_backward(_ada_layer_norm, reference.ada_layer_norm, (0, 1, 2))
