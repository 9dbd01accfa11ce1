"""The byte model behind `python -m sdkernels traffic`: per kernel, the bytes each tensor moves for the launch
config the kernel runs with (logical global loads and stores, re-reads that L2 may serve included), next to the
eager op sequences' bytes and the floor. The baselines are described in sdkernels/tools/traffic.py's help text;
tests/test_traffic.py checks the kernel bytes against the Triton interpreter's loads and stores, tensor by tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import triton
from triton.runtime.autotuner import Heuristics

from sdkernels.kernels import attention_configs
from sdkernels.kernels import geglu as geglu_kernel
from sdkernels.kernels import group_norm as gn_kernel
from sdkernels.kernels import group_norm_kernels as gn_jit
from sdkernels.kernels import group_norm_split_kernels as gn_split_jit
from sdkernels.tools import sd_shapes

ITEMSIZE = {"fp16": 2, "bf16": 2, "fp32": 4}
FLASH_BLOCK_M = 128  # query rows per tile assumed for the flash baseline (FlashAttention-2's forward tile)


@dataclass
class Traffic:
    kernel: str
    model: str
    component: str
    label: str
    calls: int
    config: str  # the launch config / path the kernel bytes assume
    ours: dict[str, int]  # bytes per tensor role (x, weight, out, partials, ...)
    baselines: dict[str, int]  # bytes of each reference op sequence
    floor: int
    flops: int = 0  # multiply-adds x 2 of the matrix kernels

    @property
    def total(self) -> int:
        return sum(self.ours.values())


# ---------------------------------------------------------------------------------------------- GroupNorm + SiLU
def kernel_config(kernel: Any, args: dict[str, Any]) -> dict[str, Any]:
    """The constexprs an autotuned kernel runs with for `args`: the first config that survives the kernel's own
    prune (the interpreter's choice; a GPU's autotuner may time the other survivors and pick one), with the
    kernel's @triton.heuristics applied in order."""
    configs = list(kernel.configs)
    if kernel.early_config_prune is not None:
        configs = kernel.early_config_prune(configs, args)
    values = {**args, **configs[0].kwargs}
    fn = kernel.fn
    while isinstance(fn, Heuristics):
        for name, heuristic in fn.values.items():
            values[name] = heuristic(values)
        fn = fn.fn
    return values


def group_norm_bytes(
    batch: int,
    channels: int,
    spatial: int,
    groups: int,
    itemsize: int,
    *,
    add: bool,
    affine: bool = True,
    sm_count: int = gn_kernel.DEFAULT_SM_COUNT,
    channels_last: bool = False,
) -> tuple[dict[str, int], str]:
    """Bytes per tensor of sdkernels' GroupNorm(+SiLU) and the path it takes (fused one-tile, with one or several
    groups per program / fused loop / split), on a GPU with `sm_count` SMs.

    Each program of each kernel loads the first x and first add of each of its groups as pivots of the shifted
    statistics (the add pivot comes from x, the dummy pointer, when there is no add); the add vector is read once
    per program and pass over x, weight/bias once per program (a one-tile program with several groups reads each
    channel once: the same bytes as one program per group); the split path writes (mean, M2) per chunk in fp32 and
    every apply program reads all partials of its group."""
    cpg, elements, n_groups = channels // groups, batch * channels * spatial, batch * groups
    chunk = gn_kernel.split_chunk(n_groups, cpg, spatial, sm_count)
    args = {
        "CPG": cpg,
        "S": spatial,
        "stride_xs": channels if channels_last else 1,  # SD's NCHW tensors: unit spatial stride
        "chunk_s": chunk,
        "HAS_ADD": add,
        "HAS_WEIGHT": affine,
        "HAS_BIAS": affine,
        "SILU": True,
        "MAX_GROUPS_PER_PROGRAM": gn_kernel.max_groups_per_program(batch, groups, sm_count),
    }
    if chunk is None:
        cfg = kernel_config(gn_jit.group_norm_fused_kernel, args)
        passes, chunks, partials = (1 if cfg["ONE_TILE"] else 2), 1, 0
        programs = batch * triton.cdiv(groups, cfg["GROUPS_PER_PROGRAM"])
        path = (
            f"fused {'one-tile' if cfg['ONE_TILE'] else 'loop (stats pass + apply pass)'}: {programs} programs "
            f"of {cfg['GROUPS_PER_PROGRAM']} group(s), TILE={cfg['TILE']} BLOCK_C={cfg['BLOCK_C']} "
            f"BLOCK_S={cfg['BLOCK_S']}"
        )
        pivots = n_groups
    else:
        cfg = kernel_config(gn_split_jit.group_norm_apply_kernel, args)
        chunks = triton.cdiv(spatial, chunk)
        passes, programs = 2, n_groups * chunks
        path = (
            f"split: {n_groups} groups x {chunks} chunks of {chunk} positions, stats kernel + apply kernel, "
            f"TILE={cfg['TILE']} BLOCK_C={cfg['BLOCK_C']} BLOCK_S={cfg['BLOCK_S']}"
        )
        partials = 4 * (2 * programs + 2 * programs * chunks)  # (mean, M2) stored, then read by every program
        pivots = 2 * programs
    ours = {
        "x": itemsize * (passes * elements + pivots * (1 if add else 2)),
        "add": itemsize * (passes * batch * channels * chunks + pivots) if add else 0,
        "weight": itemsize * batch * channels * chunks if affine else 0,
        "bias": itemsize * batch * channels * chunks if affine else 0,
        "partials": partials,
        "out": itemsize * elements,
    }
    return ours, path


