"""The flash-attention op (sdkernels.ops.attention and torch.ops.sdkernels.attention) run through the Triton
interpreter, against PyTorch SDPA in the same dtype and in fp64 (tests/tolerance.py): every SD head dim and a few
other multiples of 8, self and cross attention, odd lengths, broadcast / full / -inf biases, logits beyond the fp16
range, strided views read in place, the output layout contract, and the config tables."""

from __future__ import annotations

import ast
import math
import os
import subprocess
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from sdkernels import ops
from sdkernels.kernels import attention as attention_kernels
from sdkernels.kernels import attention_configs as configs
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


def key_padding_bias(batch, heads, lk, dtype, lq=1):
    """(B|1, H|1, 1, Lk) additive mask: random values, -10000 and -inf entries, key 0 always kept."""
    bias = torch.randn(batch, heads, lq, lk)
    bias[..., 1::3] = -10000.0
    bias[..., 2::5] = float("-inf")
    return bias.to(dtype)


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


@pytest.fixture
def kernel_args():
    """Records (data_ptr, strides) of Q, K, V and Bias as the kernels receive them."""
    seen = []
    hooks = []
    for kernel in (attention_kernels._attention_pieces_kernel, attention_kernels._attention_dv_split_kernel):
        while not hasattr(kernel, "add_pre_run_hook") or hasattr(kernel, "configs"):
            kernel = kernel.fn  # unwrap autotune / heuristics down to the (interpreted) jit function

        def hook(*args, **kwargs):
            seen.append([(t.data_ptr(), t.stride()) for t in args[:4]])

        kernel.add_pre_run_hook(hook)
        hooks.append((kernel, hook))
    yield seen
    for kernel, hook in hooks:
        kernel.pre_run_hooks.remove(hook)


@pytest.mark.parametrize("head_dim,heads", [(40, 8), (80, 2), (512, 1)])
def test_projection_views_are_read_in_place(kernel_args, head_dim, heads):
    """q, k, v as diffusers makes them: (B, L, H*D) projections viewed as (B, L, H, D) and transposed."""
    batch, lq, lk = 2, 66, 77
    q, k, v = (
        torch.randn(batch, length, heads * head_dim).half().view(batch, length, heads, head_dim).transpose(1, 2)
        for length in (lq, lk, lk)
    )
    bias = key_padding_bias(batch, 1, lk, FP16)
    check(q, k, v, bias=bias, what="projection views")
    expanded = bias.expand(batch, heads, lq, lk)
    assert kernel_args == [[(t.data_ptr(), t.stride()) for t in (q, k, v, expanded)]]


def test_unaligned_row_strides_and_non_unit_last_stride(kernel_args):
    base = torch.randn(1, 2, 50, 41).half()
    q = base[..., :40]  # row stride 41: read in place, no 16-byte alignment claimed
    k, v = (torch.randn(1, 2, 40, 77).half().transpose(-1, -2) for _ in range(2))  # last stride 77: copied once
    check(q, k, v, what="unaligned rows / transposed k, v")
    ((q_arg, k_arg, v_arg, _),) = kernel_args
    assert q_arg == (q.data_ptr(), q.stride())
    assert k_arg[1][-1] == 1 and v_arg[1][-1] == 1 and k_arg[0] != k.data_ptr()


@pytest.mark.parametrize("head_dim,dtype", [(40, FP16), (264, BF16), (72, FP32)])
def test_masked_lanes_never_read_past_the_tensors(head_dim, dtype):
    """q, k, v inside NaN-filled buffers (8 extra columns, 7 extra rows): any read past D or past L turns the
    output NaN, since an unmasked lane would feed a score or a P·V product."""

    def padded(length):
        buffer = torch.full((1, 2, length + 7, head_dim + 8), float("nan"), dtype=dtype)
        buffer[:, :, :length, :head_dim] = torch.randn(1, 2, length, head_dim).to(dtype)
        return buffer[:, :, :length, :head_dim]

    check(padded(37), padded(77), padded(77), what="NaN-padded views")


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


# ------------------------------------------------------------------------------------------- head dims and configs
def test_head_dim_pieces_never_pad_to_the_next_power_of_two():
    assert configs.head_dim_pieces(40) == (32, 16, 0)
    assert configs.head_dim_pieces(80) == (64, 16, 0)
    assert configs.head_dim_pieces(160) == (128, 32, 0)
    assert configs.head_dim_pieces(72) == (64, 16, 0)
    assert configs.head_dim_pieces(96) == (64, 32, 0)
    assert configs.head_dim_pieces(200) == (128, 64, 16)
    for head_dim in range(8, configs.MAX_PIECES_HEAD_DIM + 1, 8):
        pieces = [p for p in configs.head_dim_pieces(head_dim) if p]
        assert all(p >= 16 and p & (p - 1) == 0 for p in pieces), head_dim
        assert sum(pieces[:-1]) < head_dim <= sum(pieces), head_dim  # only the last piece runs past D


@pytest.mark.parametrize("capability", [(8, 0), (8, 6), (8, 9), (9, 0), (12, 0)])
def test_every_head_dim_dtype_and_bias_has_configs(monkeypatch, capability):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    for dtype in (FP16, BF16, FP32):
        q = types.SimpleNamespace(device=torch.device("cuda"), dtype=dtype)
        for head_dim in range(8, 513, 8):
            kernel = (
                attention_kernels._attention_pieces_kernel
                if configs.uses_pieces_kernel(head_dim, dtype)
                else attention_kernels._attention_dv_split_kernel
            )
            for bias in ("none", "per_key", "per_query_key"):
                for lk in (77, 4096):
                    named_args = {"Q": q, "HEAD_DIM": head_dim, "BIAS": bias, "Lk": lk}
                    kept = configs.keep_configs_for(kernel.configs, named_args)
                    assert kept, (capability, dtype, head_dim, bias)
                    if capability == (9, 0) and dtype != FP32:  # warpgroup MMA: 4 warps per 64 rows
                        assert all(c.num_warps * 16 == c.kwargs["BLOCK_M"] for c in kept)
                    if capability == (9, 0) and dtype != FP32 and bias != "per_query_key" and head_dim in (40, 80):
                        assert all(c.kwargs["BLOCK_N"] >= 77 for c in kept) == (lk == 77)  # cross-attn: one tile


def test_aot_specs_cover_every_sd_head_dim():
    """aot_specs() needs real jit functions, so it runs in a child process without the interpreter."""
    script = (
        "import collections, sdkernels.kernels.attention as a\n"
        "specs = a.aot_specs()\n"
        "seen = collections.Counter((s.constexprs['HEAD_DIM'], s.signature['Q'], s.constexprs['BIAS'], arch)"
        " for s in specs for arch in s.archs if s.uses_dot)\n"
        "print(sorted(seen))\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert result.returncode == 0, result.stderr
    seen = ast.literal_eval(result.stdout)
    for head_dim in (40, 64, 80, 160, 512):
        for dtype in ("*fp16", "*bf16"):
            for bias in ("none", "per_key", "per_query_key"):
                for arch in (80, 90):
                    assert (head_dim, dtype, bias, arch) in seen
