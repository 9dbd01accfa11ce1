"""The flash-attention op (sdkernels.ops.attention and torch.ops.sdkernels.attention) run through the Triton
interpreter, against PyTorch SDPA in the same dtype and in fp64 (tests/tolerance.py): every SD head dim and a few
other multiples of 8, self and cross attention, odd lengths, broadcast / full / -inf biases, logits beyond the fp16
range and the output layout contract (strided inputs: test_attention_inputs.py; config tables:
test_attention_configs.py)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.attention_cases import BF16, FP16, FP32, attend, check, key_padding_bias, qkv, sdpa_pair
from tests.tolerance import assert_matches_reference

# head dim, dtype, (B, H, Lq, Lk), entry point. Lk 77 = SD cross-attention; 1, 129, 150 odd; 64/128/256 even tiles.
CASES = [
    (40, FP16, (2, 3, 150, 77), "ops"),
    (40, BF16, (1, 2, 129, 129), "torch.ops"),
    (40, FP32, (1, 2, 77, 150), "ops"),
    (64, FP16, (1, 2, 256, 256), "torch.ops"),
    (64, BF16, (2, 1, 1, 77), "ops"),
    (64, FP16, (1, 1, 5, 1), "ops"),
    (80, FP16, (1, 2, 150, 77), "ops"),
    (80, BF16, (1, 2, 128, 128), "torch.ops"),
    (160, FP16, (1, 2, 129, 77), "torch.ops"),
    (160, BF16, (1, 1, 64, 150), "ops"),
    (160, FP32, (1, 1, 40, 77), "ops"),
    (512, FP16, (1, 1, 64, 64), "ops"),
    (512, BF16, (1, 1, 100, 77), "torch.ops"),
    (512, FP32, (1, 1, 33, 40), "ops"),
    (8, FP16, (1, 2, 70, 77), "ops"),
    (24, BF16, (1, 2, 33, 77), "ops"),
    (72, FP16, (1, 2, 77, 129), "torch.ops"),
    (96, BF16, (1, 2, 64, 64), "ops"),
    (136, FP16, (1, 1, 50, 77), "ops"),
    (200, BF16, (1, 1, 33, 70), "ops"),
    (256, FP16, (1, 1, 40, 64), "ops"),
    (264, FP16, (1, 1, 20, 77), "ops"),
]


@pytest.mark.parametrize(
    "head_dim,dtype,shape,via", CASES, ids=[f"d{c[0]}-{str(c[1])[6:]}-{'x'.join(map(str, c[2]))}-{c[3]}" for c in CASES]
)
def test_attention_matches_sdpa(head_dim, dtype, shape, via):
    check(*qkv(*shape, head_dim, dtype), via=via, what=f"D={head_dim} {dtype} {shape}")


def test_custom_scale():
    check(*qkv(1, 2, 77, 77, 80, FP16), scale=0.37, via="torch.ops", what="scale 0.37")


@pytest.mark.parametrize("scale", [-0.37, 0.0])
def test_non_positive_scale_keeps_the_scale_per_score(scale):
    """The exp2 fold takes the running max on raw scores, valid only for scale > 0: a negative scale flips which
    score is largest and a zero scale turns masked -inf keys into NaN (-inf · 0). Both must take the unfolded path."""
    q, k, v = qkv(1, 2, 70, 77, 64, FP16, magnitude=2.0)
    check(q, k, v, scale=scale, what=f"scale {scale}")


@pytest.mark.parametrize(
    "head_dim,dtype,bias_shape,lq,lk",
    [
        (40, FP16, "B11K", 150, 77),
        (64, BF16, "1H1K", 64, 128),
        (80, FP16, "BH1K", 77, 150),
        (160, BF16, "111K", 33, 77),
        (512, FP16, "B11K", 40, 77),
    ],
)
def test_key_padding_bias(head_dim, dtype, bias_shape, lq, lk):
    batch, heads = 2, 2
    bias = key_padding_bias(batch if bias_shape[0] == "B" else 1, heads if bias_shape[1] == "H" else 1, lk, dtype)
    check(*qkv(batch, heads, lq, lk, head_dim, dtype), bias=bias, what=f"{bias_shape} bias D={head_dim}")


@pytest.mark.parametrize(
    "head_dim,dtype,bias_dtype,shape",
    [
        (40, FP16, FP32, (2, 2, 77, 77)),
        (80, BF16, BF16, (1, 2, 129, 64)),
        (160, FP16, FP16, (1, 1, 50, 77)),
        (512, BF16, FP32, (1, 1, 40, 70)),
    ],
)
def test_full_bias(head_dim, dtype, bias_dtype, shape):
    """A (B, H, Lq, Lk) bias in its own dtype, read as a 2-D tile per key block."""
    batch, heads, lq, lk = shape
    bias = (torch.randn(batch, heads, lq, lk) * 3).to(bias_dtype)
    bias[..., 3::7] = float("-inf")
    check(*qkv(*shape, head_dim, dtype), bias=bias, via="torch.ops", what=f"full bias D={head_dim}")


def test_broadcast_and_strided_biases():
    q, k, v = qkv(2, 3, 70, 77, 64, FP16)
    check(q, k, v, bias=torch.randn(1, 3, 70, 77).half(), what="(1, H, Lq, Lk)")
    check(q, k, v, bias=torch.randn(70, 77).half(), what="2-D (Lq, Lk) through ops.attention")
    check(q, k, v, bias=torch.randn(2, 1, 70, 1).half(), what="(B, 1, Lq, 1): constant along keys")
    transposed = torch.randn(2, 3, 77, 70).transpose(-1, -2)  # unit stride along the queries, not the keys
    check(q, k, v, bias=transposed, what="transposed (B, H, Lq, Lk) fp32 bias")


def test_fully_masked_rows_give_zero():
    q, k, v = qkv(1, 2, 40, 77, 80, FP16)
    bias = torch.randn(1, 2, 40, 77).half()
    bias[:, :, ::4] = float("-inf")  # every key of these query rows masked
    out = attend(q, k, v, bias=bias)
    assert torch.isfinite(out).all()
    assert (out[:, :, ::4] == 0).all()
    keep = [i for i in range(40) if i % 4]
    same, ref = sdpa_pair(q, k, v, bias=bias)
    assert_matches_reference(out[:, :, keep], same[:, :, keep], ref[:, :, keep], what="rows with a live key")


@pytest.mark.parametrize("head_dim", [64, 160])
def test_logits_beyond_fp16_range(head_dim):
    q, k, v = qkv(1, 2, 77, 77, head_dim, FP16, magnitude=300.0)
    scores = (q.double() @ k.double().transpose(-1, -2)).abs().max() / math.sqrt(head_dim)
    assert scores > 1e5  # far beyond 65504: an fp16 score would overflow
    out = check(q, k, v, what="huge logits")
    assert torch.isfinite(out).all()


def test_output_contract_matches_fake_and_empty_queries():
    q, k, v = qkv(2, 3, 9, 77, 40, FP16)
    out = attend(q, k, v, via="torch.ops")
    fake = torch.ops.sdkernels.attention(q.to("meta"), k.to("meta"), v.to("meta"), 0.1, None)
    assert fake.shape == out.shape and fake.stride() == out.stride()
    assert out.transpose(1, 2).is_contiguous()
    empty = attend(*qkv(2, 3, 0, 77, 40, FP16))
    assert empty.shape == (2, 3, 0, 40)


def test_opcheck():
    q, k, v = qkv(1, 2, 17, 9, 40, FP16)
    torch.library.opcheck(torch.ops.sdkernels.attention, (q, k, v, 0.2, key_padding_bias(1, 1, 9, FP16)))
