"""Fused GroupNorm (+ a per-(sample, channel) add) (+ SiLU), NCHW and channels_last read in place.

x is viewed as (N, C, S) with strides (sN, sC, sS), S = the flattened spatial dims: contiguous NCHW (sC=S, sS=1)
and channels_last (sC=1, sS=C) run the same kernel source, which Triton specialises on the unit stride. A tile is
BLOCK_C channels of one group x BLOCK_S spatial positions.

Statistics are fp32 and numerically stable: values are shifted by a pivot (the group's first element) so that
|mean| >> std loses nothing, each tile is centred two-pass in registers, and tiles / chunks are merged with Chan's
parallel (count, mean, M2) formula - never E[x²] - E[x]².

Two paths:
- fused: one program per (n, g); loads the group once when it fits a tile, else loops (moments, then normalise).
- split, for big groups (SDXL VAE decoder (1, 128, 1024, 1024): 4.2 M elements per group but only 32 groups):
  grid (N*G, SPLIT); kernel 1 writes each spatial chunk's (mean, M2), kernel 2 merges the group's partials in a
  fixed order and normalises its chunk. Deterministic: no atomics.
"""

from __future__ import annotations

import functools
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
# means the fewest interpreted loop steps.
TILE_CONFIGS = [
    triton.Config({"TILE": 8192}, num_warps=8, num_stages=1),
    triton.Config({"TILE": 4096}, num_warps=8, num_stages=1),
    triton.Config({"TILE": 4096}, num_warps=4, num_stages=1),
    triton.Config({"TILE": 2048}, num_warps=4, num_stages=1),
]


def _block_c(args: dict[str, Any]) -> int:
    return min(triton.next_power_of_2(args["CPG"]), args["TILE"])


def _lowest_power_of_2(value: int) -> int:
    return value & -value


def _prune_tiles(span_arg: str) -> Any:
    """Drop configs whose tile is bigger than the group/chunk needs (they would only repeat a smaller one)."""

    def prune(configs: list[triton.Config], args: dict[str, Any]) -> list[triton.Config]:
        needed = triton.next_power_of_2(args["CPG"]) * triton.next_power_of_2(args[span_arg])
        kept = [c for c in configs if c.kwargs["TILE"] <= needed]
        return kept or [c for c in configs if c.kwargs["TILE"] == min(c.kwargs["TILE"] for c in configs)]

    return prune


