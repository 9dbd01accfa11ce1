"""The experimental TMA + warp-specialised attention kernel (sdkernels/kernels/attention_tma.py), called directly:
the interpreter runs the same source the compile report measures for sm_90 (tensor-descriptor loads of Q/K/V,
`tl.range(..., warp_specialize=...)`), checked against fp64 on SD's (B, L, H·D) projection layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sdkernels.kernels.attention_tma import TMA_CONFIGS, attention_tma
from tests.tolerance import assert_matches_reference


def projection_views(batch: int, heads: int, length: int, head_dim: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, H, L, D) as diffusers makes it: a view + transpose of a (B, L, H·D) projection output."""
    return torch.randn(batch, length, heads * head_dim).to(dtype).view(batch, length, heads, head_dim).transpose(1, 2)


@pytest.mark.parametrize(
    ("head_dim", "dtype", "lq", "lk", "config_index"),
    [
        (64, torch.float16, 200, 256, 0),  # full 128-key tiles, a partial query block
        (64, torch.bfloat16, 130, 77, 1),  # SD's 77 text tokens: a ragged key tile read past Lk by TMA
        (128, torch.float16, 64, 200, 0),  # ragged 128-key tile, one query block shorter than BLOCK_M
        (128, torch.bfloat16, 129, 64, 2),
    ],
)
def test_matches_fp64(head_dim: int, dtype: torch.dtype, lq: int, lk: int, config_index: int) -> None:
    batch, heads = 2, 2
    q = projection_views(batch, heads, lq, head_dim, dtype)
    k, v = (projection_views(batch, heads, lk, head_dim, dtype) for _ in range(2))
    scale = head_dim**-0.5
    out = attention_tma(q, k, v, scale, TMA_CONFIGS[config_index])
    assert out.shape == q.shape and out.dtype == dtype
    assert out.stride() == (lq * heads * head_dim, head_dim, heads * head_dim, 1)  # the shipped kernel's layout
    same = F.scaled_dot_product_attention(q, k, v, scale=scale)
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=scale)
    assert_matches_reference(out, same, ref, what=f"tma d{head_dim} {dtype} lq{lq} lk{lk} cfg{config_index}")


def test_large_scores_stay_finite() -> None:
    """Scores near fp16's limit (|s·scale| ≈ 10⁴ after the fold) must not overflow the exp2 argument."""
    q, k, v = (projection_views(1, 2, 70, 64, torch.float16) * 30 for _ in range(3))
    out = attention_tma(q, k, v, 64**-0.5)
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=64**-0.5)
    same = F.scaled_dot_product_attention(q, k, v, scale=64**-0.5)
    assert_matches_reference(out, same, ref, what="tma large scores")


@pytest.mark.parametrize(
    ("head_dim", "dtype", "scale", "why"),
    [(80, torch.float16, 0.1, "D"), (64, torch.float32, 0.1, "dtype"), (64, torch.float16, -0.1, "scale")],
)
def test_rejects_what_it_does_not_cover(head_dim: int, dtype: torch.dtype, scale: float, why: str) -> None:
    q = projection_views(1, 1, 8, head_dim, dtype)
    with pytest.raises(ValueError, match="attention_tma"):
        attention_tma(q, q, q, scale)


def test_rejects_misaligned_rows() -> None:
    """TMA needs 16-byte aligned bases and row strides: an odd storage offset must be refused, not read wrong."""
    flat = torch.randn(1 + 2 * 8 * 64).half()[1:]
    q = flat.view(1, 8, 2, 64).transpose(1, 2)
    with pytest.raises(ValueError, match="16-byte"):
        attention_tma(q, q, q, 0.125)


def test_rejects_mismatched_keys() -> None:
    q = projection_views(1, 2, 8, 64, torch.float16)
    k = projection_views(1, 2, 8, 128, torch.float16)
    with pytest.raises(ValueError, match="k and v"):
        attention_tma(q, k, k, 0.125)
