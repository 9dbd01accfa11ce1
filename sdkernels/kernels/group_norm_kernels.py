"""The Triton kernels of the fused GroupNorm (+ add) (+ SiLU) and the building blocks the split pass shares; the tile
configs and heuristics are in group_norm_tiles.py, the split pass in group_norm_split_kernels.py, the launch policy
and the launcher in group_norm.py.

x is viewed as (N, C, S), S = the flattened spatial dims, with strides (sN, sC, sS): NCHW (sC=S, sS=1) and
channels_last (sC=1, sS=C) share one kernel source that Triton specialises on the unit stride.
"""

from __future__ import annotations

import triton
import triton.language as tl

from sdkernels.kernels._tuning import autotune
from sdkernels.kernels.group_norm_tiles import (
    TILE_CONFIGS,
    block_c,
    fused_block_s,
    groups_per_program,
    one_tile,
    pow2,
    prune_tiles,
)


# --------------------------------------------------------------------------------------------- building blocks
# Helpers run once per program or channel block, loop bodies are inline: under TRITON_INTERPRET each call of a jit
# helper re-patches triton.language (~7 ms), which would dominate the interpreted tests.
@triton.jit
def channel_terms(
    weight_ptr,
    bias_ptr,
    add_grp,
    ch,
    c_ok,
    c0,
    stride_ac,
    add_pivot,
    rstd,
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_ADD: tl.constexpr,
):
    """Per-channel (add - add_pivot, rstd * weight, bias) as fp32 columns; weight/bias may be fp32 for fp16 x."""
    add_shift = tl.zeros(ch.shape, dtype=tl.float32)
    scale = add_shift + rstd
    shift = add_shift
    if HAS_ADD:
        add_shift = tl.load(add_grp + ch * stride_ac, mask=c_ok, other=0.0).to(tl.float32) - add_pivot
    if HAS_WEIGHT:
        scale *= tl.load(weight_ptr + c0 + ch, mask=c_ok, other=0.0).to(tl.float32)
    if HAS_BIAS:
        shift = tl.load(bias_ptr + c0 + ch, mask=c_ok, other=0.0).to(tl.float32)
    return add_shift, scale, shift


