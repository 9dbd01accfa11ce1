"""`python -m sdkernels traffic`: the bytes each sdkernels kernel moves on Stable Diffusion's real shapes, next to
what eager PyTorch's op sequence moves and the floor (every input read once, every output written once).

Kernel bytes are derived from each kernel's tiling, for the launch config stated per row (the first autotune
candidate that survives the kernel's own pruning, i.e. what the interpreter runs; on a GPU the autotuner may time
the others and pick a different tile, which changes the re-read counts): logical global loads and stores, i.e.
what the kernel requests, including re-reads that a GPU may serve from L2. The model is exact for that config:
tests/test_traffic.py counts the bytes the kernels load and store under the Triton interpreter and compares them
tensor by tensor.

Eager baselines (the op sequence diffusers runs without sdkernels):
- GroupNorm -> SiLU: [x + temb (read x, write h)], F.group_norm as PyTorch's CUDA kernel does it (a moments kernel
  reads x, an apply kernel reads x and writes y), F.silu (read y, write z). A channels_last copy is not counted.
- GEGLU: F.linear with the same tile re-reads as our kernel (so the difference is exactly what fusion saves), its
  (M, 2*inner) output written, gelu(gate) (read, write), value * g (2 reads, 1 write).
- attention: unfused math (S = scale*QK^T written, softmax reads S writes P, P@V reads P), and a flash-style
  estimate (K/V re-read per 128-query tile); matmul operands of the unfused path are counted once.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
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
KERNELS = ("group_norm_silu", "geglu", "gelu_gate", "attention", "ada_layer_norm", "linear_gelu")


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


# -------------------------------------------------------------------------------------------------------- table
def collect(models: list[str] | None, kernels: list[str], dtype: str, arch: str, sm_count: int) -> list[Traffic]:
    from sdkernels.tools import sd3_shapes, traffic_sd3  # SD3 / SD3.5 transformer rows (that module imports this one)

    sd3_models = [m for m in (models or []) if m in sd3_shapes.SD3_MODELS]
    models = None if models is None else [m for m in models if m not in sd3_shapes.SD3_MODELS]
    rows: list[Traffic] = []
    if sd3_models:
        rows += traffic_sd3.sd3_traffic(sd3_models, kernels, dtype, arch)
    if models == []:
        return rows
    if "group_norm_silu" in kernels:
        rows += [group_norm_traffic(s, dtype, sm_count) for s in sd_shapes.group_norm_shapes(models)]
    if "geglu" in kernels:
        rows += [geglu_traffic(s, dtype) for s in sd_shapes.geglu_shapes(models)]
    if "gelu_gate" in kernels:
        rows += [gelu_gate_traffic(s, dtype) for s in sd_shapes.geglu_shapes(models)]
    if "attention" in kernels:
        rows += [attention_traffic(s, dtype, arch) for s in sd_shapes.attention_shapes(models)]
    return rows


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def _grid(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [
        [c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        for line in [header, *body]
    ]
    return "\n".join("  ".join(line) for line in lines)


def totals(rows: list[Traffic]) -> list[dict]:
    """Per (kernel, model, component): bytes of one UNet step / VAE pass, summed over shapes x calls."""
    acc: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        slot = acc[(r.kernel, r.model, r.component)]
        slot["ours"] += r.total * r.calls
        slot["floor"] += r.floor * r.calls
        for name, value in r.baselines.items():
            slot[name] += value * r.calls
    return [{"kernel": k, "model": m, "component": c, **v} for (k, m, c), v in acc.items()]


def format_text(rows: list[Traffic], dtype: str) -> str:
    out = [
        f"Bytes moved per call, {dtype}, MB = 1e6 bytes. ours = logical global loads + stores of the sdkernels "
        "kernel for the config named below (re-reads that L2 may serve included); baselines = the eager op "
        "sequences described in `python -m sdkernels traffic --help`; floor = inputs read once, outputs written "
        "once."
    ]
    for kernel in KERNELS:
        selected = [r for r in rows if r.kernel == kernel]
        if not selected:
            continue
        names = list(selected[0].baselines)
        header = [
            "shape",
            "calls",
            "ours MB",
            *(f"{n} MB" for n in names),
            "floor MB",
            "ours/floor",
            *(f"{n}/ours" for n in names),
        ]
        body = [
            [
                r.label,
                str(r.calls),
                _mb(r.total),
                *(_mb(r.baselines[n]) for n in names),
                _mb(r.floor),
                f"{r.total / r.floor:.2f}",
                *(f"{r.baselines[n] / r.total:.2f}" for n in names),
            ]
            for r in selected
        ]
        out += ["", f"== {kernel}", _grid(header, body), "config assumed per shape:"]
        out += [f"  {r.label}: {r.config}" for r in selected]
    summary = totals(rows)
    if summary:
        out += ["", "== per UNet/transformer step (batch 2) / VAE encode or decode (batch 1): sum of bytes x calls, MB"]
        body = [
            [
                f"{t['kernel']} {t['model']}-{t['component']}",
                _mb(t["ours"]),
                "  ".join(
                    f"{k}={_mb(v)}" for k, v in t.items() if k not in ("kernel", "model", "component", "ours", "floor")
                ),
                _mb(t["floor"]),
            ]
            for t in summary
        ]
        out.append(_grid(["kernel / part", "ours", "baselines", "floor"], body))
    return "\n".join(out)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sdkernels traffic", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable rows and totals")
    parser.add_argument(
        "--models", default=",".join(sd_shapes.MODELS), help="comma-separated: sd15,sd21,sdxl and sd3m,sd35m,sd35l"
    )
    parser.add_argument("--kernel", action="append", choices=KERNELS, help="only these kernels (repeatable)")
    parser.add_argument("--dtype", default="fp16", choices=sorted(ITEMSIZE))
    parser.add_argument(
        "--arch",
        default="sm90",
        choices=("sm80", "sm90", "small"),
        help="attention config row to assume (sm90 = H100, sm80 = A100)",
    )
    parser.add_argument(
        "--sm-count",
        type=int,
        default=gn_kernel.DEFAULT_SM_COUNT,
        help="SMs for the GroupNorm split decision (132 = H100 SXM, 108 = A100)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    models = [m for m in args.models.split(",") if m]
    rows = collect(models, args.kernel or list(KERNELS), args.dtype, args.arch, args.sm_count)
    if args.json:
        print(
            json.dumps(
                {
                    "dtype": args.dtype,
                    "arch": args.arch,
                    "sm_count": args.sm_count,
                    "rows": [{**asdict(r), "ours_total": r.total} for r in rows],
                    "totals": totals(rows),
                },
                indent=1,
            )
        )
    else:
        print(format_text(rows, args.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
