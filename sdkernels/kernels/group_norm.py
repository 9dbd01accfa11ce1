"""Fused GroupNorm (+ a per-(sample, channel) add) (+ SiLU), NCHW and channels_last read in place: launch policy,
launcher and the shipped configs. The Triton kernels are in sdkernels/kernels/group_norm_kernels.py
(fused) and group_norm_split_kernels.py (split pass), their tiles in group_norm_tiles.py.

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

import math
from dataclasses import dataclass
from typing import Any

import torch

from sdkernels import reference
from sdkernels._dispatch import note_fallback, poison
from sdkernels.kernels._direct import LaunchSite, cached
from sdkernels.kernels._launch import runtime_arg_names
from sdkernels.kernels._tuning import Plan, first_config_plan
from sdkernels.kernels.arch import recorded_arch, sm_count
from sdkernels.kernels.group_norm_kernels import group_norm_fused_kernel
from sdkernels.kernels.group_norm_split_kernels import group_norm_apply_kernel, group_norm_partials_kernel
from sdkernels.kernels.group_norm_tiles import pow2

Tensor = torch.Tensor

# Split policy. Module-level so tests can force the split path on small inputs (FORCE_SPLIT).
PROGRAMS_PER_SM = 4  # split until there are about this many programs per SM
MIN_ELEMENTS_PER_PROGRAM = 8192  # smaller chunks cost a second launch and more than they parallelise
CHUNK_ALIGN = 2048  # split chunks start at multiples of this many positions: aligned, whole tiles (BLOCK_S | 2048)
MAX_SPLIT = 1024  # kernel 2 merges a group's partials as one vector of nextpow2(SPLIT) lanes
DEFAULT_SM_COUNT = 132  # H100; used off CUDA (the interpreter) for the split decision
FORCE_SPLIT: int | None = None  # tests: split every group into about this many chunks (aligned to 16)

# Groups per program policy (small groups). Module-level so tests can pin it (FORCE_GROUPS_PER_PROGRAM).
MIN_PROGRAMS_PER_SM = 2  # on a GPU, pack groups only while the grid keeps this many programs per SM
FORCE_GROUPS_PER_PROGRAM: int | None = None  # tests: this bound (a power of two) instead of the policy's
# Under the interpreter (no GPU: sm_count None) programs run one after another at ~10-50 ms of Python each and
# compile counts mean nothing, so NCHW takes the CPG-shaped tiles that pack a sample's small groups into one program
# (the geometry channels_last uses on a GPU) instead of one program per group: a tiny pipeline's GroupNorm runs ~10x
# faster. The GroupNorm op tests set this False to execute the fixed NCHW tiles a GPU launches.
PACK_NCHW_WHEN_INTERPRETED = True


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
        chunk = _cdiv(_cdiv(spatial, FORCE_SPLIT), 16) * 16
    else:
        wanted = _cdiv(PROGRAMS_PER_SM * sm_count, n_groups)
        split = min(wanted, channels_per_group * spatial // MIN_ELEMENTS_PER_PROGRAM, MAX_SPLIT)
        chunk = _cdiv(_cdiv(spatial, max(split, 1)), CHUNK_ALIGN) * CHUNK_ALIGN
    return chunk if 1 < _cdiv(spatial, chunk) <= MAX_SPLIT else None


# Plain int math on the host: triton.cdiv / next_power_of_2 are constexpr_function objects (~3 µs per call).
def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def max_groups_per_program(batch: int, groups: int, sm_count: int | None) -> int:
    """Bound (a power of two) on the consecutive groups of a sample that one fused program normalises; the kernel
    takes as many as its tile holds (GROUPS_PER_PROGRAM). With a GPU (sm_count) halved until the grid has
    MIN_PROGRAMS_PER_SM programs per SM, down to 1. Without one (sm_count None: the interpreter runs programs one
    after another, ~10 ms of Python each) only the number of groups bounds it."""
    if FORCE_GROUPS_PER_PROGRAM is not None:
        return FORCE_GROUPS_PER_PROGRAM
    bound = pow2(groups)
    while sm_count is not None and bound > 1 and batch * _cdiv(groups, bound) < MIN_PROGRAMS_PER_SM * sm_count:
        bound //= 2
    return bound


# ----------------------------------------------------------------------------------------------------- launcher
@dataclass(frozen=True)
class _Launches:
    """Everything about a call that follows from its signature (shapes, strides, dtype, options): the kernels'
    plans, grids and integer arguments, and where each pointer argument comes from."""

    steps: tuple[tuple[Plan, tuple[int, ...], tuple[Any, ...]], ...]  # (plan, grid, args with _SLOT placeholders)
    partials_shape: tuple[int, ...] | None  # the split path's (2, N*G, SPLIT) fp32 scratch
    contiguous_out: bool  # allocate the output contiguous (x is); else empty_like(x)


# Pointer arguments are filled per call from (x, out, weight, bias, add, partials).
_SLOT = {"x_ptr": 0, "out_ptr": 1, "weight_ptr": 2, "bias_ptr": 3, "add_ptr": 4, "partials_ptr": 5}


class _Slot(int):
    """Marks an argument position that takes the per-call tensor number `int(self)`."""


class GroupNormCall:
    """A call signature's launches as launch sites: a repeated call only allocates the output (and the split path's
    scratch), fills the pointer arguments and launches."""

    __slots__ = ("steps", "partials_shape", "contiguous_out")

    def __init__(self, launches: _Launches, x: Tensor, batch: int, groups: int) -> None:
        self.partials_shape = launches.partials_shape
        self.contiguous_out = launches.contiguous_out
        steps = []
        for plan, grid, template in launches.steps:
            slots = tuple((i, int(a)) for i, a in enumerate(template) if type(a) is _Slot)
            site = LaunchSite(
                plan, grid, [x if type(a) is _Slot else a for a in template], _tuned_grid(plan, grid, batch, groups)
            )
            # the kept template holds no tensor: a cached call must not keep its first input alive
            steps.append((site, [None if type(a) is _Slot else a for a in template], slots))
        self.steps = tuple(steps)

    def __call__(
        self, x: Tensor, weight: Tensor | None, bias: Tensor | None, add: Tensor | None, out: Tensor | None = None
    ) -> Tensor:
        if out is None:
            out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if self.contiguous_out else torch.empty_like(x)
            poison(out)
        partials = None
        if self.partials_shape is not None:
            partials = torch.empty(self.partials_shape, dtype=torch.float32, device=x.device)
        tensors = (x, out, x if weight is None else weight, x if bias is None else bias, x if add is None else add)
        tensors += (partials,)
        device = x.device
        for site, template, slots in self.steps:
            args = template.copy()
            for position, slot in slots:
                args[position] = tensors[slot]
            site(args, device)
        return out


def policy() -> tuple:
    """The policy knobs (tests pin them): a changed policy must not reuse a plan made under another."""
    return (
        FORCE_SPLIT,
        FORCE_GROUPS_PER_PROGRAM,
        MIN_ELEMENTS_PER_PROGRAM,
        CHUNK_ALIGN,
        DEFAULT_SM_COUNT,
        PACK_NCHW_WHEN_INTERPRETED,
    )


_cache: dict[tuple, GroupNormCall | None] = {}


def group_norm_call(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, silu: bool, add: Tensor | None
) -> GroupNormCall | None:
    """The cached call for this signature, or None when the call takes the general path (empty input, 2**31-element
    samples, spatial dims that need a copy, an output layout that cannot be flattened, strided weight or bias)."""
    if (weight is not None and weight.stride(0) != 1) or (bias is not None and bias.stride(0) != 1):
        return None
    key = (
        x.shape,
        x.stride(),
        x.dtype,
        x.device,
        num_groups,
        weight is None,
        bias is None,
        None if add is None else add.stride(),
        eps,
        silu,
        recorded_arch(),
        policy(),
    )
    return cached(_cache, key, lambda: _make_call(x, num_groups, weight, bias, eps, silu, add))


def _make_call(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, silu: bool, add: Tensor | None
) -> GroupNormCall | None:
    launches = _prepare(x, num_groups, weight, bias, eps, silu, add)
    return None if launches is None else GroupNormCall(launches, x, x.shape[0], num_groups)


def group_norm_silu(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, silu: bool, add: Tensor | None
) -> Tensor:
    """SiLU(GroupNorm(x + add[:, :, None, ...])) (SiLU only when `silu`); inputs already checked by sdkernels.ops.
    Returns an output with x's dtype and memory format."""
    if weight is not None and weight.stride(0) != 1:
        weight = weight.contiguous()  # (C,): tiny
    if bias is not None and bias.stride(0) != 1:
        bias = bias.contiguous()
    call = group_norm_call(x, num_groups, weight, bias, eps, silu, add)
    if call is None:  # empty, or a layout the plan cannot describe: the general (slow) path
        return _general(x, num_groups, weight, bias, eps, silu, add)
    return call(x, weight, bias, add)


