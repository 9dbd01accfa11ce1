"""Fused AdaLayerNorm-Zero modulation: out = LayerNorm(x) · (1 + scale[b]) + shift[b], per token, no affine.

diffusers' AdaLayerNormZero / SD35AdaLayerNormZeroX / AdaLayerNormContinuous run `norm(x)` (one pass writing the
normalised tensor, rounded), then `* (1 + scale)` and `+ shift` (two more elementwise passes, each rounded). Here one
program holds BLOCK_M whole rows (BLOCK_D >= dim) at a time in registers: mean, then the centred variance from the
registers (exact two-pass, no E[x²] - E[x]² cancellation: the GroupNorm kernels' standard), then the modulation,
all in fp32, rounded once. x is read once, the output written once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sdkernels.kernels._direct import LaunchSite, cached, contiguous_strides, empty_output
from sdkernels.kernels._tuning import AotSpec, Plan, jit_fn

Tensor = torch.Tensor
MAX_DIM = 8192  # one row in registers; wider rows take the reference path (SD3.5 large is 2432)
ROW_TILE = 4096  # elements per loop step for narrow rows: several rows side by side
ROWS_PER_PROGRAM = 16  # a power of two >= any BLOCK_M


@triton.jit
def _ada_layer_norm_kernel(
    x_ptr,
    scale_ptr,
    shift_ptr,
    out_ptr,
    seq_len,
    dim,
    stride_xb,
    stride_xl,
    stride_sb,
    stride_hb,
    eps,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ROW_BLOCKS: tl.constexpr,
):
    # Program (l-block, b): ROW_BLOCKS x BLOCK_M tokens l of sample b of x (B, L, dim), BLOCK_M rows at a time; out
    # is contiguous (B, L, dim). All rows of a program share one sample, so its scale/shift rows (chunks of the emb
    # Linear's output: row stride 6·dim or 9·dim, unit column stride) are loaded once per program.
    b = tl.program_id(1).to(tl.int64)
    col = tl.arange(0, BLOCK_D)
    col_ok = col < dim
    scale = tl.load(scale_ptr + b * stride_sb + col, mask=col_ok, other=0.0).to(tl.float32)
    shift = tl.load(shift_ptr + b * stride_hb + col, mask=col_ok, other=0.0).to(tl.float32)
    first = tl.program_id(0) * ROW_BLOCKS * BLOCK_M
    for i in range(ROW_BLOCKS):
        tok = first + i * BLOCK_M + tl.arange(0, BLOCK_M)
        mask = (tok < seq_len)[:, None] & col_ok[None, :]
        x_row = b * stride_xb + tok.to(tl.int64) * stride_xl
        x = tl.load(x_ptr + x_row[:, None] + col[None, :], mask=mask, other=0.0).to(tl.float32)

        mean = tl.sum(x, axis=1) / dim
        centred = tl.where(mask, x - mean[:, None], 0.0)
        var = tl.sum(centred * centred, axis=1) / dim
        rstd = 1.0 / tl.sqrt(var + eps)

        out = centred * rstd[:, None] * (1.0 + scale)[None, :] + shift[None, :]
        out_ptrs = out_ptr + (b * seq_len + tok.to(tl.int64))[:, None] * dim + col[None, :]
        tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)


def launch_config(dim: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_D, num_warps, ROW_BLOCKS) for a row width: whole rows, about ROW_TILE elements per step, 4
    warps up to 2048 elements and 8 above (16 fp32 values per thread at most for SD3.5 large's 4096-wide tile), and
    ROWS_PER_PROGRAM rows per program so scale/shift are read once per 16 tokens, not per token."""
    block_d = triton.next_power_of_2(dim)
    block_m = max(1, min(ROWS_PER_PROGRAM, ROW_TILE // block_d))
    warps = 4 if block_m * block_d <= 2048 else 8
    return block_m, block_d, warps, ROWS_PER_PROGRAM // block_m


class AdaLayerNormCall:
    """Everything about a call that follows from its signature (one config per width: no tuning)."""

    __slots__ = ("out_shape", "out_strides", "ints", "site")

    def __init__(self, x: Tensor, scale: Tensor, shift: Tensor, eps: float) -> None:
        batch, seq_len, dim = x.shape
        self.out_shape = (batch, seq_len, dim)
        self.out_strides = contiguous_strides(self.out_shape)
        self.ints = (seq_len, dim, x.stride(0), x.stride(1), scale.stride(0), shift.stride(0), eps)
        block_m, block_d, warps, row_blocks = launch_config(dim)
        plan = Plan(
            jit_fn(_ada_layer_norm_kernel), {"BLOCK_M": block_m, "BLOCK_D": block_d, "ROW_BLOCKS": row_blocks}, warps, 1
        )
        grid = (-(-seq_len // (block_m * row_blocks)), batch)
        self.site = LaunchSite(plan, grid, (x, scale, shift, x, *self.ints))

    def __call__(self, x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        out = empty_output(self.out_shape, self.out_strides, x)
        self.site((x, scale, shift, out, *self.ints), x.device)
        return out


_calls: dict[tuple, AdaLayerNormCall | None] = {}


def ada_layer_norm_call(x: Tensor, scale: Tensor, shift: Tensor, eps: float) -> AdaLayerNormCall | None:
    """The cached call for this signature, or None when x must be copied first (strided rows) or is empty."""
    if x.numel() == 0 or x.stride(2) != 1:
        return None
    key = (x.shape, x.stride(), scale.stride(), shift.stride(), x.dtype, eps)
    return cached(_calls, key, lambda: AdaLayerNormCall(x, scale, shift, eps))


def ada_layer_norm(x: Tensor, scale: Tensor, shift: Tensor, eps: float) -> Tensor:
    """x (B, L, dim), scale/shift (B, dim) with unit column stride (checked by sdkernels.ops) -> (B, L, dim)."""
    if x.numel() == 0:
        return empty_output(x.shape, contiguous_strides(x.shape), x)
    if x.stride(2) != 1:
        x = x.contiguous()
    return ada_layer_norm_call(x, scale, shift, eps)(x, scale, shift)  # type: ignore[misc]


# SD3 / SD3.5 medium (1536), SD3.5 large (2432) and the tiny pipeline's widths: the configs launch_config picks.
AOT_DIMS = (1536, 2432)


def aot_specs() -> list[AotSpec]:
    """The launch configs for SD3's widths in fp16/bf16/fp32, specialised as the JIT does (aligned pointers, dim and
    row strides divisible by 16); seq_len unspecialised. Elementwise + reductions: no MMA expected."""
    specs = []
    for dtype in ("fp16", "bf16", "fp32"):
        for dim in AOT_DIMS:
            block_m, block_d, warps, row_blocks = launch_config(dim)
            specs.append(
                AotSpec(
                    kernel="ada_layer_norm",
                    variant=f"{dtype}_d{dim}_m{block_m}_w{warps}",
                    fn=jit_fn(_ada_layer_norm_kernel),
                    signature={
                        "x_ptr": f"*{dtype}",
                        "scale_ptr": f"*{dtype}",
                        "shift_ptr": f"*{dtype}",
                        "out_ptr": f"*{dtype}",
                        "seq_len": "i32",
                        "dim": "i32",
                        "stride_xb": "i32",
                        "stride_xl": "i32",
                        "stride_sb": "i32",
                        "stride_hb": "i32",
                        "eps": "fp32",
                    },
                    constexprs={"BLOCK_M": block_m, "BLOCK_D": block_d, "ROW_BLOCKS": row_blocks},
                    num_warps=warps,
                    num_stages=1,
                    uses_dot=False,
                    divisible_by_16=(
                        "x_ptr",
                        "scale_ptr",
                        "shift_ptr",
                        "out_ptr",
                        "dim",
                        "stride_xb",
                        "stride_xl",
                        "stride_sb",
                        "stride_hb",
                    ),
                )
            )
    return specs