# --------------------------------------------------------------------------------------------- building blocks
@triton.jit
def _group_base(ptr, ng, G, stride_n, stride_c, CPG: tl.constexpr):
    """Pointer to channel 0 of group (ng % G) of sample (ng // G); 64-bit so big batches cannot overflow."""
    return ptr + (ng // G).to(tl.int64) * stride_n + ((ng % G) * CPG).to(tl.int64) * stride_c


@triton.jit
def _pivots(x_grp, add_grp, HAS_ADD: tl.constexpr):
    """The group's first x and add: everything is computed on h - pivot, exact when |mean| >> std."""
    add_pivot = 0.0
    if HAS_ADD:
        add_pivot = tl.load(add_grp).to(tl.float32)
    return tl.load(x_grp).to(tl.float32), add_pivot


@triton.jit
def _add_shift(add_grp, ch, c_ok, stride_ac, add_pivot, HAS_ADD: tl.constexpr):
    """Per-channel (add_c - add_pivot), zeros without an add."""
    shift = tl.zeros(ch.shape, dtype=tl.float32)
    if HAS_ADD:
        shift = tl.load(add_grp + ch * stride_ac, mask=c_ok, other=0.0).to(tl.float32) - add_pivot
    return shift


@triton.jit
def _load_shifted(x_grp, ch, sp, mask, stride_xc, stride_xs, pivot, add_shift):
    """fp32 tile of (x - x_pivot) + (add - add_pivot) = h - h_pivot; zero outside `mask`."""
    x = tl.load(x_grp + ch[:, None] * stride_xc + sp[None, :] * stride_xs, mask=mask, other=0.0).to(tl.float32)
    return tl.where(mask, (x - pivot) + add_shift[:, None], 0.0)


@triton.jit
def _merge_moments(count_a, mean_a, m2_a, count_b, mean_b, m2_b):
    """Chan et al.'s parallel combine of two (count, mean, M2) summaries."""
    count = count_a + count_b
    weight_b = count_b / count
    delta = mean_b - mean_a
    return count, mean_a + delta * weight_b, m2_a + m2_b + delta * delta * count_a * weight_b


@triton.jit
def _chunk_moments(x_grp, add_grp, s_begin, s_end, stride_xc, stride_xs, stride_ac, pivot, add_pivot,
                   CPG: tl.constexpr, HAS_ADD: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """(count, mean, M2) of h - pivot over positions [s_begin, s_end) of the group's CPG channels."""
    count = 0.0
    mean = 0.0
    m2 = 0.0
    for c_start in range(0, CPG, BLOCK_C):
        ch = c_start + tl.arange(0, BLOCK_C)
        c_ok = ch < CPG
        add_shift = _add_shift(add_grp, ch, c_ok, stride_ac, add_pivot, HAS_ADD)
        for s_start in range(s_begin, s_end, BLOCK_S):
            sp = s_start + tl.arange(0, BLOCK_S)
            mask = c_ok[:, None] & (sp < s_end)[None, :]
            h = _load_shifted(x_grp, ch, sp, mask, stride_xc, stride_xs, pivot, add_shift)
            tile_count = (tl.minimum(CPG - c_start, BLOCK_C) * tl.minimum(s_end - s_start, BLOCK_S)).to(tl.float32)
            tile_mean = tl.sum(h) / tile_count
            centred = tl.where(mask, h - tile_mean, 0.0)
            count, mean, m2 = _merge_moments(count, mean, m2, tile_count, tile_mean, tl.sum(centred * centred))
    return count, mean, m2


@triton.jit
def _affine(weight_ptr, bias_ptr, channel, c_ok, rstd, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Per-channel (scale, shift) with y = (h - mean) * scale + shift; weight/bias may be fp32 for fp16 x."""
    scale = tl.zeros(channel.shape, dtype=tl.float32) + rstd
    shift = tl.zeros(channel.shape, dtype=tl.float32)
    if HAS_WEIGHT:
        scale *= tl.load(weight_ptr + channel, mask=c_ok, other=0.0).to(tl.float32)
    if HAS_BIAS:
        shift = tl.load(bias_ptr + channel, mask=c_ok, other=0.0).to(tl.float32)
    return scale, shift


@triton.jit
def _store_normalized(out_grp, ch, sp, mask, stride_oc, stride_os, h, mean, scale, shift, SILU: tl.constexpr):
    y = (h - mean) * scale[:, None] + shift[:, None]  # centre first: x*scale + (shift - mean*scale) cancels
    if SILU:
        y = y * tl.sigmoid(y)
    tl.store(out_grp + ch[:, None] * stride_oc + sp[None, :] * stride_os, y.to(out_grp.dtype.element_ty), mask=mask)


@triton.jit
def _normalize_chunk(x_grp, out_grp, weight_ptr, bias_ptr, add_grp, c0, s_begin, s_end, stride_xc, stride_xs,
                     stride_oc, stride_os, stride_ac, pivot, add_pivot, mean, rstd, CPG: tl.constexpr,
                     HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ADD: tl.constexpr, SILU: tl.constexpr,
                     BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    for c_start in range(0, CPG, BLOCK_C):
        ch = c_start + tl.arange(0, BLOCK_C)
        c_ok = ch < CPG
        add_shift = _add_shift(add_grp, ch, c_ok, stride_ac, add_pivot, HAS_ADD)
        scale, shift = _affine(weight_ptr, bias_ptr, c0 + ch, c_ok, rstd, HAS_WEIGHT, HAS_BIAS)
        for s_start in range(s_begin, s_end, BLOCK_S):
            sp = s_start + tl.arange(0, BLOCK_S)
            mask = c_ok[:, None] & (sp < s_end)[None, :]
            h = _load_shifted(x_grp, ch, sp, mask, stride_xc, stride_xs, pivot, add_shift)
            _store_normalized(out_grp, ch, sp, mask, stride_oc, stride_os, h, mean, scale, shift, SILU)


# ------------------------------------------------------------------------------------------------------ kernels
@autotune(TILE_CONFIGS, key=["CPG", "S", "HAS_ADD", "SILU"], prune=_prune_tiles("S"))
@triton.heuristics({
    "BLOCK_C": _block_c,
    "BLOCK_S": lambda a: min(a["TILE"] // a["BLOCK_C"], triton.next_power_of_2(a["S"])),
    "ONE_TILE": lambda a: a["CPG"] <= a["BLOCK_C"] and a["S"] <= a["BLOCK_S"],
})
@triton.jit
def _group_norm_fused_kernel(x_ptr, out_ptr, weight_ptr, bias_ptr, add_ptr, G, S, stride_xn, stride_xc, stride_xs,
                             stride_on, stride_oc, stride_os, stride_an, stride_ac, eps, CPG: tl.constexpr,
                             HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ADD: tl.constexpr,
                             SILU: tl.constexpr, TILE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
                             ONE_TILE: tl.constexpr):
    # One program per (sample, group); h = x + add over the group's CPG channels x S positions, minus a pivot.
    # Moments: the whole group in one register tile, centred two-pass; or tile by tile merged with Chan's formula.
    # Then y = (h - mean) * rstd * w + b (+ SiLU), rounded once to the output dtype, stored with its strides.
    ng = tl.program_id(0)
    x_grp = _group_base(x_ptr, ng, G, stride_xn, stride_xc, CPG)
    out_grp = _group_base(out_ptr, ng, G, stride_on, stride_oc, CPG)
    add_grp = _group_base(add_ptr, ng, G, stride_an, stride_ac, CPG)
    c0 = (ng % G) * CPG
    pivot, add_pivot = _pivots(x_grp, add_grp, HAS_ADD)
    if ONE_TILE:
        ch = tl.arange(0, BLOCK_C)
        sp = tl.arange(0, BLOCK_S)
        c_ok = ch < CPG
        mask = c_ok[:, None] & (sp < S)[None, :]
        h = _load_shifted(x_grp, ch, sp, mask, stride_xc, stride_xs, pivot,
                          _add_shift(add_grp, ch, c_ok, stride_ac, add_pivot, HAS_ADD))
        count = (S * CPG).to(tl.float32)
        mean = tl.sum(h) / count
        centred = tl.where(mask, h - mean, 0.0)
        rstd = tl.rsqrt(tl.sum(centred * centred) / count + eps)
        scale, shift = _affine(weight_ptr, bias_ptr, c0 + ch, c_ok, rstd, HAS_WEIGHT, HAS_BIAS)
        _store_normalized(out_grp, ch, sp, mask, stride_oc, stride_os, h, mean, scale, shift, SILU)
    else:
        count, mean, m2 = _chunk_moments(x_grp, add_grp, 0, S, stride_xc, stride_xs, stride_ac, pivot, add_pivot,
                                         CPG, HAS_ADD, BLOCK_C, BLOCK_S)
        _normalize_chunk(x_grp, out_grp, weight_ptr, bias_ptr, add_grp, c0, 0, S, stride_xc, stride_xs, stride_oc,
                         stride_os, stride_ac, pivot, add_pivot, mean, tl.rsqrt(m2 / count + eps), CPG, HAS_WEIGHT,
                         HAS_BIAS, HAS_ADD, SILU, BLOCK_C, BLOCK_S)


_SPLIT_HEURISTICS = {
    "BLOCK_C": _block_c,  # BLOCK_S divides chunk_s, so every tile but the group's last is full
    "BLOCK_S": lambda a: min(a["TILE"] // a["BLOCK_C"], _lowest_power_of_2(a["chunk_s"])),
}


@autotune(TILE_CONFIGS, key=["CPG", "chunk_s", "HAS_ADD"], prune=_prune_tiles("chunk_s"))
@triton.heuristics(_SPLIT_HEURISTICS)
@triton.jit
def _group_norm_partials_kernel(x_ptr, add_ptr, partials_ptr, G, S, chunk_s, stride_xn, stride_xc, stride_xs,
                                stride_an, stride_ac, CPG: tl.constexpr, HAS_ADD: tl.constexpr, TILE: tl.constexpr,
                                BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    # Split pass 1, grid (N*G, SPLIT): program (ng, k) summarises spatial chunk k of group ng.
    # Moments of h - pivot over the chunk, tiles merged with Chan's formula (same code as the fused kernel).
    # partials[0 | 1, ng, k] = (mean, M2); the count follows from the chunk bounds, so kernel 2 recomputes it.
    ng = tl.program_id(0)
    k = tl.program_id(1)
    x_grp = _group_base(x_ptr, ng, G, stride_xn, stride_xc, CPG)
    add_grp = _group_base(add_ptr, ng, G, stride_an, stride_ac, CPG)
    pivot, add_pivot = _pivots(x_grp, add_grp, HAS_ADD)
    s_begin = k * chunk_s
    _, mean, m2 = _chunk_moments(x_grp, add_grp, s_begin, tl.minimum(s_begin + chunk_s, S), stride_xc, stride_xs,
                                 stride_ac, pivot, add_pivot, CPG, HAS_ADD, BLOCK_C, BLOCK_S)
    slot = partials_ptr + ng * tl.num_programs(1) + k
    tl.store(slot, mean)
    tl.store(slot + tl.num_programs(0) * tl.num_programs(1), m2)


@autotune(TILE_CONFIGS, key=["CPG", "chunk_s", "HAS_ADD", "SILU"], prune=_prune_tiles("chunk_s"))
@triton.heuristics({**_SPLIT_HEURISTICS, "BLOCK_SPLIT": lambda a: triton.next_power_of_2(triton.cdiv(a["S"],
                                                                                                       a["chunk_s"]))})
@triton.jit
def _group_norm_apply_kernel(x_ptr, out_ptr, weight_ptr, bias_ptr, add_ptr, partials_ptr, G, S, chunk_s, stride_xn,
                             stride_xc, stride_xs, stride_on, stride_oc, stride_os, stride_an, stride_ac, eps,
                             CPG: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
                             HAS_ADD: tl.constexpr, SILU: tl.constexpr, TILE: tl.constexpr, BLOCK_C: tl.constexpr,
                             BLOCK_S: tl.constexpr, BLOCK_SPLIT: tl.constexpr):
    # Split pass 2, grid (N*G, SPLIT): merge all SPLIT partials of the group as one vector in a fixed order
    # (mean = Σ n_k m_k / n, M2 = Σ M2_k + Σ n_k (m_k - mean)²), identical in every program of the group,
    # then normalise chunk k like the fused kernel.
    ng = tl.program_id(0)
    k = tl.program_id(1)
    n_chunks = tl.num_programs(1)
    chunks = tl.arange(0, BLOCK_SPLIT)
    in_range = chunks < n_chunks
    counts = (tl.minimum(tl.maximum(S - chunks * chunk_s, 0), chunk_s) * CPG).to(tl.float32)
    slots = partials_ptr + ng * n_chunks + chunks
    means = tl.load(slots, mask=in_range, other=0.0)
    m2s = tl.load(slots + tl.num_programs(0) * n_chunks, mask=in_range, other=0.0)
    count = tl.sum(counts)
    mean = tl.sum(counts * means) / count
    m2 = tl.sum(m2s) + tl.sum(counts * (means - mean) * (means - mean))
    x_grp = _group_base(x_ptr, ng, G, stride_xn, stride_xc, CPG)
    add_grp = _group_base(add_ptr, ng, G, stride_an, stride_ac, CPG)
    pivot, add_pivot = _pivots(x_grp, add_grp, HAS_ADD)
    s_begin = k * chunk_s
    _normalize_chunk(x_grp, _group_base(out_ptr, ng, G, stride_on, stride_oc, CPG), weight_ptr, bias_ptr, add_grp,
                     (ng % G) * CPG, s_begin, tl.minimum(s_begin + chunk_s, S), stride_xc, stride_xs, stride_oc,
                     stride_os, stride_ac, pivot, add_pivot, mean, tl.rsqrt(m2 / count + eps), CPG, HAS_WEIGHT,
                     HAS_BIAS, HAS_ADD, SILU, BLOCK_C, BLOCK_S)


# ----------------------------------------------------------------------------------------------------- launcher
def _ncs_strides(t: Tensor) -> tuple[int, int, int] | None:
    """Strides (sN, sC, sS) of t viewed as (N, C, S), S = the flattened spatial dims; None if no such view."""
    spatial = [(size, stride) for size, stride in zip(t.shape[2:], t.stride()[2:]) if size != 1]
    for (_, outer_stride), (size, inner_stride) in zip(spatial, spatial[1:]):
        if outer_stride != inner_stride * size:
            return None
    return t.stride(0), t.stride(1), spatial[-1][1] if spatial else 1


@functools.cache
def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return DEFAULT_SM_COUNT


def split_chunk(n_groups: int, channels_per_group: int, spatial: int, sm_count: int) -> int | None:
    """Spatial positions per chunk when each group should be split across programs, or None for the fused kernel.

    Split until there are PROGRAMS_PER_SM programs per SM, keeping MIN_ELEMENTS_PER_PROGRAM per program; chunks
    are aligned to CHUNK_ALIGN positions. n_groups counts N * G.
    """
    if FORCE_SPLIT is not None:
        chunk = triton.cdiv(triton.cdiv(spatial, FORCE_SPLIT), 16) * 16
    else:
        wanted = triton.cdiv(PROGRAMS_PER_SM * sm_count, n_groups)
        split = min(wanted, channels_per_group * spatial // MIN_ELEMENTS_PER_PROGRAM, MAX_SPLIT)
        if split < 2:
            return None
        chunk = triton.cdiv(triton.cdiv(spatial, split), CHUNK_ALIGN) * CHUNK_ALIGN
    return chunk if 1 < triton.cdiv(spatial, chunk) <= MAX_SPLIT else None


def group_norm_silu(x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float,
                    silu: bool, add: Tensor | None) -> Tensor:
    """SiLU(GroupNorm(x + add[:, :, None, ...])) (SiLU only when `silu`); inputs already checked by sdkernels.ops.
    Returns empty_like(x)-strided output: x's dtype and memory format."""
    out = poison(torch.empty_like(x))
    batch, channels = x.shape[:2]
    if out.numel() == 0:
        return out
    if x[0].numel() >= 2**31:
        note_fallback("group_norm_silu", "a sample of 2**31 or more elements overflows 32-bit in-group offsets")
        return reference.group_norm_silu(x, num_groups, weight, bias, eps, silu, add)
    spatial = x.numel() // (batch * channels)
    x_strides = _ncs_strides(x)
    if x_strides is None:
        # The spatial dims cannot be flattened in place (e.g. sliced or transposed H/W): one visible copy.
        x = x.contiguous()
        x_strides = _ncs_strides(x)
    # empty_like keeps x's layout; if even that cannot be flattened, write contiguous and copy into it once.
    target = out if _ncs_strides(out) is not None else torch.empty_like(x, memory_format=torch.contiguous_format)
    cpg = channels // num_groups
    flags = dict(CPG=cpg, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, HAS_ADD=add is not None)
    args = dict(x_ptr=x, out_ptr=target, weight_ptr=x if weight is None else weight.contiguous(),  # (C,): tiny
                bias_ptr=x if bias is None else bias.contiguous(), add_ptr=x if add is None else add, G=num_groups,
                S=spatial, stride_xn=x_strides[0], stride_xc=x_strides[1], stride_xs=x_strides[2],
                **dict(zip(("stride_on", "stride_oc", "stride_os"), _ncs_strides(target))),
                stride_an=0 if add is None else add.stride(0), stride_ac=0 if add is None else add.stride(1),
                eps=eps, SILU=silu, **flags)
    n_groups = batch * num_groups
    chunk = split_chunk(n_groups, cpg, spatial, _sm_count(x.device))
    if chunk is None:
        _group_norm_fused_kernel[(n_groups,)](**args)
    else:
        n_chunks = triton.cdiv(spatial, chunk)
        partials = torch.empty(2, n_groups, n_chunks, dtype=torch.float32, device=x.device)
        stats_args = {k: args[k] for k in ("x_ptr", "add_ptr", "G", "S", "stride_xn", "stride_xc", "stride_xs",
                                           "stride_an", "stride_ac", "CPG", "HAS_ADD")}
        _group_norm_partials_kernel[(n_groups, n_chunks)](partials_ptr=partials, chunk_s=chunk, **stats_args)
        _group_norm_apply_kernel[(n_groups, n_chunks)](partials_ptr=partials, chunk_s=chunk, **args)
    if target is not out:
        out.copy_(target)
    return out


# ---------------------------------------------------------------------------------------------- AOT compile specs
_TRITON_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
# Representative SD shapes per kernel: the fused one-tile case is UNet (N, 1280, 8, 8) (CPG 40, 64 positions),
# the fused loop is UNet (N, 320, 64, 64) kept whole, the split kernels are the VAE decoder (1, 128, 1024, 1024).
_AOT_SHAPES = {"fused one tile": (40, 64, None), "fused loop": (10, 4096, None), "split": (4, 1024 * 1024, 62464)}


def _aot_spec(kernel: Any, variant: str, dtype: torch.dtype, channels_last: bool, config: triton.Config,
              constexprs: dict[str, Any]) -> AotSpec:
    fn = jit_fn(kernel)
    signature = {p.name: ("fp32" if p.name == "eps" else f"*{_TRITON_DTYPE[dtype]}" if p.name.endswith("_ptr")
                          else "i32") for p in fn.params if not p.is_constexpr}
    if "partials_ptr" in signature:
        signature["partials_ptr"] = "*fp32"
    unit = {"stride_ac"} | ({"stride_xc", "stride_oc"} if channels_last else {"stride_xs", "stride_os"})
    unit &= signature.keys()
    layout = "channels_last" if channels_last else "nchw"
    return AotSpec(kernel="group_norm_silu", variant=f"{variant} {_TRITON_DTYPE[dtype]} {layout} tile{config.kwargs['TILE']}"
                   f" w{config.num_warps}", fn=fn, signature=signature, constexprs={**constexprs, **config.kwargs},
                   num_warps=config.num_warps, num_stages=config.num_stages, uses_dot=False,
                   divisible_by_16=tuple(name for name in signature if name not in unit), equal_to_1=tuple(sorted(unit)))


def aot_specs() -> list[AotSpec]:
    """Every shipped config: 3 kernels (the fused one in its one-tile and loop forms) x autotune configs x
    fp16/bf16/fp32 x NCHW/channels_last (the unit stride is specialised, so the layouts compile differently),
    with weight, bias, add and SiLU on (the largest variant)."""
    specs = []
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        for channels_last in (False, True):
            for config in TILE_CONFIGS:
                for variant, (cpg, spatial, chunk) in _AOT_SHAPES.items():
                    args = {"CPG": cpg, "S": spatial, "TILE": config.kwargs["TILE"], "chunk_s": chunk}
                    block_c = _block_c(args)
                    flags = {"CPG": cpg, "HAS_ADD": True, "BLOCK_C": block_c}
                    full = {**flags, "HAS_WEIGHT": True, "HAS_BIAS": True, "SILU": True}
                    if chunk is None:
                        block_s = min(args["TILE"] // block_c, triton.next_power_of_2(spatial))
                        if (variant == "fused one tile") != (cpg <= block_c and spatial <= block_s):
                            continue  # this config does not take the named form for this shape
                        specs.append(_aot_spec(_group_norm_fused_kernel, variant, dtype, channels_last, config,
                                               {**full, "BLOCK_S": block_s, "ONE_TILE": variant == "fused one tile"}))
                        continue
                    block_s = min(args["TILE"] // block_c, _lowest_power_of_2(chunk))
                    specs.append(_aot_spec(_group_norm_partials_kernel, "split partials", dtype, channels_last, config,
                                           {**flags, "BLOCK_S": block_s}))
                    specs.append(_aot_spec(_group_norm_apply_kernel, "split apply", dtype, channels_last, config,
                                           {**full, "BLOCK_S": block_s, "BLOCK_SPLIT": 32}))
    return specs