def _tuned_grid(plan: Plan, grid: tuple[int, ...], batch: int, groups: int):
    if "GROUPS_PER_PROGRAM" not in plan.constexprs:
        return lambda meta: grid  # the split kernels' grid does not depend on the config
    return lambda meta: (batch * _cdiv(groups, meta["GROUPS_PER_PROGRAM"]),)


def _prepare(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, silu: bool, add: Tensor | None
) -> _Launches | None:
    """The cached part of a call, or None when the call takes the general path (empty input, 2**31-element
    samples, spatial dims that need a copy, or an output layout that cannot be flattened)."""
    if x.numel() == 0 or x.numel() // x.shape[0] >= 2**31:
        return None
    x_strides = _ncs_strides(x)
    contiguous_out = x.is_contiguous()
    probe = torch.empty_like(x) if not contiguous_out else x
    out_strides = _ncs_strides(probe)
    if x_strides is None or out_strides is None:
        return None
    return _plan_launches(x, probe, x_strides, out_strides, num_groups, weight, bias, eps, silu, add, contiguous_out)


def _plan_launches(
    x: Tensor,
    out: Tensor,
    x_strides: tuple[int, int, int],
    out_strides: tuple[int, int, int],
    num_groups: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    silu: bool,
    add: Tensor | None,
    contiguous_out: bool,
) -> _Launches:
    batch, channels = x.shape[:2]
    spatial, cpg, n_groups = math.prod(x.shape[2:]), channels // num_groups, batch * num_groups
    has_weight, has_bias, has_add = weight is not None, bias is not None, add is not None
    args: dict[str, Any] = dict(zip(("stride_xn", "stride_xc", "stride_xs"), x_strides, strict=True))
    args |= dict(zip(("stride_on", "stride_oc", "stride_os"), out_strides, strict=True))
    args |= dict(
        x_ptr=x,
        out_ptr=out,
        weight_ptr=x if weight is None else weight,
        bias_ptr=x if bias is None else bias,
        add_ptr=x if add is None else add,
        G=num_groups,
        S=spatial,
        stride_an=0 if add is None else add.stride(0),
        eps=eps,
        stride_ac=0 if add is None else add.stride(1),
        CPG=cpg,
    )
    flags = {"HAS_WEIGHT": has_weight, "HAS_BIAS": has_bias, "HAS_ADD": has_add, "SILU": silu}
    sms = sm_count(x.device)
    args["PACK_NCHW"] = sms is None and PACK_NCHW_WHEN_INTERPRETED  # read by the tile heuristics, not a kernel arg
    chunk = split_chunk(n_groups, cpg, spatial, sms or DEFAULT_SM_COUNT)
    if chunk is None:
        bound = max_groups_per_program(batch, num_groups, sms)
        plan = first_config_plan(group_norm_fused_kernel, args, {**flags, "MAX_GROUPS_PER_PROGRAM": bound})
        per_program = plan.constexprs["GROUPS_PER_PROGRAM"]
        grid = (batch * _cdiv(num_groups, per_program),)
        return _Launches(((plan, grid, _template(plan, args)),), None, contiguous_out)
    grid = (n_groups, _cdiv(spatial, chunk))  # x: N*G < 2**31; y: at most MAX_SPLIT (1024) <= 65535
    args |= {"partials_ptr": x, "chunk_s": chunk}
    partials_plan = first_config_plan(group_norm_partials_kernel, args, {"HAS_ADD": has_add})
    apply_plan = first_config_plan(group_norm_apply_kernel, args, flags)
    steps = tuple((plan, grid, _template(plan, args)) for plan in (partials_plan, apply_plan))
    return _Launches(steps, (2, *grid), contiguous_out)


