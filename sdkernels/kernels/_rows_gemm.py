"""The host side shared by the GEMM-with-epilogue kernels (fused GEGLU, linear + GELU): x (..., K) read as (M, K)
rows in place, weight (rows, K) as nn.Linear stores it, bias or None, output (..., N) contiguous. Both kernels take
the runtime arguments (x, w, b, out, M, N, K, stride_xm, stride_wn, stride_wk, stride_om) and a 1-D grid of
(BLOCK_M, BLOCK_N) output tiles."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sdkernels.kernels._direct import LaunchSite, cached, contiguous_strides, empty_output
from sdkernels.kernels._tuning import Plan
from sdkernels.kernels.gelu_gate import rows_view

Tensor = torch.Tensor
# (x, tokens, N) -> the plan of this kernel for the call (cached by the caller per arch/dtype/options)
PlanFor = Callable[[Tensor, int, int], Plan]


class RowsGemmCall:
    """Everything about a call that follows from its signature: output layout, plan, grid and integer arguments.
    Made for an x whose leading dims flatten into one row stride and a unit-stride bias (or none)."""

    __slots__ = ("out_shape", "out_strides", "ints", "site")

    def __init__(self, x: Tensor, weight: Tensor, bias: Tensor | None, n_out: int, x_row_stride: int, plan: Plan):
        tokens, dim = math.prod(x.shape[:-1]), x.shape[-1]
        self.out_shape = (*x.shape[:-1], n_out)
        self.out_strides = contiguous_strides(self.out_shape)
        self.ints = (tokens, n_out, dim, x_row_stride, weight.stride(0), weight.stride(1), n_out)
        block_m, block_n = plan.constexprs["BLOCK_M"], plan.constexprs["BLOCK_N"]
        grid = (-(-tokens // block_m) * -(-n_out // block_n),)

        def tuned_grid(meta: dict) -> tuple[int]:
            return (-(-tokens // meta["BLOCK_M"]) * -(-n_out // meta["BLOCK_N"]),)

        self.site = LaunchSite(plan, grid, (x, weight, weight if bias is None else bias, x, *self.ints), tuned_grid)

    def __call__(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        out = empty_output(self.out_shape, self.out_strides, x)
        self.site((x, weight, weight if bias is None else bias, out, *self.ints), x.device)
        return out


def rows_gemm_call(
    calls: dict, x: Tensor, weight: Tensor, bias: Tensor | None, n_out: int, plan_for: PlanFor, options: tuple = ()
) -> RowsGemmCall | None:
    """The call cached in `calls` for this signature (and the kernel's `options`), or None when x has no (rows, K)
    view with unit last stride, the bias is strided, or the output is empty."""
    key = (x.shape, x.stride(), weight.shape, weight.stride(), None if bias is None else bias.stride(), x.dtype)
    key += options
    return cached(calls, key, lambda: _make_call(x, weight, bias, n_out, plan_for))


def _make_call(x: Tensor, weight: Tensor, bias: Tensor | None, n_out: int, plan_for: PlanFor) -> RowsGemmCall | None:
    tokens = math.prod(x.shape[:-1])
    if tokens == 0 or n_out == 0 or (bias is not None and bias.stride(0) != 1):
        return None  # nothing to compute, or a bias to copy first
    if x.stride(-1) != 1 and x.shape[-1] > 1:
        return None
    try:
        row_stride = x.view(tokens, x.shape[-1]).stride(0)  # the leading dims merge into one row stride
    except RuntimeError:
        return None
    return RowsGemmCall(x, weight, bias, n_out, row_stride, plan_for(x, tokens, n_out))


def rows_gemm(
    op: str, calls: dict, x: Tensor, weight: Tensor, bias: Tensor | None, n_out: int, plan_for: PlanFor, options=()
) -> Tensor:
    """Run the kernel on any layout: the cached call, else a copy of x (counted as a slower path) or an empty out."""
    if bias is not None and bias.stride(0) != 1:
        bias = bias.contiguous()  # an (N,) vector: cheaper to copy than to carry a stride through the kernel
    call = rows_gemm_call(calls, x, weight, bias, n_out, plan_for, options)
    if call is not None:
        return call(x, weight, bias)
    out_shape = (*x.shape[:-1], n_out)
    if math.prod(out_shape) == 0:
        return empty_output(out_shape, contiguous_strides(out_shape), x)
    x2 = rows_view(x, op, "x")  # a copy (counted): x had no (rows, K) view
    call = rows_gemm_call(calls, x2, weight, bias, n_out, plan_for, options)
    return call(x2, weight, bias).view(out_shape)  # type: ignore[union-attr]
