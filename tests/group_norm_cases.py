"""Shared by the GroupNorm(+add)(+SiLU) kernel tests: SD-like inputs, PyTorch's result in the test dtype and in fp64,
and the comparison under the project's rule (tests/tolerance.py): our error may be at most twice PyTorch's own
same-dtype error plus a tiny floor."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sdkernels import ops
from tests.tolerance import assert_matches_reference

Tensor = torch.Tensor


def channels_last(x: Tensor) -> Tensor:
    """Channels-innermost copy for any number of spatial dims (channels_last / channels_last_3d for 4-D / 5-D)."""
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


def torch_group_norm(
    x: Tensor,
    groups: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    silu: bool,
    add: Tensor | None,
    dtype: torch.dtype,
) -> Tensor:
    """PyTorch's F.silu(F.group_norm(x + add)) computed entirely in `dtype`."""
    h = x.to(dtype)
    if add is not None:
        h = h + add.to(dtype).reshape(*add.shape, *([1] * (x.dim() - 2)))
    cast = (lambda p: None if p is None else p.to(dtype)) if dtype == torch.float64 else (lambda p: p)
    y = F.group_norm(h, groups, cast(weight), cast(bias), eps)
    return F.silu(y) if silu else y


def run_and_check(
    x: Tensor,
    groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    add: Tensor | None = None,
    eps: float = 1e-5,
    silu: bool = True,
    via_torch_ops: bool = False,
    what: str = "",
) -> Tensor:
    if via_torch_ops:
        out = torch.ops.sdkernels.group_norm_silu(x, groups, weight, bias, eps, silu, add)
    else:
        out = ops.group_norm_silu(x, groups, weight, bias, eps, silu=silu, add=add)
    assert out.dtype == x.dtype and out.shape == x.shape, what
    assert out.stride() == torch.empty_like(x).stride(), f"{what}: output strides {out.stride()} lost x's layout"
    same = torch_group_norm(x, groups, weight, bias, eps, silu, add, x.dtype)
    ref = torch_group_norm(x, groups, weight, bias, eps, silu, add, torch.float64)
    assert_matches_reference(out, same, ref, what=what)
    return out


def sd_inputs(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    *,
    nhwc: bool = False,
    with_add: bool = True,
    offset: float = 0.0,
    std: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """x ~ offset + std * N(0, 1) in `dtype`; weight ~ 1 + N(0, 0.1²) and bias ~ N(0, 0.1²) in `dtype` like a
    trained GroupNorm; add ~ N(0, 1) of shape (N, C) like ResnetBlock2D's projected temb."""
    batch, channels = shape[:2]
    x = (offset + std * torch.randn(shape)).to(dtype)
    weight = (1 + 0.1 * torch.randn(channels)).to(dtype)
    bias = (0.1 * torch.randn(channels)).to(dtype)
    add = torch.randn(batch, channels).to(dtype) if with_add else None
    return channels_last(x) if nhwc else x, weight, bias, add


DTYPES = (torch.float32, torch.float16, torch.bfloat16)
