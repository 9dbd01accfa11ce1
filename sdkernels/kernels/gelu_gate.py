"""value · gelu(gate) for h = cat([value, gate], -1): the elementwise half of diffusers' GEGLU in one pass.

For callers that keep their own projection (LoRA/PEFT-wrapped or hooked `proj`), so only `chunk -> gelu -> mul`
is fused. GELU is the exact erf form, math in fp32, one rounding to h's dtype. Also home of `rows_view`, the
(..., n) -> (M, n) flattening shared with the fused GEGLU launcher.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from sdkernels._dispatch import note_fallback
from sdkernels.kernels._direct import LaunchSite, cached, contiguous_strides, empty_output
from sdkernels.kernels._tuning import AotSpec, Plan, aot_signature, autotune, first_config_plan, jit_fn

Tensor = torch.Tensor


def rows_view(t: Tensor, op: str, name: str) -> Tensor:
    """t (..., n) as an (M, n) tensor with unit last stride and any row stride, read in place when such a view
    exists (contiguous tensors, slices of the last dim). Otherwise one copy, recorded as a slower path."""
    n = t.shape[-1]
    rows = math.prod(t.shape[:-1])
    if t.stride(-1) == 1 or n == 1:
        try:
            return t.view(rows, n)
        except RuntimeError:  # leading dims that cannot merge into one stride, e.g. a transposed (L, B, n) buffer
            pass
    note_fallback(op, f"{name} has no (rows, n) view with unit last stride", took="a contiguous copy of its input")
    return t.reshape(rows, n).contiguous()


# Φ(g) = 0.5·erfc(-g/√2) with erfc(z) = t·exp(-z² + P(t)), z = |g|/√2 ≥ 0: one coefficient set and no branches
# (libdevice's erff selects between two polynomials per element, which on sm_90 costs ~11 register MOVs of constants
# per element). fp32 outputs: Numerical Recipes' Chebyshev fit (erfcc), t = 1 / (1 + z/2) by fp32 division, P of
# degree 9, relative error < 1.2e-7 for every z. fp16/bf16 outputs (FAST): t = (1 + 0.8·z + 0.24033·z²)^(-1/2), one
# MUFU reciprocal square root (fp32 division is ~8 instructions: range checks and scalings around MUFU.RCP), and
# our minimax P of degree 6 for that t (fitted to mpmath's erfc over t in (0, 1]: relative error < 6.6e-7; an fp32
# simulation: ≤ 1e-6 for |g| < 2 and 2e-6 for |g| < 4, where NR's is 5e-7 / 1.6e-6: the rounding of the exp2 argument
# dominates further out in both). 1e-6 is ~1/500 of an fp16 output's rounding (2^-11 relative), less of bf16's.
# P's coefficients are pre-multiplied by log2(e) for exp2; the constant term also carries the 0.5 (2^-1).
_LOG2E = 1.4426950408889634
_ERFC_NR = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)
_ERFC_FAST = (
    -1.2852294954978305,
    0.8158940083038767,
    0.3810799907167927,
    0.1090631229118331,
    0.059639239216757886,
    -0.15987208573743278,
    0.07942587167002918,
)


def _exp2_coefficients(coefficients: tuple[float, ...]) -> list[tl.constexpr]:
    return [tl.constexpr(c * _LOG2E - (1.0 if i == 0 else 0.0)) for i, c in enumerate(coefficients)]


_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9 = _exp2_coefficients(_ERFC_NR)
_F0, _F1, _F2, _F3, _F4, _F5, _F6 = _exp2_coefficients(_ERFC_FAST)
_NR_P = tl.constexpr(0.5 / 2**0.5)  # 1 + z/2 = 1 + |g|·(1/2)/√2
_FAST_A, _FAST_B = tl.constexpr(0.8 / 2**0.5), tl.constexpr(0.24033333333333334 / 2)  # 0.8·z, 0.24033·z² in |g|
_HALF_LOG2E = tl.constexpr(0.5 * _LOG2E)


@triton.jit
def gelu_erf(g, FAST: tl.constexpr = False):
    """Exact-erf GELU g·Φ(g) of an fp32 tensor (the formula above): FAST for fp16/bf16 outputs, else fp32's."""
    if FAST:
        abs_g = tl.abs(g)
        t = tl.math.rsqrt(1.0 + abs_g * (abs_g * _FAST_B + _FAST_A))  # inf past |g| ≈ 5e19: t = 0, the limit
        p = _F6 * t + _F5
        p = p * t + _F4
        p = p * t + _F3
        p = p * t + _F2
        p = p * t + _F1
        p = p * t + _F0
    else:
        t = 1.0 / (1.0 + tl.abs(g) * _NR_P)
        p = _C9 * t + _C8
        p = p * t + _C7
        p = p * t + _C6
        p = p * t + _C5
        p = p * t + _C4
        p = p * t + _C3
        p = p * t + _C2
        p = p * t + _C1
        p = p * t + _C0
    half_erfc = t * tl.math.exp2(p - g * (g * _HALF_LOG2E))  # 0.5·erfc(|g|/√2), in [0, 0.5]
    return g * tl.where(g >= 0, 1.0 - half_erfc, half_erfc)


def _gelu_gate_configs() -> list[triton.Config]:
    # (rows, columns) per program; about 4-8K elements per program keeps loads 16 B wide and the grid large.
    # The first entry is the interpreter's choice.
    shapes = [(8, 512, 4), (4, 1024, 4), (2, 2048, 8), (16, 256, 4), (32, 128, 4)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=1) for bm, bn, warps in shapes]


