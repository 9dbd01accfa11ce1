"""PyTorch references for every sdkernels op.

They run when a kernel cannot (CPU without the interpreter, unsupported shapes) and they define what the kernels
must compute. Math is done in fp32, or fp64 for fp64 inputs, and rounded once to the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def group_norm_silu(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    silu: bool = True,
    add: torch.Tensor | None = None,
) -> torch.Tensor:
    """GroupNorm(x + add[:, :, None, ...]) followed by SiLU when `silu`. `add` is (N, C)."""
    cd = compute_dtype(x.dtype)
    h = x.to(cd)
    if add is not None:
        h = h + add.to(cd).reshape(x.shape[0], x.shape[1], *([1] * (x.dim() - 2)))
    y = F.group_norm(
        h, num_groups, None if weight is None else weight.to(cd), None if bias is None else bias.to(cd), eps
    )
    if silu:
        y = F.silu(y)
    out = torch.empty_like(x)
    out.copy_(y)
    return out


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None, attn_bias: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q kᵀ · scale + attn_bias) v for (B, H, L, D) tensors, returned in the (B, Lq, H, D)-strided layout
    the custom op uses, so `.transpose(1, 2)` of the result is contiguous."""
    cd = compute_dtype(q.dtype)
    bias = None if attn_bias is None else attn_bias.to(cd)
    o = F.scaled_dot_product_attention(q.to(cd), k.to(cd), v.to(cd), attn_mask=bias, scale=scale)
    batch, heads, lq, _ = q.shape
    out = torch.empty(batch, lq, heads, v.shape[-1], dtype=q.dtype, device=q.device).transpose(1, 2)
    out.copy_(o)
    return out


def gelu_gate(h: torch.Tensor) -> torch.Tensor:
    """value * gelu(gate) with value, gate = h.chunk(2, -1) and the exact erf GELU (diffusers' GEGLU)."""
    cd = compute_dtype(h.dtype)
    value, gate = h.to(cd).chunk(2, dim=-1)
    return (value * F.gelu(gate)).to(h.dtype)


def geglu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """gelu_gate(x Wᵀ + b): diffusers' GEGLU with `proj` = Linear(weight, bias)."""
    cd = compute_dtype(x.dtype)
    h = F.linear(x.to(cd), weight.to(cd), None if bias is None else bias.to(cd))
    value, gate = h.chunk(2, dim=-1)
    return (value * F.gelu(gate)).to(x.dtype)


def ada_layer_norm(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm(x) · (1 + scale[:, None]) + shift[:, None]: diffusers' AdaLayerNorm-Zero modulation (no affine)."""
    cd = compute_dtype(x.dtype)
    h = F.layer_norm(x.to(cd), (x.shape[-1],), eps=eps)
    return (h * (1 + scale.to(cd)[:, None]) + shift.to(cd)[:, None]).to(x.dtype)


def linear_gelu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, approximate: str = "tanh"
) -> torch.Tensor:
    """gelu(x Wᵀ + b): diffusers' GELU module (tanh form for SD3's feed-forward)."""
    cd = compute_dtype(x.dtype)
    h = F.linear(x.to(cd), weight.to(cd), None if bias is None else bias.to(cd))
    return F.gelu(h, approximate=approximate).to(x.dtype)
