"""`sdkernels.ops.attention`: flash attention accumulating in fp32, as the custom op `torch.ops.sdkernels.attention`."""

from __future__ import annotations

import math

import torch

from sdkernels import reference
from sdkernels._dispatch import note_fallback
from sdkernels.kernels import attention as kernels
from sdkernels.kernels._launch import signature_cache
from sdkernels.ops._common import (
    MAX_HEAD_DIM,
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


def attention_kernel_problem(q: Tensor, attn_bias: Tensor | None) -> str | None:
    head_dim = q.shape[-1]
    if head_dim % 8 != 0 or head_dim > MAX_HEAD_DIM:
        return f"head_dim {head_dim} is not a multiple of 8 up to {MAX_HEAD_DIM}"
    return None


def _check_attention(q: Tensor, k: Tensor, v: Tensor, attn_bias: Tensor | None) -> None:
    op = "attention"
    check_float_tensors(op, q=q, k=k, v=v, attn_bias=attn_bias)
    for name, t in (("q", q), ("k", k), ("v", v)):
        check(t.dim() == 4, op, lambda name=name, t=t: f"{name} must be (B, H, L, D), got shape {tuple(t.shape)}")
    check(q.dtype == k.dtype == v.dtype, op, lambda: f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    check(
        q.shape[:2] == k.shape[:2] == v.shape[:2],
        op,
        lambda: f"batch and heads must match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}",
    )
    check(k.shape[2] == v.shape[2], op, lambda: f"k and v lengths differ: {k.shape[2]} vs {v.shape[2]}")
    check(
        q.shape[3] == k.shape[3] == v.shape[3],
        op,
        lambda: f"head dims differ: q {q.shape[3]}, k {k.shape[3]}, v {v.shape[3]}",
    )
    check(q.shape[3] > 0, op, "head dim must be at least 1 (the default scale is 1/sqrt(D)), got D = 0")
    check(k.shape[2] > 0, op, "k and v must have at least one key")
    if attn_bias is not None:
        target = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        # Broadcastable to target without growing it: each trailing dim is 1 or equal (plain ints, no tensors).
        shape = tuple(attn_bias.shape)
        ok = len(shape) <= 4 and all(b in (1, t) for b, t in zip(reversed(shape), reversed(target), strict=False))
        check(
            ok,
            op,
            lambda: f"attn_bias of shape {tuple(attn_bias.shape)} does not broadcast to (B, H, Lq, Lk) = {target}",
        )
    check_same_device(op, q=q, k=k, v=v, attn_bias=attn_bias)


def _attention_impl(q: Tensor, k: Tensor, v: Tensor, scale: float, attn_bias: Tensor | None) -> Tensor:
    if kernel_ok("attention", q.device, q.dtype):
        problem = attention_kernel_problem(q, attn_bias)
        if problem is None:
            return kernels.attention(q, k, v, scale, attn_bias)
        note_fallback("attention", problem)
    return reference.attention(q, k, v, scale, attn_bias)


# Checked eager calls without a bias, by signature: a repeat skips the checks and plans (sdkernels/kernels/_direct.py).
_direct_calls: dict[tuple, kernels.AttentionCall] = signature_cache()


def _signature(q: Tensor, k: Tensor, v: Tensor, scale: float | None) -> tuple:
    return (q.shape, q.stride(), k.shape, k.stride(), v.shape, v.stride(), q.dtype, k.dtype, v.dtype, q.device,
            k.device, v.device, scale)  # fmt: skip


@torch.library.custom_op("sdkernels::attention", mutates_args=())
def _attention(q: Tensor, k: Tensor, v: Tensor, scale: float, attn_bias: Tensor | None) -> Tensor:
    return _attention_impl(q, k, v, scale, attn_bias)


@_attention.register_fake
def _(q, k, v, scale, attn_bias):
    batch, heads, lq, _ = q.shape
    return q.new_empty(batch, lq, heads, v.shape[-1]).transpose(1, 2)


def attention(
    q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None, attn_bias: Tensor | None = None
) -> Tensor:
    """softmax(q kᵀ · scale + attn_bias) v, accumulated in fp32, without materialising the Lq×Lk matrix.

    q: (B, H, Lq, D); k, v: (B, H, Lk, D); any strides with a unit last stride are read in place. scale defaults
    to 1/sqrt(D). attn_bias: additive float bias broadcastable to (B, H, Lq, Lk). Returns (B, H, Lq, D) in q's
    dtype, laid out as (B, Lq, H, D) so `out.transpose(1, 2).reshape(B, Lq, H * D)` is free.
    """
    if attn_bias is None:
        call = remembered(_direct_calls, _signature, q, k, v, scale)
        if call is not None and run_directly(q, k, v):
            return call(q, k, v, None)
    _check_attention(q, k, v, attn_bias)
    given_scale, scale = scale, 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if attn_bias is not None and attn_bias.dim() < 4:
        attn_bias = attn_bias.reshape((1,) * (4 - attn_bias.dim()) + tuple(attn_bias.shape))
    if run_directly(q, k, v, attn_bias):  # eager inference: skip the dispatcher, same implementation
        call = None
        if attn_bias is None and attention_kernel_problem(q, None) is None:
            make = lambda: kernels.attention_call(q, k, v, scale, None)  # noqa: E731
            call = remember(_direct_calls, _signature, (q, k, v, given_scale), make)
        return _attention_impl(q, k, v, scale, attn_bias) if call is None else call(q, k, v, None)
    return torch.ops.sdkernels.attention(q, k, v, scale, attn_bias)


register_reference_backward(_attention, reference.attention, (0, 1, 2, 4))
