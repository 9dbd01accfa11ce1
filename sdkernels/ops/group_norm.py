"""`sdkernels.ops.group_norm_silu`: SiLU(GroupNorm(x + add)) as the custom op `torch.ops.sdkernels.group_norm_silu`."""

from __future__ import annotations

import torch

from sdkernels import reference
from sdkernels.kernels import group_norm as kernels
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


def _check_group_norm(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, add: Tensor | None
) -> None:
    op = "group_norm_silu"
    check_float_tensors(op, x=x, weight=weight, bias=bias, add=add)
    check(x.dim() >= 2, op, lambda: f"x must be (N, C, *spatial), got shape {tuple(x.shape)}")
    channels = x.shape[1]
    check(
        num_groups > 0 and channels % num_groups == 0,
        op,
        lambda: f"num_groups={num_groups} must divide the {channels} channels of x",
    )
    for name, p in (("weight", weight), ("bias", bias)):
        check(
            p is None or tuple(p.shape) == (channels,),
            op,
            lambda name=name, p=p: f"{name} must have shape ({channels},), got {None if p is None else tuple(p.shape)}",
        )
    check(
        add is None or tuple(add.shape) == (x.shape[0], channels),
        op,
        lambda: (
            f"add must have shape (N, C) = {(x.shape[0], channels)}, got {None if add is None else tuple(add.shape)}"
        ),
    )
    check_same_device(op, x=x, weight=weight, bias=bias, add=add)


def _group_norm_silu_impl(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, silu: bool, add: Tensor | None
) -> Tensor:
    if kernel_ok("group_norm_silu", x.device, x.dtype):
        return kernels.group_norm_silu(x, num_groups, weight, bias, eps, silu, add)
    return reference.group_norm_silu(x, num_groups, weight, bias, eps, silu, add)


# Checked eager calls by signature: a repeat skips the checks and plans (sdkernels/kernels/_direct.py).
_direct_calls: dict[tuple, kernels.GroupNormCall] = signature_cache()


def _signature(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, silu: bool, add: Tensor | None
) -> tuple:
    return (x.shape, x.stride(), x.dtype, x.device, num_groups, eps, silu, kernels.policy(),
            None if weight is None else (weight.shape, weight.stride(), weight.dtype, weight.device),
            None if bias is None else (bias.shape, bias.stride(), bias.dtype, bias.device),
            None if add is None else (add.shape, add.stride(), add.dtype, add.device))  # fmt: skip


@torch.library.custom_op("sdkernels::group_norm_silu", mutates_args=())
def _group_norm_silu(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, silu: bool, add: Tensor | None
) -> Tensor:
    return _group_norm_silu_impl(x, num_groups, weight, bias, eps, silu, add)


@_group_norm_silu.register_fake
def _(x, num_groups, weight, bias, eps, silu, add):
    return torch.empty_like(x)


def group_norm_silu(
    x: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    *,
    silu: bool = True,
    add: Tensor | None = None,
) -> Tensor:
    """SiLU(GroupNorm(x + add[:, :, None, None])) in one pass, statistics in fp32.

    x: (N, C, *spatial) fp32/fp16/bf16, contiguous or channels_last (read in place); output has x's dtype and
    memory format. weight/bias: (C,) or None. add: (N, C) or None, added before the statistics (ResnetBlock2D's
    temb). `silu=False` gives plain GroupNorm.
    """
    call = remembered(_direct_calls, _signature, x, num_groups, weight, bias, eps, silu, add)
    if call is not None and run_directly(x, weight, bias, add):
        return call(x, weight, bias, add)
    _check_group_norm(x, num_groups, weight, bias, add)
    if run_directly(x, weight, bias, add):  # eager inference: skip the dispatcher, same implementation
        call = None
        if type(num_groups) is int:
            make = lambda: kernels.group_norm_call(x, num_groups, weight, bias, float(eps), bool(silu), add)  # noqa: E731
            call = remember(_direct_calls, _signature, (x, num_groups, weight, bias, eps, silu, add), make)
        if call is not None:
            return call(x, weight, bias, add)
        return _group_norm_silu_impl(x, num_groups, weight, bias, float(eps), bool(silu), add)
    return torch.ops.sdkernels.group_norm_silu(x, num_groups, weight, bias, float(eps), bool(silu), add)


register_reference_backward(_group_norm_silu, reference.group_norm_silu, (0, 2, 3, 6))
