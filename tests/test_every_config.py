"""Every shipped launch configuration runs, not only the first of each table entry: each distinct tile of each
config table (attention pieces and dv-split, GEGLU, gelu_gate) is forced through the interpreter once at a small
shape with partial tiles, at SD's real head dims / channel counts, and compared with the fp64 reference.

The interpreter ignores num_warps, num_stages and maxnreg, so configs differing only in those run once."""

from __future__ import annotations

import math
import types
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import sdkernels.kernels.attention as attention_kernels
import sdkernels.kernels.geglu as geglu_kernels
import sdkernels.kernels.gelu_gate as gelu_gate_kernels
from sdkernels.kernels import attention_configs as tables
from tests.tolerance import assert_matches_reference

# Head dims of SD's attention per table bucket (the pieces kernel's dot-width sum, 512 = dv-split).
BUCKET_HEAD_DIMS = {64: (40, 64), 128: (80,), 256: (160,), 512: (512,)}
FP32_HEAD_DIMS = (40,)  # fp32 always takes the dv-split kernel (its D = 512 runs in test_attention_op)


def force_config(monkeypatch: Any, module: Any, config: Any) -> None:
    """Make `module`'s launcher run `config` whatever its table would pick: its plan builder sees an autotuner
    stand-in holding only that config (the heuristics wrappers still compute EVEN_N etc.), with empty plan caches."""
    original = module.first_config_plan

    def forced(tuned: Any, named_args: dict, constexprs: dict) -> Any:
        only = types.SimpleNamespace(configs=[config], early_config_prune=None, fn=tuned.fn)
        return original(only, named_args, constexprs)

    monkeypatch.setattr(module, "first_config_plan", forced)
    for cache in ("_plans", "_calls"):
        if hasattr(module, cache):
            monkeypatch.setattr(module, cache, {})


def _distinct(entries: Iterator[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    seen, kept = set(), []
    for entry in entries:
        key = (*entry[:-1], tuple(sorted(entry[-1].kwargs.items())))
        if key not in seen:
            seen.add(key)
            kept.append(entry)
    return kept


def _attention_cases() -> list[tuple[Any, ...]]:
    def entries() -> Iterator[tuple[Any, ...]]:
        for name, table in (("pieces", tables.PIECES_TABLE), ("dv_split", tables.DV_SPLIT_TABLE)):
            for (_, kind, bucket, per_query), configs in table.items():
                head_dims = FP32_HEAD_DIMS if kind == "fp32" else BUCKET_HEAD_DIMS[bucket]
                dtype = torch.float32 if kind == "fp32" else torch.float16
                for config in configs:
                    for head_dim in head_dims:
                        yield name, head_dim, dtype, per_query, config

    return _distinct(entries())


ATTENTION_CASES = _attention_cases()


@pytest.mark.parametrize(
    "kernel_name, head_dim, dtype, per_query, config",
    ATTENTION_CASES,
    ids=[
        f"{c[0]}-d{c[1]}-{str(c[2])[6:]}-{'bias' if c[3] else 'nobias'}-"
        + "x".join(str(v) for v in c[4].kwargs.values())
        for c in ATTENTION_CASES
    ],
)
def test_attention_config(monkeypatch, kernel_name, head_dim, dtype, per_query, config) -> None:
    block_m, block_n = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
    lq, lk = block_m + 7, block_n + 13  # a partial query block and a partial key tile after a full one
    q, k, v = (torch.randn(1, 2, length, head_dim).to(dtype) for length in (lq, lk, lk))
    bias = torch.randn(1, 2, lq, lk) if per_query else None
    force_config(monkeypatch, attention_kernels, config)
    scale = 1.0 / math.sqrt(head_dim)
    out = attention_kernels.attention(q, k, v, scale, bias)
    mask = None if bias is None else bias.to(dtype)
    same = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    ref = F.scaled_dot_product_attention(
        q.double(), k.double(), v.double(), attn_mask=None if bias is None else bias.double(), scale=scale
    )
    assert_matches_reference(out, same, ref, what=f"{kernel_name} d{head_dim} {config}")


GEGLU_CASES = _distinct(
    [(torch.float16, c) for c in geglu_kernels.ALL_ARCH_CONFIGS + geglu_kernels.SM90_CONFIGS]
    + [(torch.float32, c) for c in geglu_kernels.FP32_CONFIGS]
)


@pytest.mark.parametrize(
    "dtype, config",
    GEGLU_CASES,
    ids=[f"{str(d)[6:]}-" + "x".join(str(v) for v in c.kwargs.values()) for d, c in GEGLU_CASES],
)
def test_geglu_config(monkeypatch, dtype, config) -> None:
    tiles = config.kwargs
    tokens, dim, inner = tiles["BLOCK_M"] + 5, 320, tiles["BLOCK_N"] + 8  # SD1.5's first-level dim, ragged tiles
    x = torch.randn(tokens, dim).to(dtype)
    weight = (torch.randn(2 * inner, dim) / math.sqrt(dim)).to(dtype)
    bias = ((torch.rand(2 * inner) * 2 - 1) / math.sqrt(dim)).to(dtype)
    force_config(monkeypatch, geglu_kernels, config)
    out = geglu_kernels.geglu(x, weight, bias)

    def reference(x_, w_, b_):
        value, gate = F.linear(x_, w_, b_).chunk(2, dim=-1)
        return value * F.gelu(gate)

    ref64 = reference(x.double(), weight.double(), bias.double())
    assert_matches_reference(out, reference(x, weight, bias), ref64, what=f"geglu {config}")


@pytest.mark.parametrize(
    "config", gelu_gate_kernels.GELU_GATE_CONFIGS, ids=lambda c: "x".join(str(v) for v in c.kwargs.values())
)
def test_gelu_gate_config(monkeypatch, config) -> None:
    rows, inner = config.kwargs["BLOCK_M"] + 3, 1280  # SD1.5's first-level inner dim
    h = torch.randn(rows, 2 * inner).to(torch.float16)
    force_config(monkeypatch, gelu_gate_kernels, config)
    out = gelu_gate_kernels.gelu_gate(h)

    def reference(h_):
        value, gate = h_.chunk(2, dim=-1)
        return value * F.gelu(gate)

    assert_matches_reference(out, reference(h), reference(h.double()), what=f"gelu_gate {config}")
