"""Fused Linear + GELU: out = gelu(x Wᵀ + b), one GEMM with the bias and the GELU in its epilogue.

diffusers' `GELU` (SD3's feed-forward: `FeedForward(activation_fn="gelu-approximate")`, hidden·4 wide) writes the
(M, 4·hidden) projection, then reads it back for `F.gelu(approximate="tanh")`. Here each program accumulates an
output tile in fp32 over K (the Triton matmul tutorial's grouped loop, like the GEGLU kernel but one accumulator, not
gated), adds the bias and applies the GELU in registers, and stores the tile once, rounded once.
tanh form: gelu(g) = 0.5·g·(1 + tanh(u)) = g·sigmoid(2u), u = √(2/π)·(g + 0.044715·g³) (no overflow: the
sigmoid saturates to 0 or 1; u is clamped to ±20, where tanh is ±1 in fp32).
Exact form (approximate="none"): 0.5·g·(1 + erf(g/√2)).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sdkernels.kernels import arch
from sdkernels.kernels._rows_gemm import RowsGemmCall, rows_gemm, rows_gemm_call
from sdkernels.kernels._tuning import AotSpec, Plan, autotune, first_config_plan, jit_fn
from sdkernels.kernels.gemm_tiles import grouped_tile

Tensor = torch.Tensor


def _config(block_m: int, block_n: int, block_k: int, stages: int, warps: int) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "GROUP_M": 8}, num_stages=stages, num_warps=warps
    )


# fp16/bf16 (tensor cores): one BLOCK_M x BLOCK_N fp32 accumulator. BLOCK_M >= 64 keeps sm_90 on warpgroup MMA.
# The first entry is the interpreter's choice.
LOW_PRECISION_CONFIGS = [
    _config(64, 128, 64, 3, 4),
    _config(128, 128, 32, 4, 8),
    _config(128, 128, 64, 3, 8),
    _config(128, 64, 64, 4, 4),
    _config(64, 64, 64, 4, 4),
]
# fp32 inputs use IEEE fp32 dots (what F.linear does with TF32 off): FMA, operands in registers, so small tiles.
FP32_CONFIGS = [
    _config(64, 64, 32, 3, 8),
    _config(32, 32, 32, 3, 4),
]


@triton.jit
def _linear_gelu_kernel(
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
    TANH: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)  # W tiles reused from L2

    # Rows/columns past M/N wrap around (modulo) so the K loop loads in bounds without M/N masks; the store masks.
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm + offs_k[None, :]
    w_ptrs = w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn  # (BLOCK_K, BLOCK_N) of Wᵀ

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_in = offs_k < K - k * BLOCK_K  # the K tail reads zeros, which add nothing
        x = tl.load(x_ptrs, mask=k_in[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_in[:, None], other=0.0)
        acc = tl.dot(x, w, acc, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K * stride_wk

    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n).to(tl.float32)[None, :]
    if TANH:
        # |u| > 20: tanh(u) is ±1 in fp32 already; the clamp keeps exp() finite (the interpreter warns on overflow)
        inner = 0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)
        out = acc * tl.sigmoid(2.0 * tl.minimum(tl.maximum(inner, -20.0), 20.0))
    else:
        out = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    out_ptrs = out_ptr + rows.to(tl.int64)[:, None] * stride_om + cols[None, :]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=(rows < M)[:, None] & (cols < N)[None, :])


_TUNE_KEY = ["M", "N", "K"]
_linear_gelu_low_precision = autotune(LOW_PRECISION_CONFIGS, key=_TUNE_KEY)(_linear_gelu_kernel)
_linear_gelu_fp32 = autotune(FP32_CONFIGS, key=_TUNE_KEY)(_linear_gelu_kernel)


def _plan_for(x: Tensor, tokens: int, out_features: int, has_bias: bool, approximate: str) -> Plan:
    key = (arch.arch_of(x.device), x.dtype, has_bias, approximate)
    plan = _plans.get(key)
    if plan is None:  # the table's first config for this arch/dtype (autotuning is opt-in: see _tuning)
        fp32 = x.dtype == torch.float32
        named = {"x_ptr": x, "M": tokens, "N": out_features, "K": x.shape[-1]}
        constexprs = {"HAS_BIAS": has_bias, "TANH": approximate == "tanh"}
        constexprs["DOT_PRECISION"] = "ieee" if fp32 else "tf32"
        plan = _plans[key] = first_config_plan(
            _linear_gelu_fp32 if fp32 else _linear_gelu_low_precision, named, constexprs
        )
    return plan


def linear_gelu_call(x: Tensor, weight: Tensor, bias: Tensor | None, approximate: str) -> RowsGemmCall | None:
    """The cached call for this signature, or None when `linear_gelu` must copy x or the bias first, or x is empty."""
    has_bias = bias is not None
    plan_for = lambda *a: _plan_for(*a, has_bias, approximate)  # noqa: E731
    return rows_gemm_call(_calls, x, weight, bias, weight.shape[0], plan_for, (approximate,))


def linear_gelu(x: Tensor, weight: Tensor, bias: Tensor | None, approximate: str) -> Tensor:
    """x (..., dim), weight (out, dim), bias (out,) or None -> gelu(x Wᵀ + b) of shape (..., out)."""
    has_bias = bias is not None
    plan_for = lambda *a: _plan_for(*a, has_bias, approximate)  # noqa: E731
    return rows_gemm("linear_gelu", _calls, x, weight, bias, weight.shape[0], plan_for, (approximate,))


_plans: dict[tuple, Plan] = {}
_calls: dict[tuple, RowsGemmCall | None] = {}


def aot_specs() -> list[AotSpec]:
    """Every shipped config with SD3's tanh epilogue, specialised as the JIT does for SD3's feed-forward (aligned
    pointers; dim, out and row strides divisible by 16; contiguous weight, so stride_wk == 1); M unspecialised.
    fp16/bf16 must use tensor cores; the fp32 configs are IEEE FMA dots (uses_dot=False: no MMA expected)."""
    shipped = [(dtype, config) for dtype in ("fp16", "bf16") for config in LOW_PRECISION_CONFIGS]
    shipped += [("fp32", config) for config in FP32_CONFIGS]
    specs = []
    for dtype, config in shipped:
        tiles = config.kwargs
        specs.append(
            AotSpec(
                kernel="linear_gelu",
                variant=f"{dtype}_m{tiles['BLOCK_M']}_n{tiles['BLOCK_N']}_k{tiles['BLOCK_K']}"
                f"_s{config.num_stages}_w{config.num_warps}",
                fn=jit_fn(_linear_gelu_kernel),
                signature={
                    "x_ptr": f"*{dtype}",
                    "w_ptr": f"*{dtype}",
                    "b_ptr": f"*{dtype}",
                    "out_ptr": f"*{dtype}",
                    "M": "i32",
                    "N": "i32",
                    "K": "i32",
                    "stride_xm": "i32",
                    "stride_wn": "i32",
                    "stride_wk": "i32",
                    "stride_om": "i32",
                },
                constexprs={
                    "HAS_BIAS": True,
                    "TANH": True,
                    "DOT_PRECISION": "ieee" if dtype == "fp32" else "tf32",
                    **tiles,
                },
                num_warps=config.num_warps,
                num_stages=config.num_stages,
                uses_dot=dtype != "fp32",
                divisible_by_16=("x_ptr", "w_ptr", "b_ptr", "out_ptr", "N", "K", "stride_xm", "stride_wn", "stride_om"),
                equal_to_1=("stride_wk",),
            )
        )
    return specs