GELU_GATE_CONFIGS = _gelu_gate_configs()


def _prune_wide_tiles(configs: list[triton.Config], args: dict) -> list[triton.Config]:
    """Drop tiles much wider than the row (a narrow inner dim would leave most lanes masked)."""
    width = triton.next_power_of_2(args["N"])
    narrow = [c for c in configs if c.kwargs["BLOCK_N"] <= max(width, 128)]
    return narrow or configs


@autotune(GELU_GATE_CONFIGS, key=["M", "N"], prune=_prune_wide_tiles)
@triton.jit
def _gelu_gate_kernel(h_ptr, out_ptr, M, N, stride_hm, stride_om, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # One BLOCK_M x BLOCK_N tile of outputs per program: value = h[m, n], gate = h[m, N + n].
    # out[m, n] = value * 0.5 * gate * (1 + erf(gate / sqrt(2))), all in fp32 (bf16 is upcast on load),
    # rounded once to the output dtype. Row offsets in int64: M * stride can pass 2**31.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows < M)[:, None] & (cols < N)[None, :]

    h_row = h_ptr + rows.to(tl.int64)[:, None] * stride_hm
    value = tl.load(h_row + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    gate = tl.load(h_row + N + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    out = value * gelu_erf(gate, FAST=out_ptr.dtype.element_ty != tl.float32)

    out_ptrs = out_ptr + rows.to(tl.int64)[:, None] * stride_om + cols[None, :]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)


class GeluGateCall:
    """Everything about a call that follows from its signature: output shape, plan, grid and integer arguments.
    Made for an h whose leading dims flatten into one row stride."""

    __slots__ = ("out_shape", "out_strides", "ints", "site")

    def __init__(self, h: Tensor, h_row_stride: int) -> None:
        inner = h.shape[-1] // 2
        rows = math.prod(h.shape[:-1])
        self.out_shape = (*h.shape[:-1], inner)
        self.out_strides = contiguous_strides(self.out_shape)
        self.ints = (rows, inner, h_row_stride, inner)
        key = (h.dtype, inner if inner < 1024 else 1024)  # the table's choice depends on the row width up to 1024
        plan = _plans.get(key)
        if plan is None:
            plan = _plans[key] = first_config_plan(_gelu_gate_kernel, {"h_ptr": h, "M": rows, "N": inner}, {})
        block_m, block_n = plan.constexprs["BLOCK_M"], plan.constexprs["BLOCK_N"]
        grid = (-(-rows // block_m), -(-inner // block_n))
        tuned_grid = lambda m: (-(-rows // m["BLOCK_M"]), -(-inner // m["BLOCK_N"]))  # noqa: E731
        self.site = LaunchSite(plan, grid, (h, h, *self.ints), tuned_grid)

    def __call__(self, h: Tensor) -> Tensor:
        out = empty_output(self.out_shape, self.out_strides, h)
        self.site((h, out, *self.ints), h.device)
        return out


_calls: dict[tuple, GeluGateCall | None] = {}


def gelu_gate_call(h: Tensor) -> GeluGateCall | None:
    """The cached call for this signature, or None when h has no (rows, 2*inner) view with unit last stride or the
    output is empty (then `gelu_gate` copies or returns early)."""
    return cached(_calls, (h.shape, h.stride(), h.dtype), lambda: _make_call(h))


def _make_call(h: Tensor) -> GeluGateCall | None:
    rows, width = math.prod(h.shape[:-1]), h.shape[-1]
    if rows == 0 or width == 0 or (h.stride(-1) != 1 and width > 1):
        return None
    try:
        row_stride = h.view(rows, width).stride(0)
    except RuntimeError:  # leading dims that cannot merge into one stride
        return None
    return GeluGateCall(h, row_stride)


def gelu_gate(h: Tensor) -> Tensor:
    """h (..., 2*inner) -> (..., inner) = h[..., :inner] * gelu(h[..., inner:]), in h's dtype."""
    call = gelu_gate_call(h)
    if call is not None:
        return call(h)
    out_shape = (*h.shape[:-1], h.shape[-1] // 2)
    if math.prod(out_shape) == 0:
        return empty_output(out_shape, contiguous_strides(out_shape), h)
    h2 = rows_view(h, "gelu_gate", "h")  # a copy (counted): h had no (rows, 2*inner) view
    return gelu_gate_call(h2)(h2).view(out_shape)  # type: ignore[misc]


_plans: dict[tuple, Plan] = {}


def aot_specs() -> list[AotSpec]:
    """Every shipped config in fp16 and bf16, specialised as the JIT does for SD shapes (aligned pointers, inner
    and row strides divisible by 16); M is left unspecialised (any token count)."""
    specs = []
    for dtype in ("fp16", "bf16"):
        for config in GELU_GATE_CONFIGS:
            bm, bn = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
            specs.append(
                AotSpec(
                    kernel="gelu_gate",
                    variant=f"{dtype}_m{bm}_n{bn}_w{config.num_warps}",
                    fn=jit_fn(_gelu_gate_kernel),
                    signature=aot_signature(_gelu_gate_kernel, dict.fromkeys(("h_ptr", "out_ptr"), f"*{dtype}")),
                    constexprs={"BLOCK_M": bm, "BLOCK_N": bn},
                    num_warps=config.num_warps,
                    num_stages=config.num_stages,
                    uses_dot=False,
                    divisible_by_16=("h_ptr", "out_ptr", "N", "stride_hm", "stride_om"),
                )
            )
    return specs