def group_norm_traffic(shape: sd_shapes.GroupNormShape, dtype: str, sm_count: int) -> Traffic:
    e, spatial = ITEMSIZE[dtype], math.prod(shape.spatial)
    elements, per_channel = shape.batch * shape.channels * spatial, shape.batch * shape.channels
    ours, path = group_norm_bytes(
        shape.batch, shape.channels, spatial, shape.groups, e, add=shape.add, sm_count=sm_count
    )
    eager = e * (3 * elements + 2 * shape.channels)  # F.group_norm: x read by moments and apply kernels; y out
    eager += e * 2 * elements if shape.silu else 0  # F.silu: y in, z out
    eager += e * (2 * elements + per_channel) if shape.add else 0  # x + temb[:, :, None, None]
    floor = e * (2 * elements + 2 * shape.channels + (per_channel if shape.add else 0))
    return Traffic(
        "group_norm_silu", shape.model, shape.component, shape.label, shape.calls, path, ours, {"eager": eager}, floor
    )


# ---------------------------------------------------------------------------------------------------------- GEGLU
def geglu_config(dtype: str) -> triton.Config:
    """The config the bytes assume: the first autotune candidate (what the interpreter runs)."""
    tuner = geglu_kernel._geglu_fp32 if dtype == "fp32" else geglu_kernel._geglu_low_precision
    return tuner.configs[0]


def geglu_bytes(
    rows: int, dim: int, inner: int, itemsize: int, config: triton.Config, bias: bool = True
) -> dict[str, int]:
    """One program per (BLOCK_M, BLOCK_N) output tile reads BLOCK_M full rows of x (rows past M wrap around and
    are re-read) and the value and gate rows of W for its BLOCK_N columns: x is read once per column of programs,
    W once per row of programs, the bias (masked past inner, not wrapped) once per row of programs. Only the
    (M, inner) result is written."""
    block_m, block_n = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
    programs_m, programs_n = triton.cdiv(rows, block_m), triton.cdiv(inner, block_n)
    programs = programs_m * programs_n
    return {
        "x": itemsize * programs * block_m * dim,
        "weight": itemsize * programs * 2 * block_n * dim,
        "bias": itemsize * programs_m * 2 * inner if bias else 0,
        "out": itemsize * rows * inner,
    }


