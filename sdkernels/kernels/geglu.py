"""Fused GEGLU: out = (x Wvᵀ + bv) · gelu(x Wgᵀ + bg), one GEMM with the gate in its epilogue.

diffusers' GEGLU projects x to 2·inner features (`proj`, an nn.Linear), chunks the result into value and gate and
returns value · gelu(gate) with the exact erf GELU. Here each program computes the value tile and the gate tile of
the same output columns (W rows n and inner + n) with two fp32 accumulators, so the (M, 2·inner) projection is
never written to memory: only the (M, inner) result is stored, rounded once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sdkernels.kernels import arch
from sdkernels.kernels._rows_gemm import RowsGemmCall, rows_gemm, rows_gemm_call
from sdkernels.kernels._tuning import AotSpec, Plan, aot_signature, autotune, first_config_plan, jit_fn
from sdkernels.kernels.gelu_gate import gelu_erf
from sdkernels.kernels.gemm_tiles import grouped_tile

Tensor = torch.Tensor


def _config(block_m: int, block_n: int, block_k: int, stages: int, warps: int, group_m: int = 8) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "GROUP_M": group_m},
        num_stages=stages,
        num_warps=warps,
    )


# fp16/bf16 (tensor cores). BLOCK_N counts output columns, so a program's MMA width is 2·BLOCK_N (value + gate)
# and it holds 2·BLOCK_M·BLOCK_N fp32 accumulators. BLOCK_M >= 64 keeps sm_90 on warpgroup MMA. Every config
# compiles without spills within shared memory for the archs it is offered on (checked in aot_specs' compile report).
# The first entry is the interpreter's choice.
ALL_ARCH_CONFIGS = [
    _config(64, 128, 32, 4, 4),
    _config(64, 128, 64, 2, 4),
    _config(128, 64, 64, 3, 8),
    _config(128, 64, 32, 4, 4),
    _config(64, 64, 64, 4, 4),
]
# 128 x (2·128) tiles: clean on sm_90 (wgmma keeps the accumulators in ~200 registers) but they spill on sm_80.
SM90_CONFIGS = [
    _config(128, 128, 32, 4, 8),
    _config(128, 128, 64, 3, 8),
]
# fp32 inputs use IEEE fp32 dots (what F.linear does with TF32 off): FMA, operands in registers, so small tiles.
FP32_CONFIGS = [
    _config(64, 64, 32, 3, 8),
    _config(64, 64, 16, 3, 8),
]  # 32x32x32 (4 warps) spills 20 B on sm_90 with the interleaved value/gate tile


def _drop_sm90_only(configs: list[triton.Config], args: dict) -> list[triton.Config]:
    """Offer the SM90_CONFIGS only on compute capability 9.x and up (they spill on 8.x)."""
    x = args["x_ptr"]
    if arch.kind_of(x.device) == "sm90" or (x.device.type != "cuda" and arch.recorded_arch() is None):
        return configs
    return [c for c in configs if not any(c is sm90 for sm90 in SM90_CONFIGS)]


@triton.jit
def _geglu_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_wn,
    stride_wk,
    stride_om,
    HAS_BIAS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # Output tile (BLOCK_M tokens) x (BLOCK_N of the N = inner columns). The W tile interleaves value and gate
    # rows (column 2j = W[n + j], 2j + 1 = W[N + n + j]), so one dot of width 2·BLOCK_N computes both: over K in
    # BLOCK_K steps, acc += x · W_tileᵀ in fp32. The MMA accumulator layout gives each thread adjacent column pairs,
    # so splitting acc into (value, gate) moves no data.
    # Epilogue: out = (value + b[n]) · 0.5·g·(1 + erf(g/√2)) with g = gate + b[N + n]; only (M, N) is stored.
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)  # W tiles reused from L2

    # Rows/columns past M/N wrap around (modulo) so the K loop loads in bounds without M/N masks; the store masks.
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    pair = tl.arange(0, 2 * BLOCK_N)
    w_rows = (pid_n * BLOCK_N + pair // 2) % N + (pair % 2) * N  # value row, gate row, value row, ...
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm + offs_k[None, :]
    w_ptrs = w_ptr + offs_k[:, None] * stride_wk + w_rows.to(tl.int64)[None, :] * stride_wn  # (BLOCK_K, 2·BLOCK_N)

    acc = tl.zeros((BLOCK_M, 2 * BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_in = offs_k < K - k * BLOCK_K  # the K tail reads zeros, which add nothing to the dot
        x = tl.load(x_ptrs, mask=k_in[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_in[:, None], other=0.0)
        acc = tl.dot(x, w, acc, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K * stride_wk

    if HAS_BIAS:  # b[n + j] and b[N + n + j], interleaved as the W rows; masked, not wrapped (no modulo per element)
        pair_cols = pid_n * BLOCK_N + pair // 2
        acc += tl.load(b_ptr + pair_cols + (pair % 2) * N, mask=pair_cols < N, other=0.0).to(tl.float32)[None, :]
    value, gate = tl.split(tl.reshape(acc, (BLOCK_M, BLOCK_N, 2)))
    out = value * gelu_erf(gate, FAST=out_ptr.dtype.element_ty != tl.float32)

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    out_ptrs = out_ptr + rows.to(tl.int64)[:, None] * stride_om + cols[None, :]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=(rows < M)[:, None] & (cols < N)[None, :])


_TUNE_KEY = ["M", "N", "K"]
_geglu_low_precision = autotune(ALL_ARCH_CONFIGS + SM90_CONFIGS, key=_TUNE_KEY, prune=_drop_sm90_only)(_geglu_kernel)
_geglu_fp32 = autotune(FP32_CONFIGS, key=_TUNE_KEY)(_geglu_kernel)


def _plan_for(x: Tensor, tokens: int, inner: int, has_bias: bool) -> Plan:
    key = (arch.arch_of(x.device), x.dtype, has_bias)
    plan = _plans.get(key)
    if plan is None:  # the table's first config for this arch/dtype (autotuning is opt-in: see _tuning)
        fp32 = x.dtype == torch.float32
        named = {"x_ptr": x, "M": tokens, "N": inner, "K": x.shape[-1]}
        constexprs = {"HAS_BIAS": has_bias, "DOT_PRECISION": "ieee" if fp32 else "tf32"}
        plan = _plans[key] = first_config_plan(_geglu_fp32 if fp32 else _geglu_low_precision, named, constexprs)
    return plan


def geglu_call(x: Tensor, weight: Tensor, bias: Tensor | None) -> RowsGemmCall | None:
    """The cached call for this signature, or None when `geglu` must copy x or the bias first, or x is empty."""
    has_bias = bias is not None
    return rows_gemm_call(_calls, x, weight, bias, weight.shape[0] // 2, lambda *a: _plan_for(*a, has_bias))


def geglu(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x (..., dim), weight (2*inner, dim) = [value rows; gate rows], bias (2*inner,) or None -> (..., inner)."""
    has_bias = bias is not None
    return rows_gemm("geglu", _calls, x, weight, bias, weight.shape[0] // 2, lambda *a: _plan_for(*a, has_bias))


_plans: dict[tuple, Plan] = {}
_calls: dict[tuple, RowsGemmCall | None] = {}


# GEGLU's K (the block's channels) in SD1.5 (320/640/1280) and SDXL (640/1280): the compile report gives each build's
# whole-program instruction count per warp at these K (loop body × K/BLOCK_K + the rest) and the epilogue's share.
SD_GEGLU_K = (320, 640, 1280)


def aot_specs() -> list[AotSpec]:
    """Every shipped config, specialised as the JIT does for SD's GEGLU (aligned pointers; dim, inner and row
    strides divisible by 16; contiguous weight, so stride_wk == 1); M (tokens) is left unspecialised.
    fp16/bf16 must use tensor cores; the fp32 configs are IEEE FMA dots (uses_dot=False: no MMA expected)."""
    shipped = [(dtype, config, (80, 90)) for dtype in ("fp16", "bf16") for config in ALL_ARCH_CONFIGS]
    shipped += [(dtype, config, (90,)) for dtype in ("fp16", "bf16") for config in SM90_CONFIGS]
    shipped += [("fp32", config, (80, 90)) for config in FP32_CONFIGS]
    specs = []
    for dtype, config, archs in shipped:
        tiles = config.kwargs
        specs.append(
            AotSpec(
                kernel="geglu",
                variant=f"{dtype}_m{tiles['BLOCK_M']}_n{tiles['BLOCK_N']}_k{tiles['BLOCK_K']}"
                f"_s{config.num_stages}_w{config.num_warps}",
                fn=jit_fn(_geglu_kernel),
                signature=aot_signature(
                    _geglu_kernel, dict.fromkeys(("x_ptr", "w_ptr", "b_ptr", "out_ptr"), f"*{dtype}")
                ),
                constexprs={"HAS_BIAS": True, "DOT_PRECISION": "ieee" if dtype == "fp32" else "tf32", **tiles},
                num_warps=config.num_warps,
                num_stages=config.num_stages,
                uses_dot=dtype != "fp32",
                divisible_by_16=("x_ptr", "w_ptr", "b_ptr", "out_ptr", "N", "K", "stride_xm", "stride_wn", "stride_om"),
                equal_to_1=("stride_wk",),
                archs=archs,
                notes={"k_step": tiles["BLOCK_K"], "run_k": SD_GEGLU_K},
            )
        )
    return specs
