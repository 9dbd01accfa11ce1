"""Randomised op tests (hypothesis): shapes, layouts, dtypes and optional arguments drawn together, each output held
to the tolerance rule against fp64 PyTorch. Cheap on purpose: small shapes, a few examples each, derandomised so CI
sees the same draws every run (the parametrised op tests cover SD's real shapes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sdkernels import ops
from tests.tolerance import assert_matches_reference

CHEAP = settings(
    max_examples=15, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16])


def _randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@CHEAP
@given(
    batch=st.integers(1, 2),
    groups=st.sampled_from([8, 32]),
    per_group=st.sampled_from([1, 2, 4]),
    spatial=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    dtype=DTYPES,
    silu=st.booleans(),
    affine=st.booleans(),
    with_add=st.booleans(),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_group_norm_silu_on_random_problems(
    batch, groups, per_group, spatial, dtype, silu, affine, with_add, channels_last, seed
) -> None:
    channels = groups * per_group
    assume(per_group * torch.Size(spatial).numel() > 1)  # PyTorch refuses one-element groups
    x64 = _randn(seed, batch, channels, *spatial) * 3 + 1
    w64, b64 = (_randn(seed + 1, channels), _randn(seed + 2, channels)) if affine else (None, None)
    add64 = _randn(seed + 3, batch, channels) if with_add else None
    x = x64.to(dtype)
    if channels_last:
        x = x.movedim(1, -1).contiguous().movedim(-1, 1)
    w, b, add = (None if t is None else t.to(dtype) for t in (w64, b64, add64))

    def torch_version(x, w, b, add):
        h = x if add is None else x + add.reshape(*add.shape, *([1] * len(spatial)))
        y = F.group_norm(h, groups, w, b, 1e-5)
        return F.silu(y) if silu else y

    ours = ops.group_norm_silu(x, groups, w, b, 1e-5, silu=silu, add=add)
    assert ours.stride() == x.stride(), "the output keeps x's memory format"
    ref64 = torch_version(*(None if t is None else t.double() for t in (x, w, b, add)))
    assert_matches_reference(ours, torch_version(x, w, b, add), ref64, what="random group_norm_silu")


@CHEAP
@given(
    batch=st.integers(1, 2),
    heads=st.integers(1, 3),
    lq=st.integers(1, 40),
    lk=st.integers(1, 80),
    head_dim=st.sampled_from([8, 16, 40, 64]),
    dtype=DTYPES,
    bias=st.sampled_from(["none", "key padding", "full"]),
    seed=st.integers(0, 2**16),
)
def test_attention_on_random_problems(batch, heads, lq, lk, head_dim, dtype, bias, seed) -> None:
    q, k, v = (_randn(seed + i, batch, heads, n, head_dim).to(dtype) for i, n in enumerate((lq, lk, lk)))
    attn_bias = None
    if bias == "full":
        attn_bias = _randn(seed + 3, batch, heads, lq, lk).to(dtype)
    elif bias == "key padding":
        attn_bias = torch.zeros(batch, 1, 1, lk, dtype=dtype)
        attn_bias[..., lk // 2 + 1 :] = float("-inf")
    ours = ops.attention(q, k, v, attn_bias=attn_bias)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
    ref64 = F.scaled_dot_product_attention(
        q.double(), k.double(), v.double(), attn_mask=None if attn_bias is None else attn_bias.double()
    )
    assert_matches_reference(ours, theirs, ref64, what="random attention")


@CHEAP
@given(
    rows=st.lists(st.integers(1, 5), min_size=1, max_size=2),
    dim=st.sampled_from([8, 32, 40]),
    inner=st.sampled_from([8, 24, 64]),
    dtype=DTYPES,
    with_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_geglu_and_gelu_gate_on_random_problems(rows, dim, inner, dtype, with_bias, seed) -> None:
    x = _randn(seed, *rows, dim).to(dtype)
    weight = (_randn(seed + 1, 2 * inner, dim) / dim**0.5).to(dtype)
    bias = _randn(seed + 2, 2 * inner).to(dtype) if with_bias else None

    def torch_version(x, weight, bias):
        value, gate = F.linear(x, weight, bias).chunk(2, -1)
        return value * F.gelu(gate)

    ref64 = torch_version(*(None if t is None else t.double() for t in (x, weight, bias)))
    assert_matches_reference(ops.geglu(x, weight, bias), torch_version(x, weight, bias), ref64, what="random geglu")
    h = F.linear(x, weight, bias)
    value, gate = h.chunk(2, -1)
    value64, gate64 = h.double().chunk(2, -1)
    assert_matches_reference(ops.gelu_gate(h), value * F.gelu(gate), value64 * F.gelu(gate64), what="random gelu_gate")
