"""`sdkernels.ops.linear_gelu`: gelu(x Wᵀ + b) as one GEMM with the GELU in its epilogue (diffusers' `GELU`
module: SD3's feed-forward), as the custom op `torch.ops.sdkernels.linear_gelu`."""

from __future__ import annotations

import torch

from sdkernels import reference
from sdkernels.ops._common import (
    Tensor,
    check,
    check_same_device,
    kernel_ok,
    register_reference_backward,
    run_directly,
)

APPROXIMATIONS = ("none", "tanh")


def _check(x: Tensor, weight: Tensor, bias: Tensor | None, approximate: str) -> None:
    op = "linear_gelu"
    check(x.dim() >= 1 and x.is_floating_point(), op, f"x must be a float tensor (..., dim), got {x.dtype}")
    check(weight.dim() == 2 and weight.shape[0] > 0, op, f"weight must be (out, dim), got {tuple(weight.shape)}")
    check(weight.shape[1] == x.shape[-1], op, f"weight has in_features {weight.shape[1]} but x has dim {x.shape[-1]}")
    check(
        bias is None or tuple(bias.shape) == (weight.shape[0],),
        op,
        f"bias must have shape ({weight.shape[0]},), got {None if bias is None else tuple(bias.shape)}",
    )
    check(
        weight.dtype == x.dtype and (bias is None or bias.dtype == x.dtype),
        op,
        f"x, weight and bias must share a dtype, got {x.dtype}, {weight.dtype}, {None if bias is None else bias.dtype}",
    )
    check(approximate in APPROXIMATIONS, op, f"approximate must be one of {APPROXIMATIONS}, got {approximate!r}")
    check_same_device(op, x=x, weight=weight, bias=bias)


def _linear_gelu_impl(x: Tensor, weight: Tensor, bias: Tensor | None, approximate: str) -> Tensor:
    if kernel_ok("linear_gelu", x.device, x.dtype):
        from sdkernels.kernels.linear_gelu import linear_gelu as kernel

        return kernel(x, weight, bias, approximate)
    return reference.linear_gelu(x, weight, bias, approximate)


@torch.library.custom_op("sdkernels::linear_gelu", mutates_args=())
def _linear_gelu(x: Tensor, weight: Tensor, bias: Tensor | None, approximate: str) -> Tensor:
    return _linear_gelu_impl(x, weight, bias, approximate)


@_linear_gelu.register_fake
def _(x, weight, bias, approximate):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def linear_gelu(x: Tensor, weight: Tensor, bias: Tensor | None = None, approximate: str = "tanh") -> Tensor:
    """F.gelu(F.linear(x, weight, bias), approximate=approximate) accumulated in fp32 and rounded once: x (..., dim),
    weight (out, dim) as nn.Linear stores it; returns (..., out) in x's dtype."""
    _check(x, weight, bias, approximate)
    if run_directly(x, weight, bias):  # eager inference: skip the dispatcher, same implementation
        return _linear_gelu_impl(x, weight, bias, approximate)
    return torch.ops.sdkernels.linear_gelu(x, weight, bias, approximate)


register_reference_backward(_linear_gelu, reference.linear_gelu, (0, 1, 2))
