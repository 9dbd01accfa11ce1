"""The Triton kernels of the fused GroupNorm (+ add) (+ SiLU), their tile configs and heuristics; the launch policy
and the launcher are in sdkernels/kernels/group_norm.py.

x is viewed as (N, C, S), S = the flattened spatial dims, with strides (sN, sC, sS): NCHW (sC=S, sS=1) and
channels_last (sC=1, sS=C) share one kernel source that Triton specialises on the unit stride.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

from sdkernels.kernels._tuning import autotune

# TILE = elements per tile (GROUPS_PER_PROGRAM * BLOCK_C * BLOCK_S). The first config is the one the interpreter
# keeps: the biggest tile means the fewest interpreted loop steps. (TILE 4096 with 8 warps was dropped: its
# fp16/bf16 channels_last loop spills 4 B on sm_90 under Triton's ptxas options.)
TILE_CONFIGS = [
    triton.Config({"TILE": 8192}, num_warps=8, num_stages=1),
    triton.Config({"TILE": 4096}, num_warps=4, num_stages=1),
    triton.Config({"TILE": 2048}, num_warps=4, num_stages=1),
]


def _pow2(n: int) -> int:  # plain int math: triton.next_power_of_2 costs ~3 µs from host code
    return 1 << (n - 1).bit_length() if n > 1 else 1


# Tile geometry. NCHW tensors (unit spatial stride, SD's layout) always loop over a fixed (TILE / BLOCK_S, BLOCK_S)
# tile, BLOCK_S = LONG_BLOCK_S for rows of S >= LONG_ROWS positions else SHORT_BLOCK_S, whatever CPG and S are:
# with CPG a runtime int, one compiled kernel per (dtype, flags, row class) serves every resolution, batch and
# channel count. (A group that fits one tile is read twice, the second time from L2.) Other layouts
# (channels_last) keep CPG-shaped tiles: pow2(CPG) channels, and small groups packed side by side in one tile.
LONG_ROWS = 1024
LONG_BLOCK_S = 2048  # (4, 2048) at TILE 8192: 16-byte loads along S
SHORT_BLOCK_S = 256  # (32, 256) at TILE 8192: rows of 16x16 latents and below


def _nchw(args: dict[str, Any]) -> bool:
    return args["stride_xs"] == 1


def _nchw_block_s(args: dict[str, Any]) -> int:
    return min(LONG_BLOCK_S if args["S"] >= LONG_ROWS else SHORT_BLOCK_S, args["TILE"])


def _block_c(args: dict[str, Any]) -> int:
    if _nchw(args):
        return args["TILE"] // _nchw_block_s(args)
    return min(_pow2(args["CPG"]), args["TILE"])


def _fused_block_s(args: dict[str, Any]) -> int:
    if _nchw(args):
        return args["TILE"] // args["BLOCK_C"]
    return min(args["TILE"] // args["BLOCK_C"], _pow2(args["S"]))


def _one_tile(args: dict[str, Any]) -> bool:
    return not _nchw(args) and args["CPG"] <= args["BLOCK_C"] and args["S"] <= args["BLOCK_S"]


def _prune_tiles(max_block_s: Any) -> Any:
    """Drop configs whose tile exceeds what one program can fill, pow2(CPG) x max_block_s(args) elements (they
    would only repeat a smaller tile)."""

    def prune(configs: list[triton.Config], args: dict[str, Any]) -> list[triton.Config]:
        if _nchw(args):
            return configs  # fixed geometry: the biggest tile, whatever the shape
        needed = _pow2(args["CPG"]) * max_block_s(args)
        return [c for c in configs if c.kwargs["TILE"] <= needed] or configs[-1:]  # the last has the smallest tile

    return prune


def _groups_per_program(args: dict[str, Any]) -> int:
    """Groups side by side in the fused kernel's tile: as many whole one-tile groups as TILE holds (all powers of
    two, so the tile is exactly full), at most MAX_GROUPS_PER_PROGRAM (the launcher's bound)."""
    if not args["ONE_TILE"]:
        return 1
    return min(args["MAX_GROUPS_PER_PROGRAM"], args["TILE"] // (args["BLOCK_C"] * args["BLOCK_S"]))


# --------------------------------------------------------------------------------------------- building blocks
# Helpers run once per program or channel block, loop bodies are inline: under TRITON_INTERPRET each call of a jit
# helper re-patches triton.language (~7 ms), which would dominate the interpreted tests.
@triton.jit
def _channel_terms(
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
def _chunk_moments(
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
        add_shift, _, _ = _channel_terms(
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
def _normalize_chunk(
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
        add_shift, scale, shift = _channel_terms(
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
    prune=_prune_tiles(lambda a: _pow2(a["S"]) * a["MAX_GROUPS_PER_PROGRAM"]),
)
@triton.heuristics(
    {
        "BLOCK_C": _block_c,
        "BLOCK_S": _fused_block_s,
        "ONE_TILE": _one_tile,
        "GROUPS_PER_PROGRAM": _groups_per_program,
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
        add_shift, scale, shift = _channel_terms(
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
            add_shift, scale, shift = _channel_terms(
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
            count, mean, m2 = _chunk_moments(
                x_grp, add_grp, 0, S, stride_xc, stride_xs, stride_ac, pivot, add_pivot, CPG, HAS_ADD, BLOCK_C, BLOCK_S
            )
            _normalize_chunk(
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


def _chunk_block(args: dict[str, Any]) -> int:
    return args["chunk_s"] & -args["chunk_s"]  # the largest power of 2 dividing chunk_s: only the last tile is partial


_SPLIT_HEURISTICS = {"BLOCK_C": _block_c, "BLOCK_S": lambda a: min(a["TILE"] // a["BLOCK_C"], _chunk_block(a))}
MIN_BLOCK_SPLIT = 32  # partials merged as one vector of max(32, pow2(SPLIT)) lanes: one kernel for SPLIT <= 32


@autotune(TILE_CONFIGS, key=["CPG", "chunk_s", "HAS_ADD"], prune=_prune_tiles(_chunk_block))
@triton.heuristics(_SPLIT_HEURISTICS)
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
    _, mean, m2 = _chunk_moments(
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


@autotune(TILE_CONFIGS, key=["CPG", "chunk_s", "HAS_ADD", "SILU"], prune=_prune_tiles(_chunk_block))
@triton.heuristics(
    {**_SPLIT_HEURISTICS, "BLOCK_SPLIT": lambda a: max(MIN_BLOCK_SPLIT, _pow2(-(-a["S"] // a["chunk_s"])))}
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
    _normalize_chunk(
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
