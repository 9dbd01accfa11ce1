"""The flash-attention kernels' configuration tables: head dims split into power-of-two pieces without padding, a
config for every head dim, dtype, bias kind and GPU capability, and AOT specs (the compile report's builds) for
every SD head dim on sm_80 and sm_90."""

from __future__ import annotations

import ast
import types

import pytest
import torch

from sdkernels.kernels import attention as attention_kernels
from sdkernels.kernels import attention_configs as configs
from tests.attention_cases import BF16, FP16, FP32
from tests.uninterpreted import run_without_interpreter


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
                attention_kernels.attention_pieces_kernel
                if configs.uses_pieces_kernel(head_dim, dtype)
                else attention_kernels.attention_dv_split_kernel
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
    result = run_without_interpreter(script)
    assert result.returncode == 0, result.stderr
    seen = ast.literal_eval(result.stdout)
    for head_dim in (40, 64, 80, 160, 512):
        for dtype in ("*fp16", "*bf16"):
            for bias in ("none", "per_key", "per_query_key"):
                for arch in (80, 90):
                    assert (head_dim, dtype, bias, arch) in seen
