"""`sdkernels.ops.geglu` (one GEMM with the gated-GELU epilogue) and `sdkernels.ops.gelu_gate` (the gate alone, for
wrapped projections), as custom ops `torch.ops.sdkernels.geglu` / `gelu_gate`."""

from __future__ import annotations

import torch

from sdkernels import reference
from sdkernels.kernels import geglu as geglu_kernels
from sdkernels.kernels import gelu_gate as gate_kernels
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


def _check_geglu(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    op = "geglu"
    check_float_tensors(op, x=x, weight=weight, bias=bias)
    check(x.dim() >= 1, op, lambda: f"x must be (..., dim), got shape {tuple(x.shape)}")
    check(weight.dim() == 2, op, lambda: f"weight must be (2*inner, dim), got shape {tuple(weight.shape)}")
    check(
        weight.shape[1] == x.shape[-1],
        op,
        lambda: f"weight has in_features {weight.shape[1]} but x has dim {x.shape[-1]}",
    )
    check(
        weight.shape[0] % 2 == 0 and weight.shape[0] > 0,
        op,
        lambda: f"weight rows ({weight.shape[0]}) must be 2*inner (value rows, then gate rows)",
    )
    check(
        bias is None or tuple(bias.shape) == (weight.shape[0],),
        op,
        lambda: f"bias must have shape ({weight.shape[0]},), got {None if bias is None else tuple(bias.shape)}",
    )
    for name, t in (("weight", weight), ("bias", bias)):
        check(
            t is None or t.dtype == x.dtype,
            op,
            lambda name=name, t=t: (
                f"{name} is {None if t is None else t.dtype} but x is {x.dtype}: x, weight and bias must share a dtype"
            ),
        )
    check_same_device(op, x=x, weight=weight, bias=bias)


def _geglu_impl(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    if kernel_ok("geglu", x.device, x.dtype):
        return geglu_kernels.geglu(x, weight, bias)
    return reference.geglu(x, weight, bias)


# Checked eager calls by signature: a repeat skips the checks and plans (sdkernels/kernels/_direct.py).
_direct_geglu: dict[tuple, RowsGemmCall] = signature_cache()
_direct_gelu_gate: dict[tuple, gate_kernels.GeluGateCall] = signature_cache()


def _gate_signature(h: Tensor) -> tuple:
    return (h.shape, h.stride(), h.dtype, h.device)


def _geglu_signature(x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple:
    bias_signature = None if bias is None else (bias.shape, bias.stride(), bias.dtype, bias.device)
    return (x.shape, x.stride(), weight.shape, weight.stride(), x.dtype, weight.dtype, x.device, weight.device,
            bias_signature)  # fmt: skip


@torch.library.custom_op("sdkernels::geglu", mutates_args=())
def _geglu(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return _geglu_impl(x, weight, bias)


@_geglu.register_fake
def _(x, weight, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0] // 2)


def geglu(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """(x Wvᵀ + bv) · gelu(x Wgᵀ + bg) in one GEMM with the gate in its epilogue (exact erf GELU).

    weight is (2*inner, dim) as diffusers' `GEGLU.proj` stores it: rows [0, inner) are the value, rows
    [inner, 2*inner) the gate. x is (..., dim); returns (..., inner) in x's dtype.
    """
    call = remembered(_direct_geglu, _geglu_signature, x, weight, bias)
    if call is not None and run_directly(x, weight, bias):
        return call(x, weight, bias)
    _check_geglu(x, weight, bias)
    if run_directly(x, weight, bias):  # eager inference: skip the dispatcher, same implementation
        make = lambda: geglu_kernels.geglu_call(x, weight, bias)  # noqa: E731
        call = remember(_direct_geglu, _geglu_signature, (x, weight, bias), make)
        return _geglu_impl(x, weight, bias) if call is None else call(x, weight, bias)
    return torch.ops.sdkernels.geglu(x, weight, bias)


def _gelu_gate_impl(h: Tensor) -> Tensor:
    if kernel_ok("gelu_gate", h.device, h.dtype):
        return gate_kernels.gelu_gate(h)
    return reference.gelu_gate(h)


@torch.library.custom_op("sdkernels::gelu_gate", mutates_args=())
def _gelu_gate(h: Tensor) -> Tensor:
    return _gelu_gate_impl(h)


@_gelu_gate.register_fake
def _(h):
    return h.new_empty(*h.shape[:-1], h.shape[-1] // 2)


def gelu_gate(h: Tensor) -> Tensor:
    """value · gelu(gate) for h = cat([value, gate], -1) of shape (..., 2*inner): one elementwise pass."""
    call = remembered(_direct_gelu_gate, _gate_signature, h)
    if call is not None and run_directly(h):
        return call(h)
    check_float_tensors("gelu_gate", h=h)
    check(h.dim() >= 1, "gelu_gate", lambda: f"h must be (..., 2*inner), got shape {tuple(h.shape)}")
    check(h.shape[-1] % 2 == 0, "gelu_gate", lambda: f"last dim of h ({h.shape[-1]}) must be even (value, gate)")
    if run_directly(h):
        call = remember(_direct_gelu_gate, _gate_signature, (h,), lambda: gate_kernels.gelu_gate_call(h))
        return _gelu_gate_impl(h) if call is None else call(h)
    return torch.ops.sdkernels.gelu_gate(h)


register_reference_backward(_geglu, reference.geglu, (0, 1, 2))
register_reference_backward(_gelu_gate, reference.gelu_gate, (0,))
