"""`sdkernels.ops.linear_gelu`: gelu(x Wᵀ + b) as one GEMM with the GELU in its epilogue (diffusers' `GELU`
module: SD3's feed-forward), as the custom op `torch.ops.sdkernels.linear_gelu`."""

from __future__ import annotations

import torch

from sdkernels import reference
from sdkernels.kernels import linear_gelu as kernels
from sdkernels.kernels._launch import signature_cache
from sdkernels.kernels._rows_gemm import RowsGemmCall
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

APPROXIMATIONS = ("none", "tanh")


def _check(x: Tensor, weight: Tensor, bias: Tensor | None, approximate: str) -> None:
    op = "linear_gelu"
    check_float_tensors(op, x=x, weight=weight, bias=bias)
    check(x.dim() >= 1, op, "x must be a float tensor (..., dim), got a 0-d tensor")
    check(
        weight.dim() == 2 and weight.shape[0] > 0, op, lambda: f"weight must be (out, dim), got {tuple(weight.shape)}"
    )
    check(
        weight.shape[1] == x.shape[-1],
        op,
        lambda: f"weight has in_features {weight.shape[1]} but x has dim {x.shape[-1]}",
    )
    check(
        bias is None or tuple(bias.shape) == (weight.shape[0],),
        op,
        lambda: f"bias must have shape ({weight.shape[0]},), got {None if bias is None else tuple(bias.shape)}",
    )
    check(
        weight.dtype == x.dtype and (bias is None or bias.dtype == x.dtype),
        op,
        lambda: (
            f"x, weight and bias must share a dtype, got {x.dtype}, {weight.dtype}, "
            f"{None if bias is None else bias.dtype}"
        ),
    )
    check(
        approximate in APPROXIMATIONS, op, lambda: f"approximate must be one of {APPROXIMATIONS}, got {approximate!r}"
    )
    check_same_device(op, x=x, weight=weight, bias=bias)


def _linear_gelu_impl(x: Tensor, weight: Tensor, bias: Tensor | None, approximate: str) -> Tensor:
    if kernel_ok("linear_gelu", x.device, x.dtype):
        return kernels.linear_gelu(x, weight, bias, approximate)
    return reference.linear_gelu(x, weight, bias, approximate)


# Checked eager calls by signature: a repeat skips the checks and plans (sdkernels/kernels/_direct.py).
_direct_calls: dict[tuple, RowsGemmCall] = signature_cache()


def _signature(x: Tensor, weight: Tensor, bias: Tensor | None, approximate: str) -> tuple:
    bias_signature = None if bias is None else (bias.shape, bias.stride(), bias.dtype, bias.device)
    return (x.shape, x.stride(), weight.shape, weight.stride(), x.dtype, weight.dtype, x.device, weight.device,
            bias_signature, approximate)  # fmt: skip


@torch.library.custom_op("sdkernels::linear_gelu", mutates_args=())
def _linear_gelu(x: Tensor, weight: Tensor, bias: Tensor | None, approximate: str) -> Tensor:
    return _linear_gelu_impl(x, weight, bias, approximate)


@_linear_gelu.register_fake
def _(x, weight, bias, approximate):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def linear_gelu(x: Tensor, weight: Tensor, bias: Tensor | None = None, approximate: str = "tanh") -> Tensor:
    """F.gelu(F.linear(x, weight, bias), approximate=approximate) accumulated in fp32 and rounded once: x (..., dim),
    weight (out, dim) as nn.Linear stores it; returns (..., out) in x's dtype."""
    call = remembered(_direct_calls, _signature, x, weight, bias, approximate)
    if call is not None and run_directly(x, weight, bias):
        return call(x, weight, bias)
    _check(x, weight, bias, approximate)
    if run_directly(x, weight, bias):  # eager inference: skip the dispatcher, same implementation
        make = lambda: kernels.linear_gelu_call(x, weight, bias, approximate)  # noqa: E731
        call = remember(_direct_calls, _signature, (x, weight, bias, approximate), make)
        return _linear_gelu_impl(x, weight, bias, approximate) if call is None else call(x, weight, bias)
    return torch.ops.sdkernels.linear_gelu(x, weight, bias, approximate)


register_reference_backward(_linear_gelu, reference.linear_gelu, (0, 1, 2))