@triton.jit
def chunk_moments(
    x_grp,
    add_grp,
    s_begin,
    s_end,
    stride_xc,
    stride_xs,
    stride_ac,
    pivot,
    add_pivot,
    CPG,
    HAS_ADD: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    """(count, mean, M2) of h - pivot over positions [s_begin, s_end) of the group's CPG channels: each tile
    centred two-pass in registers, tiles merged with Chan et al.'s parallel formula."""
    count = 0.0
    mean = 0.0
    m2 = 0.0
    for c_start in range(0, CPG, BLOCK_C):
        ch = c_start + tl.arange(0, BLOCK_C)[:, None]
        c_ok = ch < CPG
        add_shift, _, _ = channel_terms(
            x_grp, x_grp, add_grp, ch, c_ok, 0, stride_ac, add_pivot, 1.0, False, False, HAS_ADD
        )
        rows = tl.minimum(CPG - c_start, BLOCK_C)
        for s_start in range(s_begin, s_end, BLOCK_S):
            sp = s_start + tl.arange(0, BLOCK_S)[None, :]
            mask = c_ok & (sp < s_end)
            x = tl.load(x_grp + ch * stride_xc + sp * stride_xs, mask=mask, other=0.0).to(tl.float32)
            h = tl.where(mask, (x - pivot) + add_shift, 0.0)
            tile_count = (rows * tl.minimum(s_end - s_start, BLOCK_S)).to(tl.float32)
            tile_mean = tl.sum(h) / tile_count
            centred = tl.where(mask, h - tile_mean, 0.0)
            merged = count + tile_count
            delta = tile_mean - mean
            mean += delta * (tile_count / merged)
            m2 += tl.sum(centred * centred) + delta * delta * (count * tile_count / merged)
            count = merged
    return count, mean, m2


@triton.jit
def normalize_chunk(
    x_grp,
    out_grp,
    weight_ptr,
    bias_ptr,
    add_grp,
    c0,
    s_begin,
    s_end,
    stride_xc,
    stride_xs,
    stride_oc,
    stride_os,
    stride_ac,
    pivot,
    add_pivot,
    mean,
    rstd,
    CPG,
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_ADD: tl.constexpr,
    SILU: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    """out = SiLU?((h - mean) * rstd * w + b) over positions [s_begin, s_end), h reloaded from x."""
    for c_start in range(0, CPG, BLOCK_C):
        ch = c_start + tl.arange(0, BLOCK_C)[:, None]
        c_ok = ch < CPG
        add_shift, scale, shift = channel_terms(
            weight_ptr, bias_ptr, add_grp, ch, c_ok, c0, stride_ac, add_pivot, rstd, HAS_WEIGHT, HAS_BIAS, HAS_ADD
        )
        for s_start in range(s_begin, s_end, BLOCK_S):
            sp = s_start + tl.arange(0, BLOCK_S)[None, :]
            mask = c_ok & (sp < s_end)
            x = tl.load(x_grp + ch * stride_xc + sp * stride_xs, mask=mask, other=0.0).to(tl.float32)
            y = ((x - pivot) + add_shift - mean) * scale + shift  # centre first: no cancellation at |mean| >> std
            if SILU:
                y = y * tl.sigmoid(y)
            tl.store(out_grp + ch * stride_oc + sp * stride_os, y.to(out_grp.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------------------ kernels
@autotune(
    TILE_CONFIGS,
    key=["CPG", "S", "HAS_ADD", "SILU", "MAX_GROUPS_PER_PROGRAM"],
    prune=prune_tiles(lambda a: pow2(a["S"]) * a["MAX_GROUPS_PER_PROGRAM"]),
)
@triton.heuristics(
    {
        "BLOCK_C": block_c,
        "BLOCK_S": fused_block_s,
        "ONE_TILE": one_tile,
        "GROUPS_PER_PROGRAM": groups_per_program,
    }
)
@triton.jit(do_not_specialize=["CPG", "G"])
def group_norm_fused_kernel(
    x_ptr,
    out_ptr,
    weight_ptr,
    bias_ptr,
    add_ptr,
    G,
    S,
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
    MAX_GROUPS_PER_PROGRAM: tl.constexpr,
    TILE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
    ONE_TILE: tl.constexpr,
    GROUPS_PER_PROGRAM: tl.constexpr,
):
    # Program = GROUPS_PER_PROGRAM consecutive groups of one sample: h = x + add over CPG channels x S positions
    # per group, minus the group's first h. Moments: small groups side by side in one [groups, C, S] register tile
    # (or one group in one tile), centred two-pass per group; a big group tile by tile, merged with Chan's formula.
    # Then y = (h - mean) * rstd * w + b (+ SiLU), rounded once to the output dtype, stored with its own strides.
    sets = tl.cdiv(G, GROUPS_PER_PROGRAM) if GROUPS_PER_PROGRAM > 1 else G  # programs per sample
    n = (tl.program_id(0) // sets).to(tl.int64)
    g0 = (tl.program_id(0) % sets) * GROUPS_PER_PROGRAM  # the program's first group
    c0 = g0 * CPG
    x_grp = x_ptr + n * stride_xn + c0.to(tl.int64) * stride_xc
    out_grp = out_ptr + n * stride_on + c0.to(tl.int64) * stride_oc
    add_grp = add_ptr + n * stride_an + c0 * stride_ac  # add_ptr is a dummy (x) when HAS_ADD is off
    if GROUPS_PER_PROGRAM > 1:  # small groups, each one tile: [groups, channels, positions], per-group sums
        tl.static_assert(ONE_TILE, "only groups that fit one tile share a program")
        gi = tl.arange(0, GROUPS_PER_PROGRAM)[:, None, None]  # the last set of groups may run past G: masked
        g_ok = g0 + gi < G
        ci = tl.arange(0, BLOCK_C)[None, :, None]
        ch = gi * CPG + ci  # channel relative to c0
        c_ok = g_ok & (ci < CPG)
        sp = tl.arange(0, BLOCK_S)[None, None, :]
        mask = c_ok & (sp < S)
        pivot = tl.load(x_grp + gi * CPG * stride_xc, mask=g_ok, other=0.0).to(tl.float32)
        add_pivot = tl.load(add_grp + gi * CPG * stride_ac, mask=g_ok, other=0.0).to(tl.float32)
        x = tl.load(x_grp + ch * stride_xc + sp * stride_xs, mask=mask, other=0.0).to(tl.float32)
        count = (S * CPG).to(tl.float32)
        add_shift, scale, shift = channel_terms(
            weight_ptr, bias_ptr, add_grp, ch, c_ok, c0, stride_ac, add_pivot, 1.0, HAS_WEIGHT, HAS_BIAS, HAS_ADD
        )
        centred = tl.where(mask, (x - pivot) + add_shift, 0.0)
        group_sum = tl.sum(tl.sum(centred, axis=2, keep_dims=True), axis=1, keep_dims=True)
        centred = tl.where(mask, centred - group_sum / count, 0.0)
        group_m2 = tl.sum(tl.sum(centred * centred, axis=2, keep_dims=True), axis=1, keep_dims=True)
        y = centred * (scale * tl.rsqrt(group_m2 / count + eps)) + shift
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(out_grp + ch * stride_oc + sp * stride_os, y.to(out_grp.dtype.element_ty), mask=mask)
    else:  # one group: the 2-D code, which compiles leaner than a [1, C, S] tile (no shared-memory layout shuffles)
        pivot = tl.load(x_grp).to(tl.float32)
        add_pivot = tl.load(add_grp).to(tl.float32)
        if ONE_TILE:
            ch = tl.arange(0, BLOCK_C)[:, None]
            sp = tl.arange(0, BLOCK_S)[None, :]
            mask = (ch < CPG) & (sp < S)
            x = tl.load(x_grp + ch * stride_xc + sp * stride_xs, mask=mask, other=0.0).to(tl.float32)
            count = (S * CPG).to(tl.float32)
            add_shift, scale, shift = channel_terms(
                weight_ptr,
                bias_ptr,
                add_grp,
                ch,
                ch < CPG,
                c0,
                stride_ac,
                add_pivot,
                1.0,
                HAS_WEIGHT,
                HAS_BIAS,
                HAS_ADD,
            )
            centred = tl.where(mask, (x - pivot) + add_shift, 0.0)
            centred = tl.where(mask, centred - tl.sum(centred) / count, 0.0)
            y = centred * (scale * tl.rsqrt(tl.sum(centred * centred) / count + eps)) + shift
            if SILU:
                y = y * tl.sigmoid(y)
            tl.store(out_grp + ch * stride_oc + sp * stride_os, y.to(out_grp.dtype.element_ty), mask=mask)
        else:
            count, mean, m2 = chunk_moments(
                x_grp, add_grp, 0, S, stride_xc, stride_xs, stride_ac, pivot, add_pivot, CPG, HAS_ADD, BLOCK_C, BLOCK_S
            )
            normalize_chunk(
                x_grp,
                out_grp,
                weight_ptr,
                bias_ptr,
                add_grp,
                c0,
                0,
                S,
                stride_xc,
                stride_xs,
                stride_oc,
                stride_os,
                stride_ac,
                pivot,
                add_pivot,
                mean,
                tl.rsqrt(m2 / count + eps),
                CPG,
                HAS_WEIGHT,
                HAS_BIAS,
                HAS_ADD,
                SILU,
                BLOCK_C,
                BLOCK_S,
            )
