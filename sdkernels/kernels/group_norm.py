"""Fused GroupNorm (+ a per-(sample, channel) add) (+ SiLU), NCHW and channels_last read in place: launch policy,
launcher and the shipped configs. The Triton kernels are in sdkernels/kernels/group_norm_kernels.py.

x is viewed as (N, C, S), S = the flattened spatial dims. Statistics are fp32 on h - pivot (the group's first
element, so |mean| >> std loses nothing), centred two-pass per tile, merged with Chan's (count, mean, M2) formula.
Three paths:
- small groups (SD UNet (2, 1280, 8, 8): 2560 elements per group; tiny test UNets: 4-64): one fused program
  normalises up to GROUPS_PER_PROGRAM consecutive groups of a sample in one [groups, C, S] register tile, as many
  as its tile holds, while a GPU keeps MIN_PROGRAMS_PER_SM programs per SM;
- a group bigger than a tile: one fused program per (n, g) loops over it, a statistics pass and an apply pass;
- big groups and few of them (SDXL VAE decoder (1, 128, 1024, 1024): 4.2 M elements per group, only 32 groups):
  grid (N*G, SPLIT), kernel 1 writes per-chunk (mean, M2), kernel 2 merges a group's partials in a fixed order and
  normalises its chunk - deterministic, no atomics.
"""

from __future__ import annotations

import itertools

import torch
import triton

from sdkernels import reference
from sdkernels._dispatch import note_fallback, poison
from sdkernels.kernels._tuning import AotSpec, jit_fn
from sdkernels.kernels.group_norm_kernels import (
    TILE_CONFIGS,
    group_norm_apply_kernel,
    group_norm_fused_kernel,
    group_norm_partials_kernel,
)

Tensor = torch.Tensor

# Split policy. Module-level so tests can force the split path on small inputs (FORCE_SPLIT).
PROGRAMS_PER_SM = 4  # split until there are about this many programs per SM
MIN_ELEMENTS_PER_PROGRAM = 8192  # smaller chunks cost a second launch and more than they parallelise
CHUNK_ALIGN = 1024  # split chunks start at multiples of this many positions: aligned, whole tiles (BLOCK_S | 1024)
MAX_SPLIT = 1024  # kernel 2 merges a group's partials as one vector of next_pow2(SPLIT) lanes
DEFAULT_SM_COUNT = 132  # H100; used off CUDA (the interpreter) for the split decision
FORCE_SPLIT: int | None = None  # tests: split every group into about this many chunks (aligned to 16)

# Groups per program policy (small groups). Module-level so tests can pin it (FORCE_GROUPS_PER_PROGRAM).
MIN_PROGRAMS_PER_SM = 2  # on a GPU, pack groups only while the grid keeps this many programs per SM
FORCE_GROUPS_PER_PROGRAM: int | None = None  # tests: this bound (a power of two) instead of the policy's


# ------------------------------------------------------------------------------------------------------- policy
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


def max_groups_per_program(batch: int, groups: int, sm_count: int | None) -> int:
    """Bound (a power of two) on the consecutive groups of a sample that one fused program normalises; the kernel
    takes as many as its tile holds (GROUPS_PER_PROGRAM). With a GPU (sm_count) halved until the grid has
    MIN_PROGRAMS_PER_SM programs per SM, down to 1. Without one (sm_count None: the interpreter runs programs one
    after another, ~10 ms of Python each) only the number of groups bounds it."""
    if FORCE_GROUPS_PER_PROGRAM is not None:
        return FORCE_GROUPS_PER_PROGRAM
    bound = triton.next_power_of_2(groups)
    while sm_count is not None and bound > 1 and batch * triton.cdiv(groups, bound) < MIN_PROGRAMS_PER_SM * sm_count:
        bound //= 2
    return bound


# ----------------------------------------------------------------------------------------------------- launcher
def group_norm_silu(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, silu: bool, add: Tensor | None
) -> Tensor:
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
        zip(("stride_on", "stride_oc", "stride_os"), _ncs_strides(target), strict=True)
    )
    args |= dict(
        x_ptr=x,
        out_ptr=target,
        weight_ptr=x if weight is None else weight.contiguous(),  # (C,): tiny
        bias_ptr=x if bias is None else bias.contiguous(),
        add_ptr=x if add is None else add,
        G=num_groups,
        S=spatial,
        stride_an=0 if add is None else add.stride(0),
        eps=eps,
        stride_ac=0 if add is None else add.stride(1),
        CPG=cpg,
        HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None,
        HAS_ADD=add is not None,
        SILU=silu,
    )
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else None
    chunk = split_chunk(n_groups, cpg, spatial, sms or DEFAULT_SM_COUNT)
    if chunk is None:
        grid = lambda meta: (batch * triton.cdiv(num_groups, meta["GROUPS_PER_PROGRAM"]),)  # noqa: E731
        group_norm_fused_kernel[grid](MAX_GROUPS_PER_PROGRAM=max_groups_per_program(batch, num_groups, sms), **args)
    else:
        grid = (n_groups, triton.cdiv(spatial, chunk))
        partials = torch.empty(2, *grid, dtype=torch.float32, device=x.device)  # (mean, M2) per chunk
        partials_args = {k: args[k] for k in group_norm_partials_kernel.arg_names if k in args}
        group_norm_partials_kernel[grid](partials_ptr=partials, chunk_s=chunk, **partials_args)
        group_norm_apply_kernel[grid](partials_ptr=partials, chunk_s=chunk, **args)
    if target is not out:
        out.copy_(target)
    return out


