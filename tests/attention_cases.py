"""Shared by the flash-attention op tests: random q, k, v and key-padding biases, both entry points
(sdkernels.ops.attention and torch.ops.sdkernels.attention), and the comparison with PyTorch SDPA in the same dtype
and in fp64 (tests/tolerance.py), with the output layout contract."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sdkernels import ops
from tests.tolerance import assert_matches_reference

FP16, BF16, FP32 = torch.float16, torch.bfloat16, torch.float32


def attend(q, k, v, *, scale=None, bias=None, via="ops"):
    if via == "ops":
        return ops.attention(q, k, v, scale=scale, attn_bias=bias)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return torch.ops.sdkernels.attention(q, k, v, scale, bias)


def sdpa_pair(q, k, v, scale=None, bias=None):
    """PyTorch's own result in the inputs' dtype (bias rounded to it, as SDPA requires) and the fp64 reference."""
    same = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype), scale=scale)
    ref = F.scaled_dot_product_attention(
        q.double(), k.double(), v.double(), scale=scale, attn_mask=None if bias is None else bias.double()
    )
    return same, ref


def assert_output_layout(out, q):
    batch, heads, lq, head_dim = q.shape
    assert out.shape == (batch, heads, lq, head_dim) and out.dtype == q.dtype
    assert out.stride() == (lq * heads * head_dim, head_dim, heads * head_dim, 1)  # (B, Lq, H, D) memory


def check(q, k, v, *, scale=None, bias=None, via="ops", what=""):
    out = attend(q, k, v, scale=scale, bias=bias, via=via)
    assert_output_layout(out, q)
    same, ref = sdpa_pair(q, k, v, scale, bias)
    assert_matches_reference(out, same, ref, what=what)
    return out


def qkv(batch, heads, lq, lk, head_dim, dtype, magnitude=1.0):
    return [(torch.randn(batch, heads, length, head_dim) * magnitude).to(dtype) for length in (lq, lk, lk)]


def key_padding_bias(batch, heads, lk, dtype, lq=1):
    """(B|1, H|1, 1, Lk) additive mask: random values, -10000 and -inf entries, key 0 always kept."""
    bias = torch.randn(batch, heads, lq, lk)
    bias[..., 1::3] = -10000.0
    bias[..., 2::5] = float("-inf")
    return bias.to(dtype)
