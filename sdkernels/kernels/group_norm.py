"""Fused GroupNorm (+ a per-(sample, channel) add) (+ SiLU), NCHW and channels_last read in place.

x is viewed as (N, C, S), S = the flattened spatial dims, with strides (sN, sC, sS): NCHW (sC=S, sS=1) and
channels_last (sC=1, sS=C) share one kernel source that Triton specialises on the unit stride. Tiles are BLOCK_C
channels of a group x BLOCK_S positions. Statistics are fp32 on h - pivot (the group's first element, so
|mean| >> std loses nothing), centred two-pass per tile, merged with Chan's (count, mean, M2) formula.
Small groups: one fused program per (n, g). Big groups (SDXL VAE decoder (1, 128, 1024, 1024): 4.2 M elements
per group, only 32 groups): grid (N*G, SPLIT), kernel 1 writes per-chunk (mean, M2), kernel 2 merges a group's
partials in a fixed order and normalises its chunk - deterministic, no atomics.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import triton
import triton.language as tl

from sdkernels import reference
from sdkernels._dispatch import note_fallback, poison
from sdkernels.kernels._tuning import AotSpec, autotune, jit_fn

Tensor = torch.Tensor

# Split policy. Module-level so tests can force the split path on small inputs (FORCE_SPLIT).
PROGRAMS_PER_SM = 4  # split until there are about this many programs per SM
MIN_ELEMENTS_PER_PROGRAM = 8192  # smaller chunks cost a second launch and more than they parallelise
CHUNK_ALIGN = 1024  # split chunks start at multiples of this many positions: aligned, whole tiles (BLOCK_S | 1024)
MAX_SPLIT = 1024  # kernel 2 merges a group's partials as one vector of next_pow2(SPLIT) lanes
DEFAULT_SM_COUNT = 132  # H100; used off CUDA (the interpreter)
FORCE_SPLIT: int | None = None  # tests: split every group into about this many chunks (aligned to 16)

# TILE = elements per tile (BLOCK_C * BLOCK_S). The first config is the one the interpreter keeps: the biggest tile
# means the fewest interpreted loop steps. (TILE 4096 with 8 warps was dropped: its fp16/bf16 channels_last loop
# spills 4 B on sm_90 under Triton's ptxas options.)
TILE_CONFIGS = [
    triton.Config({"TILE": 8192}, num_warps=8, num_stages=1),
    triton.Config({"TILE": 4096}, num_warps=4, num_stages=1),
    triton.Config({"TILE": 2048}, num_warps=4, num_stages=1),
]


_pow2 = triton.next_power_of_2


def _block_c(args: dict[str, Any]) -> int:
    return min(_pow2(args["CPG"]), args["TILE"])


def _prune_tiles(max_block_s: Any) -> Any:
    """Drop configs whose tile exceeds what BLOCK_S can fill (they would only repeat a smaller tile)."""

    def prune(configs: list[triton.Config], args: dict[str, Any]) -> list[triton.Config]:
        needed = _pow2(args["CPG"]) * max_block_s(args)
        return [c for c in configs if c.kwargs["TILE"] <= needed] or configs[-1:]  # the last has the smallest tile

    return prune


# --------------------------------------------------------------------------------------------- building blocks
# Helpers run once per program or channel block, loop bodies are inline: under TRITON_INTERPRET each call of a jit
# helper re-patches triton.language (~7 ms), which would dominate the interpreted tests.
@triton.jit
def _channel_terms(weight_ptr, bias_ptr, add_grp, ch, c_ok, c0, stride_ac, add_pivot, rstd,
                   HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ADD: tl.constexpr):
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
def _chunk_moments(x_grp, add_grp, s_begin, s_end, stride_xc, stride_xs, stride_ac, pivot, add_pivot,
                   CPG: tl.constexpr, HAS_ADD: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """(count, mean, M2) of h - pivot over positions [s_begin, s_end) of the group's CPG channels: each tile
    centred two-pass in registers, tiles merged with Chan et al.'s parallel formula."""
    count = 0.0
    mean = 0.0
    m2 = 0.0
    for c_start in range(0, CPG, BLOCK_C):
        ch = c_start + tl.arange(0, BLOCK_C)[:, None]
        c_ok = ch < CPG
        add_shift, _, _ = _channel_terms(x_grp, x_grp, add_grp, ch, c_ok, 0, stride_ac, add_pivot, 1.0, False, False,
                                         HAS_ADD)
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
def _normalize_chunk(x_grp, out_grp, weight_ptr, bias_ptr, add_grp, c0, s_begin, s_end, stride_xc, stride_xs,
                     stride_oc, stride_os, stride_ac, pivot, add_pivot, mean, rstd, CPG: tl.constexpr,
                     HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ADD: tl.constexpr, SILU: tl.constexpr,
                     BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """out = SiLU?((h - mean) * rstd * w + b) over positions [s_begin, s_end), h reloaded from x."""
    for c_start in range(0, CPG, BLOCK_C):
        ch = c_start + tl.arange(0, BLOCK_C)[:, None]
        c_ok = ch < CPG
        add_shift, scale, shift = _channel_terms(weight_ptr, bias_ptr, add_grp, ch, c_ok, c0, stride_ac, add_pivot,
                                                 rstd, HAS_WEIGHT, HAS_BIAS, HAS_ADD)
        for s_start in range(s_begin, s_end, BLOCK_S):
            sp = s_start + tl.arange(0, BLOCK_S)[None, :]
            mask = c_ok & (sp < s_end)
            x = tl.load(x_grp + ch * stride_xc + sp * stride_xs, mask=mask, other=0.0).to(tl.float32)
            y = ((x - pivot) + add_shift - mean) * scale + shift  # centre first: no cancellation at |mean| >> std
            if SILU:
                y = y * tl.sigmoid(y)
            tl.store(out_grp + ch * stride_oc + sp * stride_os, y.to(out_grp.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------------------ kernels
@autotune(TILE_CONFIGS, key=["CPG", "S", "HAS_ADD", "SILU"], prune=_prune_tiles(lambda a: _pow2(a["S"])))
@triton.heuristics({
    "BLOCK_C": _block_c,
    "BLOCK_S": lambda a: min(a["TILE"] // a["BLOCK_C"], _pow2(a["S"])),
    "ONE_TILE": lambda a: a["CPG"] <= a["BLOCK_C"] and a["S"] <= a["BLOCK_S"],
})
@triton.jit
def _group_norm_fused_kernel(x_ptr, out_ptr, weight_ptr, bias_ptr, add_ptr, G, S, stride_xn, stride_xc, stride_xs,
                             stride_on, stride_oc, stride_os, stride_an, stride_ac, eps, CPG: tl.constexpr,
                             HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ADD: tl.constexpr,
                             SILU: tl.constexpr, TILE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
                             ONE_TILE: tl.constexpr):
    # One program per (sample, group): h = x + add over CPG channels x S positions, minus the group's first h.
    # Moments: the whole group in one register tile, centred two-pass; or tile by tile, merged with Chan's formula.
    # Then y = (h - mean) * rstd * w + b (+ SiLU), rounded once to the output dtype, stored with its own strides.
    ng = tl.program_id(0)
    n = (ng // G).to(tl.int64)
    c0 = (ng % G) * CPG
    x_grp = x_ptr + n * stride_xn + c0.to(tl.int64) * stride_xc
    out_grp = out_ptr + n * stride_on + c0.to(tl.int64) * stride_oc
    add_grp = add_ptr + n * stride_an + c0 * stride_ac  # add_ptr is a dummy (x) when HAS_ADD is off
    pivot = tl.load(x_grp).to(tl.float32)
    add_pivot = tl.load(add_grp).to(tl.float32)
    if ONE_TILE:
        ch = tl.arange(0, BLOCK_C)[:, None]
        sp = tl.arange(0, BLOCK_S)[None, :]
        mask = (ch < CPG) & (sp < S)
        x = tl.load(x_grp + ch * stride_xc + sp * stride_xs, mask=mask, other=0.0).to(tl.float32)
        count = (S * CPG).to(tl.float32)
        add_shift, scale, shift = _channel_terms(weight_ptr, bias_ptr, add_grp, ch, ch < CPG, c0, stride_ac,
                                                 add_pivot, 1.0, HAS_WEIGHT, HAS_BIAS, HAS_ADD)
        centred = tl.where(mask, (x - pivot) + add_shift, 0.0)
        centred = tl.where(mask, centred - tl.sum(centred) / count, 0.0)
        y = centred * (scale * tl.rsqrt(tl.sum(centred * centred) / count + eps)) + shift
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(out_grp + ch * stride_oc + sp * stride_os, y.to(out_grp.dtype.element_ty), mask=mask)
    else:
        count, mean, m2 = _chunk_moments(x_grp, add_grp, 0, S, stride_xc, stride_xs, stride_ac, pivot, add_pivot,
                                         CPG, HAS_ADD, BLOCK_C, BLOCK_S)
        _normalize_chunk(x_grp, out_grp, weight_ptr, bias_ptr, add_grp, c0, 0, S, stride_xc, stride_xs, stride_oc,
                         stride_os, stride_ac, pivot, add_pivot, mean, tl.rsqrt(m2 / count + eps), CPG, HAS_WEIGHT,
                         HAS_BIAS, HAS_ADD, SILU, BLOCK_C, BLOCK_S)


def _chunk_block(args: dict[str, Any]) -> int:
    return args["chunk_s"] & -args["chunk_s"]  # the largest power of 2 dividing chunk_s: only the last tile is partial


_SPLIT_HEURISTICS = {"BLOCK_C": _block_c, "BLOCK_S": lambda a: min(a["TILE"] // a["BLOCK_C"], _chunk_block(a))}


@autotune(TILE_CONFIGS, key=["CPG", "chunk_s", "HAS_ADD"], prune=_prune_tiles(_chunk_block))
@triton.heuristics(_SPLIT_HEURISTICS)
@triton.jit
def _group_norm_partials_kernel(x_ptr, add_ptr, partials_ptr, G, S, chunk_s, stride_xn, stride_xc, stride_xs,
                                stride_an, stride_ac, CPG: tl.constexpr, HAS_ADD: tl.constexpr, TILE: tl.constexpr,
                                BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
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
    _, mean, m2 = _chunk_moments(x_grp, add_grp, s_begin, tl.minimum(s_begin + chunk_s, S), stride_xc, stride_xs,
                                 stride_ac, tl.load(x_grp).to(tl.float32), tl.load(add_grp).to(tl.float32), CPG,
                                 HAS_ADD, BLOCK_C, BLOCK_S)
    slot = partials_ptr + ng * tl.num_programs(1) + k
    tl.store(slot, mean)
    tl.store(slot + tl.num_programs(0) * tl.num_programs(1), m2)


@autotune(TILE_CONFIGS, key=["CPG", "chunk_s", "HAS_ADD", "SILU"], prune=_prune_tiles(_chunk_block))
@triton.heuristics({**_SPLIT_HEURISTICS, "BLOCK_SPLIT": lambda a: _pow2(triton.cdiv(a["S"],
                                                                                                       a["chunk_s"]))})
@triton.jit
def _group_norm_apply_kernel(x_ptr, out_ptr, weight_ptr, bias_ptr, add_ptr, partials_ptr, G, S, chunk_s, stride_xn,
                             stride_xc, stride_xs, stride_on, stride_oc, stride_os, stride_an, stride_ac, eps,
                             CPG: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
                             HAS_ADD: tl.constexpr, SILU: tl.constexpr, TILE: tl.constexpr, BLOCK_C: tl.constexpr,
                             BLOCK_S: tl.constexpr, BLOCK_SPLIT: tl.constexpr):
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
    _normalize_chunk(x_grp, out_ptr + n * stride_on + c0.to(tl.int64) * stride_oc, weight_ptr, bias_ptr, add_grp, c0,
                     s_begin, tl.minimum(s_begin + chunk_s, S), stride_xc, stride_xs, stride_oc, stride_os, stride_ac,
                     tl.load(x_grp).to(tl.float32), tl.load(add_grp).to(tl.float32), mean,
                     tl.rsqrt(m2 / tl.sum(counts) + eps), CPG, HAS_WEIGHT, HAS_BIAS, HAS_ADD, SILU, BLOCK_C, BLOCK_S)


# ----------------------------------------------------------------------------------------------------- launcher
def _ncs_strides(t: Tensor) -> tuple[int, int, int] | None:
    """Strides (sN, sC, sS) of t viewed as (N, C, S), S = the flattened spatial dims; None if no such view."""
    spatial = [(size, stride) for size, stride in zip(t.shape[2:], t.stride()[2:], strict=True) if size != 1]
    if any(outer != inner * size for (_, outer), (size, inner) in zip(spatial, spatial[1:], strict=False)):
        return None
    return t.stride(0), t.stride(1), spatial[-1][1] if spatial else 1


def split_chunk(n_groups: int, channels_per_group: int, spatial: int, sm_count: int) -> int | None:
    """Spatial positions per chunk when each of the n_groups (N * G) groups is split across programs, or None for
    the fused kernel: split until PROGRAMS_PER_SM programs per SM, keeping MIN_ELEMENTS_PER_PROGRAM each."""
    if FORCE_SPLIT is not None:
        chunk = triton.cdiv(triton.cdiv(spatial, FORCE_SPLIT), 16) * 16
    else:
        wanted = triton.cdiv(PROGRAMS_PER_SM * sm_count, n_groups)
        split = min(wanted, channels_per_group * spatial // MIN_ELEMENTS_PER_PROGRAM, MAX_SPLIT)
        chunk = triton.cdiv(triton.cdiv(spatial, max(split, 1)), CHUNK_ALIGN) * CHUNK_ALIGN
    return chunk if 1 < triton.cdiv(spatial, chunk) <= MAX_SPLIT else None


def group_norm_silu(x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float,
                    silu: bool, add: Tensor | None) -> Tensor:
    """SiLU(GroupNorm(x + add[:, :, None, ...])) (SiLU only when `silu`); inputs already checked by sdkernels.ops.
    Returns an empty_like(x) output: x's dtype and memory format."""
    out = poison(torch.empty_like(x))
    if out.numel() == 0:
        return out
    if x.numel() // x.shape[0] >= 2**31:
        note_fallback("group_norm_silu", "a sample of 2**31 or more elements overflows 32-bit in-group offsets")
        return reference.group_norm_silu(x, num_groups, weight, bias, eps, silu, add)
    if _ncs_strides(x) is None:
        # The spatial dims cannot be flattened in place (e.g. sliced or transposed H/W): one visible copy.
        x = x.contiguous()
    # empty_like keeps x's layout; if even that cannot be flattened, write contiguous and copy into it once.
    target = out if _ncs_strides(out) is not None else torch.empty_like(x, memory_format=torch.contiguous_format)
    batch, channels = x.shape[:2]
    spatial, cpg, n_groups = x[0, 0].numel(), channels // num_groups, batch * num_groups
    args = dict(zip(("stride_xn", "stride_xc", "stride_xs"), _ncs_strides(x), strict=True)) | dict(
        zip(("stride_on", "stride_oc", "stride_os"), _ncs_strides(target), strict=True))
    args |= dict(x_ptr=x, out_ptr=target, weight_ptr=x if weight is None else weight.contiguous(),  # (C,): tiny
                 bias_ptr=x if bias is None else bias.contiguous(), add_ptr=x if add is None else add, G=num_groups,
                 S=spatial, stride_an=0 if add is None else add.stride(0), eps=eps,
                 stride_ac=0 if add is None else add.stride(1), CPG=cpg, HAS_WEIGHT=weight is not None,
                 HAS_BIAS=bias is not None, HAS_ADD=add is not None, SILU=silu)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else DEFAULT_SM_COUNT
    chunk = split_chunk(n_groups, cpg, spatial, sms)
    if chunk is None:
        _group_norm_fused_kernel[(n_groups,)](**args)
    else:
        grid = (n_groups, triton.cdiv(spatial, chunk))
        partials = torch.empty(2, *grid, dtype=torch.float32, device=x.device)  # (mean, M2) per chunk
        partials_args = {k: args[k] for k in _group_norm_partials_kernel.arg_names if k in args}
        _group_norm_partials_kernel[grid](partials_ptr=partials, chunk_s=chunk, **partials_args)
        _group_norm_apply_kernel[grid](partials_ptr=partials, chunk_s=chunk, **args)
    if target is not out:
        out.copy_(target)
    return out
# ---------------------------------------------------------------------------------------------- AOT compile specs
def aot_specs() -> list[AotSpec]:
    """Every shipped config: the three kernels (the fused one in its one-tile and loop forms) x TILE_CONFIGS x
    fp16/bf16/fp32 x NCHW/channels_last (they compile differently: the JIT specialises the unit stride, and the
    add's), at representative SD shapes (UNet CPG 40 and 10, VAE decoder CPG 4), weight, bias, add, SiLU on."""
    full = {"HAS_WEIGHT": True, "HAS_BIAS": True, "HAS_ADD": True, "SILU": True}
    specs = []
    for element, channels_last, config in itertools.product(("fp16", "bf16", "fp32"), (False, True), TILE_CONFIGS):
        tile = config.kwargs["TILE"]
        split_tile = {"CPG": 4, "BLOCK_C": 4, "BLOCK_S": min(tile // 4, CHUNK_ALIGN)}
        unit = {"stride_ac", "stride_xc", "stride_oc"} if channels_last else {"stride_ac", "stride_xs", "stride_os"}
        for kernel, variant, constexprs in (
            (_group_norm_fused_kernel, "fused one tile", {**full, "CPG": 40, "BLOCK_C": 64, "BLOCK_S": tile // 64,
                                                          "ONE_TILE": True}),
            (_group_norm_fused_kernel, "fused loop", {**full, "CPG": 10, "BLOCK_C": 16, "BLOCK_S": tile // 16,
                                                      "ONE_TILE": False}),
            (_group_norm_partials_kernel, "split partials", {**split_tile, "HAS_ADD": True}),
            (_group_norm_apply_kernel, "split apply", {**full, **split_tile, "BLOCK_SPLIT": 32}),
        ):
            fn = jit_fn(kernel)
            signature = {p.name: "fp32" if p.name == "eps" else "*fp32" if p.name == "partials_ptr" else
                         f"*{element}" if p.name.endswith("_ptr") else "i32" for p in fn.params if not p.is_constexpr}
            specs.append(AotSpec(
                kernel="group_norm_silu", fn=fn, signature=signature, constexprs={**constexprs, **config.kwargs},
                variant=f"{variant} {element} {'channels_last' if channels_last else 'nchw'} tile{tile} "
                        f"w{config.num_warps}", num_warps=config.num_warps, num_stages=config.num_stages,
                uses_dot=False, divisible_by_16=tuple(n for n in signature if n not in unit and n != "eps"),
                equal_to_1=tuple(sorted(unit & signature.keys()))))
    return specs