# ---------------------------------------------------------------------------------------------- AOT compile specs
def aot_specs() -> list[AotSpec]:
    """Every shipped config: the three kernels (the fused one as one group per tile, several groups per tile and its
    loop) x TILE_CONFIGS x fp16/bf16/fp32 x NCHW/channels_last (they compile differently: the JIT specialises the
    unit stride, and the add's), at representative SD shapes (UNet CPG 40 and 10, VAE decoder CPG 4; several groups
    per tile: UNet CPG 10 at 8x8, and all 32 groups of CPG 4), weight, bias, add, SiLU on."""
    full = {"HAS_WEIGHT": True, "HAS_BIAS": True, "HAS_ADD": True, "SILU": True}
    specs = []
    for element, channels_last, config in itertools.product(("fp16", "bf16", "fp32"), (False, True), TILE_CONFIGS):
        tile = config.kwargs["TILE"]
        split_tile = {"CPG": 4, "BLOCK_C": 4, "BLOCK_S": min(tile // 4, CHUNK_ALIGN)}
        unit = {"stride_ac", "stride_xc", "stride_oc"} if channels_last else {"stride_ac", "stride_xs", "stride_os"}
        one_group = {"ONE_TILE": True, "MAX_GROUPS_PER_PROGRAM": 1, "GROUPS_PER_PROGRAM": 1}
        for kernel, variant, constexprs in (
            (
                group_norm_fused_kernel,
                "fused one tile",
                {**full, **one_group, "CPG": 40, "BLOCK_C": 64, "BLOCK_S": tile // 64},
            ),
            (
                group_norm_fused_kernel,
                "fused groups",
                {
                    **full,
                    "CPG": 10,
                    "BLOCK_C": 16,
                    "BLOCK_S": 64,
                    "ONE_TILE": True,
                    "MAX_GROUPS_PER_PROGRAM": tile // 1024,
                    "GROUPS_PER_PROGRAM": tile // 1024,
                },
            ),
            (
                group_norm_fused_kernel,
                "fused all groups",
                {
                    **full,
                    "CPG": 4,
                    "BLOCK_C": 4,
                    "BLOCK_S": tile // 128,
                    "ONE_TILE": True,
                    "MAX_GROUPS_PER_PROGRAM": 32,
                    "GROUPS_PER_PROGRAM": 32,
                },
            ),
            (
                group_norm_fused_kernel,
                "fused loop",
                {
                    **full,
                    "CPG": 10,
                    "BLOCK_C": 16,
                    "BLOCK_S": tile // 16,
                    "ONE_TILE": False,
                    "MAX_GROUPS_PER_PROGRAM": 1,
                    "GROUPS_PER_PROGRAM": 1,
                },
            ),
            (group_norm_partials_kernel, "split partials", {**split_tile, "HAS_ADD": True}),
            (group_norm_apply_kernel, "split apply", {**full, **split_tile, "BLOCK_SPLIT": 32}),
        ):
            fn = jit_fn(kernel)
            signature = {
                p.name: "fp32"
                if p.name == "eps"
                else "*fp32"
                if p.name == "partials_ptr"
                else f"*{element}"
                if p.name.endswith("_ptr")
                else "i32"
                for p in fn.params
                if not p.is_constexpr
            }
            specs.append(
                AotSpec(
                    kernel="group_norm_silu",
                    fn=fn,
                    signature=signature,
                    constexprs={**constexprs, **config.kwargs},
                    variant=f"{variant} {element} {'channels_last' if channels_last else 'nchw'} tile{tile} "
                    f"w{config.num_warps}",
                    num_warps=config.num_warps,
                    num_stages=config.num_stages,
                    uses_dot=False,
                    divisible_by_16=tuple(n for n in signature if n not in unit and n != "eps"),
                    equal_to_1=tuple(sorted(unit & signature.keys())),
                )
            )
    return specs
