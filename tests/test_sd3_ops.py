"""sdkernels.ops.ada_layer_norm (SD3's AdaLayerNorm-Zero modulation) and sdkernels.ops.linear_gelu (SD3's
feed-forward GEMM + tanh GELU) against fp64 references under the Triton interpreter. Rule (tests/tolerance.py): our
error vs fp64 <= 2 x the error of diffusers' own math in the same dtype, plus a tiny floor. Widths are SD3's
(1536: SD3 / 3.5 medium, 2432: 3.5 large, x4 feed-forward), token counts reduced for the interpreter."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sdkernels import ops
from tests.tolerance import assert_matches_reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


# --------------------------------------------------------------------------------------------- ada_layer_norm
def diffusers_modulation(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """AdaLayerNormZero's `self.norm(x) * (1 + scale_msa[:, None]) + shift_msa[:, None]` in x's dtype."""
    return F.layer_norm(x, (x.shape[-1],), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]


def emb_chunks(batch: int, dim: int, dtype: torch.dtype, parts: int = 6) -> tuple[torch.Tensor, ...]:
    """shift, scale, ... as AdaLayerNormZero makes them: chunks (row stride parts·dim) of one emb Linear output."""
    return (torch.randn(batch, parts * dim) * 0.5).to(dtype).chunk(parts, dim=1)


# (batch, tokens, dim): SD3.5 medium and large widths, an odd width (masked tail), one token
ADA_CASES = [(2, 37, 1536), (1, 9, 2432), (2, 5, 100), (1, 1, 64)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ADA_CASES, ids=str)
def test_ada_layer_norm_matches_fp64(dtype: torch.dtype, case: tuple[int, int, int]) -> None:
    batch, tokens, dim = case
    x = (torch.randn(batch, tokens, dim) * 3 + 1).to(dtype)
    shift, scale = emb_chunks(batch, dim, dtype)[:2]
    out = ops.ada_layer_norm(x, scale, shift, 1e-6)
    ref64 = diffusers_modulation(x.double(), scale.double(), shift.double())
    assert_matches_reference(out, diffusers_modulation(x, scale, shift), ref64, what=f"ada_layer_norm {case}")
    assert out.is_contiguous()


def test_ada_layer_norm_is_stable_on_a_large_mean() -> None:
    """Tokens with mean 3000 and std 0.01 (E[x²] - E[x]² would cancel to noise in fp32): the centred two-pass
    statistics keep fp32 within the rule."""
    x = 3000 + 0.01 * torch.randn(2, 16, 1536)
    shift, scale = emb_chunks(2, 1536, torch.float32)[:2]
    out = ops.ada_layer_norm(x, scale, shift, 1e-6)
    ref64 = diffusers_modulation(x.double(), scale.double(), shift.double())
    assert_matches_reference(out, diffusers_modulation(x, scale, shift), ref64, what="large mean")


def test_ada_layer_norm_rejects_bad_input() -> None:
    x = torch.randn(2, 4, 64)
    with pytest.raises(ValueError, match="scale must be"):
        ops.ada_layer_norm(x, torch.randn(64), torch.randn(2, 64))
    with pytest.raises(ValueError, match="dtype"):
        ops.ada_layer_norm(x, torch.randn(2, 64).half(), torch.randn(2, 64))
    with pytest.raises(ValueError, match=r"\(B, L, dim\)"):
        ops.ada_layer_norm(x[0], torch.randn(2, 64), torch.randn(2, 64))


# ------------------------------------------------------------------------------------------------ linear_gelu
def diffusers_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, approximate: str) -> torch.Tensor:
    """diffusers' GELU.forward math (proj, then F.gelu) in the inputs' dtype."""
    return F.gelu(F.linear(x, weight, bias), approximate=approximate)


# (leading dims of x, dim, out): SD3.5 medium 1536 -> 6144 and large 2432 -> 9728 (K real, N sliced for the
# interpreter), odd K and N (tails), 1-D x
GELU_CASES = {
    torch.float32: [((2, 5), 1536, 192), ((3,), 72, 100)],
    torch.float16: [((9,), 1536, 3072), ((2, 3), 40, 200)],
    torch.bfloat16: [((5,), 2432, 512), ((), 72, 100)],
}


@pytest.mark.parametrize(
    "dtype, case", [(d, c) for d, cases in GELU_CASES.items() for c in cases], ids=lambda v: str(v).replace(" ", "")
)
def test_linear_gelu_matches_fp64(dtype: torch.dtype, case: tuple) -> None:
    leading, dim, out_features = case
    x = torch.randn(*leading, dim).to(dtype)
    weight = (torch.randn(out_features, dim) / math.sqrt(dim)).to(dtype)
    bias = ((torch.rand(out_features) * 2 - 1) / math.sqrt(dim)).to(dtype)
    out = ops.linear_gelu(x, weight, bias, "tanh")
    ref64 = diffusers_gelu(x.double(), weight.double(), bias.double(), "tanh")
    assert_matches_reference(out, diffusers_gelu(x, weight, bias, "tanh"), ref64, what=f"linear_gelu {case}")


def test_linear_gelu_exact_form_without_bias() -> None:
    x, weight = torch.randn(7, 64).half(), (torch.randn(96, 64) / 8).half()
    out = ops.linear_gelu(x, weight, None, "none")
    ref64 = diffusers_gelu(x.double(), weight.double(), None, "none")
    assert_matches_reference(out, diffusers_gelu(x, weight, None, "none"), ref64, what="erf GELU, no bias")


def test_linear_gelu_saturates_without_nan() -> None:
    """Pre-activations of ±100 (tanh's argument ±4.5e4 in the cubic): outputs g or 0, never NaN/inf."""
    x = torch.tensor([[1.0], [-1.0]]).half()
    weight = torch.full((16, 1), 100.0).half()
    out = ops.linear_gelu(x, weight, None, "tanh")
    ref64 = diffusers_gelu(x.double(), weight.double(), None, "tanh")
    assert_matches_reference(out, diffusers_gelu(x, weight, None, "tanh"), ref64, what="saturated")


def test_linear_gelu_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="in_features"):
        ops.linear_gelu(torch.randn(2, 8), torch.randn(4, 9))
    with pytest.raises(ValueError, match="approximate"):
        ops.linear_gelu(torch.randn(2, 8), torch.randn(4, 8), None, "sigmoid")