def _template(plan: Plan, args: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(_Slot(_SLOT[n]) if n in _SLOT else args[n] for n in runtime_arg_names(plan.fn))


def _general(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, silu: bool, add: Tensor | None
) -> Tensor:
    """Calls the cached path cannot describe: empty inputs, 2**31-element samples (visible fallback), spatial dims
    that cannot be flattened in place (one copy), outputs whose layout cannot be flattened (written contiguous,
    copied once)."""
    out = poison(torch.empty_like(x))
    if out.numel() == 0:
        return out
    if x.numel() // x.shape[0] >= 2**31:
        note_fallback("group_norm_silu", "a sample of 2**31 or more elements overflows 32-bit in-group offsets")
        return reference.group_norm_silu(x, num_groups, weight, bias, eps, silu, add)
    if _ncs_strides(x) is None:
        x = x.contiguous()  # e.g. sliced or transposed H/W
    target = out if _ncs_strides(out) is not None else torch.empty_like(x, memory_format=torch.contiguous_format)
    launches = _plan_launches(
        x, target, _ncs_strides(x), _ncs_strides(target), num_groups, weight, bias, eps, silu, add, False
    )
    GroupNormCall(launches, x, x.shape[0], num_groups)(x, weight, bias, add, out=target)
    if target is not out:
        out.copy_(target)
    return out