def geglu_traffic(shape: sd_shapes.GegluShape, dtype: str) -> Traffic:
    e, m, k, n = ITEMSIZE[dtype], shape.rows, shape.dim, shape.inner
    config = geglu_config(dtype)
    inputs = e * (m * k + 2 * n * k + 2 * n)
    ours = geglu_bytes(m, k, n, e, config)
    linear = ours["x"] + ours["weight"] + ours["bias"] + e * 2 * m * n  # + the (M, 2*inner) projection written
    eager = linear + e * 2 * m * n + e * 3 * m * n  # gelu(gate): 1 in 1 out; value * g: 2 in 1 out
    with_gelu_gate = linear + e * 3 * m * n  # F.linear + sdkernels.gelu_gate (the LoRA-safe path)
    tiles = {key: config.kwargs[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K")}
    return Traffic(
        "geglu",
        shape.model,
        "unet",
        shape.label,
        shape.calls,
        f"fused GEMM+gate, first config {tiles}",
        ours,
        {"eager": eager, "linear+gelu_gate": with_gelu_gate},
        inputs + e * m * n,
        flops=2 * m * k * 2 * n,
    )


def gelu_gate_traffic(shape: sd_shapes.GegluShape, dtype: str) -> Traffic:
    """The elementwise half alone: h (M, 2*inner) -> value * gelu(gate), read once, written once."""
    e, mn = ITEMSIZE[dtype], shape.rows * shape.inner
    label = shape.label.replace("geglu", "gelu_gate")
    return Traffic(
        "gelu_gate",
        shape.model,
        "unet",
        label,
        shape.calls,
        "elementwise, one pass",
        {"h": e * 2 * mn, "out": e * mn},
        {"eager": e * 5 * mn},
        e * 3 * mn,
    )


# ------------------------------------------------------------------------------------------------------ attention
def attention_config(head_dim: int, dtype: str, arch: str) -> triton.Config:
    """The first config of the kernel's table row for this GPU kind, dtype and head dim (fp32 always uses the
    sm80 row; the interpreter uses sm80 too)."""
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    bucket = attention_configs.head_dim_bucket(head_dim, torch_dtype)
    key = ("any", "fp32", bucket, False) if dtype == "fp32" else (arch, "half", bucket, False)
    table = attention_configs.DV_SPLIT_TABLE if bucket == 512 else attention_configs.PIECES_TABLE
    return table[key][0]


def attention_bytes(
    batch_heads: int, lq: int, lk: int, head_dim: int, itemsize: int, config: triton.Config
) -> dict[str, int]:
    """Pieces kernel (D ≤ 256): Q read once, K and V once per query tile of BLOCK_M rows. dv-split kernel
    (D = 512): each of the D/DV_CHUNK column programs re-reads Q for every key tile and K for every query tile
    (QKᵀ is recomputed per output chunk); V is read once per query tile in total."""
    kw = config.kwargs
    m_tiles = triton.cdiv(lq, kw["BLOCK_M"])
    q, kv, out = batch_heads * lq * head_dim, batch_heads * lk * head_dim, batch_heads * lq * head_dim
    if "DV_CHUNK" not in kw:  # the pieces kernel
        return {"q": itemsize * q, "k": itemsize * m_tiles * kv, "v": itemsize * m_tiles * kv, "out": itemsize * out}
    dv_chunks, n_tiles = triton.cdiv(head_dim, kw["DV_CHUNK"]), triton.cdiv(lk, kw["BLOCK_N"])
    return {
        "q": itemsize * dv_chunks * n_tiles * q,
        "k": itemsize * dv_chunks * m_tiles * kv,
        "v": itemsize * m_tiles * kv,
        "out": itemsize * out,
    }


def attention_flops(shape: sd_shapes.AttentionShape) -> int:
    return 4 * shape.batch * shape.heads * shape.lq * shape.lk * shape.head_dim  # QKᵀ and PV


def attention_traffic(shape: sd_shapes.AttentionShape, dtype: str, arch: str) -> Traffic:
    e, bh = ITEMSIZE[dtype], shape.batch * shape.heads
    q = o = bh * shape.lq * shape.head_dim
    kv, scores = bh * shape.lk * shape.head_dim, bh * shape.lq * shape.lk
    config = attention_config(shape.head_dim, dtype, arch)
    # Unfused math (diffusers' AttnProcessor): S = scale·QKᵀ written, softmax reads S writes P, P·V reads P.
    math_bytes = e * (q + kv + scores) + e * 2 * scores + e * (scores + kv + o)
    flash = e * (q + o + 2 * triton.cdiv(shape.lq, FLASH_BLOCK_M) * kv)
    name = "pieces" if shape.head_dim <= attention_configs.MAX_PIECES_HEAD_DIM else "dv-split"
    return Traffic(
        "attention",
        shape.model,
        shape.component,
        shape.label,
        shape.calls,
        f"{name} kernel, {arch} first config {config.kwargs}",
        attention_bytes(bh, shape.lq, shape.lk, shape.head_dim, e, config),
        {"eager-math": math_bytes, f"flash-est(M={FLASH_BLOCK_M})": flash},
        e * (q + 2 * kv + o),
        flops=attention_flops(shape),
    )
