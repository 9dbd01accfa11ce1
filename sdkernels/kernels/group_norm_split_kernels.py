"""The split pass of the fused GroupNorm, for big groups and few of them (SDXL's VAE decoder): grid (N*G, SPLIT),
kernel 1 writes each chunk's (mean, M2), kernel 2 merges a group's partials in a fixed order and normalises its
chunk - deterministic, no atomics. Building blocks shared with the fused kernel are in group_norm_kernels.py.
"""

from __future__ import annotations

import triton
import triton.language as tl

from sdkernels.kernels._tuning import autotune
from sdkernels.kernels.group_norm_kernels import chunk_moments, normalize_chunk
from sdkernels.kernels.group_norm_tiles import (
    MIN_BLOCK_SPLIT,
    SPLIT_HEURISTICS,
    TILE_CONFIGS,
    chunk_block,
    pow2,
    prune_tiles,
)


@autotune(TILE_CONFIGS, key=["CPG", "chunk_s", "HAS_ADD"], prune=prune_tiles(chunk_block))
@triton.heuristics(SPLIT_HEURISTICS)
@triton.jit(do_not_specialize=["CPG", "G"])
def group_norm_partials_kernel(
    x_ptr,
    add_ptr,
    partials_ptr,
    G,
    S,
    chunk_s,
    stride_xn,
    stride_xc,
    stride_xs,
    stride_an,
    stride_ac,
    CPG,
    HAS_ADD: tl.constexpr,
    TILE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    # Split pass 1, grid (N*G, SPLIT): program (ng, k) summarises spatial chunk k of group ng.
    # Moments of h - pivot over the chunk, tiles merged with Chan's formula (the fused kernel's code).
    # partials[0 | 1, ng, k] = (mean, M2); a chunk's count follows from its bounds, so kernel 2 recomputes it.
    ng = tl.program_id(0)
    k = tl.program_id(1)
    n = (ng // G).to(tl.int64)
    c0 = (ng % G) * CPG
    x_grp = x_ptr + n * stride_xn + c0.to(tl.int64) * stride_xc
    add_grp = add_ptr + n * stride_an + c0 * stride_ac
    s_begin = k * chunk_s
    _, mean, m2 = chunk_moments(
        x_grp,
        add_grp,
        s_begin,
        tl.minimum(s_begin + chunk_s, S),
        stride_xc,
        stride_xs,
        stride_ac,
        tl.load(x_grp).to(tl.float32),
        tl.load(add_grp).to(tl.float32),
        CPG,
        HAS_ADD,
        BLOCK_C,
        BLOCK_S,
    )
    slot = partials_ptr + ng * tl.num_programs(1) + k
    tl.store(slot, mean)
    tl.store(slot + tl.num_programs(0) * tl.num_programs(1), m2)


@autotune(TILE_CONFIGS, key=["CPG", "chunk_s", "HAS_ADD", "SILU"], prune=prune_tiles(chunk_block))
@triton.heuristics(
    {**SPLIT_HEURISTICS, "BLOCK_SPLIT": lambda a: max(MIN_BLOCK_SPLIT, pow2(-(-a["S"] // a["chunk_s"])))}
)
@triton.jit(do_not_specialize=["CPG", "G"])
def group_norm_apply_kernel(
    x_ptr,
    out_ptr,
    weight_ptr,
    bias_ptr,
    add_ptr,
    partials_ptr,
    G,
    S,
    chunk_s,
    stride_xn,
    stride_xc,
    stride_xs,
    stride_on,
    stride_oc,
    stride_os,
    stride_an,
    stride_ac,
    eps,
    CPG,
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_ADD: tl.constexpr,
    SILU: tl.constexpr,
    TILE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_SPLIT: tl.constexpr,
):
    # Split pass 2, grid (N*G, SPLIT): merge the group's SPLIT partials as one vector in a fixed order
    # (mean = Σ n_k m_k / n, M2 = Σ M2_k + Σ n_k (m_k - mean)²), bit-identical in every program of the group,
    # then normalise chunk k exactly like the fused kernel.
    ng = tl.program_id(0)
    k = tl.program_id(1)
    n_chunks = tl.num_programs(1)
    chunks = tl.arange(0, BLOCK_SPLIT)
    counts = (tl.minimum(tl.maximum(S - chunks * chunk_s, 0), chunk_s) * CPG).to(tl.float32)
    slots = partials_ptr + ng * n_chunks + chunks
    means = tl.load(slots, mask=chunks < n_chunks, other=0.0)
    m2s = tl.load(slots + tl.num_programs(0) * n_chunks, mask=chunks < n_chunks, other=0.0)
    mean = tl.sum(counts * means) / tl.sum(counts)
    m2 = tl.sum(m2s) + tl.sum(counts * (means - mean) * (means - mean))
    n = (ng // G).to(tl.int64)
    c0 = (ng % G) * CPG
    x_grp = x_ptr + n * stride_xn + c0.to(tl.int64) * stride_xc
    add_grp = add_ptr + n * stride_an + c0 * stride_ac
    s_begin = k * chunk_s
    normalize_chunk(
        x_grp,
        out_ptr + n * stride_on + c0.to(tl.int64) * stride_oc,
        weight_ptr,
        bias_ptr,
        add_grp,
        c0,
        s_begin,
        tl.minimum(s_begin + chunk_s, S),
        stride_xc,
        stride_xs,
        stride_oc,
        stride_os,
        stride_ac,
        tl.load(x_grp).to(tl.float32),
        tl.load(add_grp).to(tl.float32),
        mean,
        tl.rsqrt(m2 / tl.sum(counts) + eps),
        CPG,
        HAS_WEIGHT,
        HAS_BIAS,
        HAS_ADD,
        SILU,
        BLOCK_C,
        BLOCK_S,
    )
