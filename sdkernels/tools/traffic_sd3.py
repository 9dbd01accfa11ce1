"""Traffic rows (see sdkernels.tools.traffic_model) for SD3 / SD3.5's ops: joint attention, the fused AdaLN modulation
and the Linear + GELU(tanh) feed-forward GEMM, on the shapes of sdkernels.tools.sd3_shapes.

Eager baselines (what diffusers runs without sdkernels):
- ada_layer_norm: F.layer_norm (read x, write y), y·(1 + scale) (read, write), + shift (read, write).
- linear_gelu: F.linear with the same tile re-reads as our kernel, its (M, N) output written, F.gelu (read, write).
- attention: as for the UNet (unfused math, and a flash-style estimate).
"""

from __future__ import annotations

import triton

from sdkernels.kernels import ada_layer_norm as adaln_kernel
from sdkernels.kernels import linear_gelu as linear_gelu_kernel
from sdkernels.tools import sd3_shapes
from sdkernels.tools.sd_shapes import AttentionShape
from sdkernels.tools.traffic_model import ITEMSIZE, Traffic, attention_traffic

SD3_KERNELS = ("ada_layer_norm", "linear_gelu")


def ada_layer_norm_traffic(shape: sd3_shapes.SD3OpShape, dtype: str) -> Traffic:
    """One program per (16 tokens, sample): x read once, scale and shift rows once per program, out once."""
    e, dim, elements = ITEMSIZE[dtype], shape.dim, shape.batch * shape.tokens * shape.dim
    block_m, _, warps, row_blocks = adaln_kernel.launch_config(dim)
    programs = shape.batch * triton.cdiv(shape.tokens, block_m * row_blocks)
    ours = {"x": e * elements, "scale": e * programs * dim, "shift": e * programs * dim, "out": e * elements}
    eager = e * (2 * elements + 2 * elements + 2 * elements + 2 * shape.batch * dim)
    floor = e * (2 * elements + 2 * shape.batch * dim)
    config = f"{block_m} rows x whole row per step, {row_blocks} steps, {warps} warps, {programs} programs"
    return Traffic(
        "ada_layer_norm", shape.model, "transformer", shape.label, shape.calls, config, ours, {"eager": eager}, floor
    )


def linear_gelu_traffic(shape: sd3_shapes.SD3OpShape, dtype: str) -> Traffic:
    """One program per (BLOCK_M, BLOCK_N) output tile: x read once per column of programs, W once per row."""
    e, m, k, n = ITEMSIZE[dtype], shape.batch * shape.tokens, shape.dim, shape.out
    tuner = linear_gelu_kernel._linear_gelu_fp32 if dtype == "fp32" else linear_gelu_kernel._linear_gelu_low_precision
    config = tuner.configs[0]
    block_m, block_n = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
    programs = triton.cdiv(m, block_m) * triton.cdiv(n, block_n)
    ours = {
        "x": e * programs * block_m * k,
        "weight": e * programs * block_n * k,
        "bias": e * programs * block_n,
        "out": e * m * n,
    }
    eager = sum(ours.values()) + e * 2 * m * n  # + the pre-activation written by F.linear and read by F.gelu
    tiles = {key: config.kwargs[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K")}
    return Traffic(
        "linear_gelu",
        shape.model,
        "transformer",
        shape.label,
        shape.calls,
        f"fused GEMM+GELU(tanh), first config {tiles}",
        ours,
        {"eager": eager},
        e * (m * k + n * k + n + m * n),
        flops=2 * m * k * n,
    )


def sd3_traffic(models: list[str], kernels: list[str], dtype: str, arch: str, image_size: int = 1024) -> list[Traffic]:
    rows: list[Traffic] = []
    for model in models:
        for shape in sd3_shapes.sd3_shapes(model, image_size):
            if shape.op not in kernels:
                continue
            if shape.op == "ada_layer_norm":
                rows.append(ada_layer_norm_traffic(shape, dtype))
            elif shape.op == "linear_gelu":
                rows.append(linear_gelu_traffic(shape, dtype))
            else:
                kind = "joint" if shape.label.startswith("joint") else "attn2"
                attention = AttentionShape(
                    model,
                    "transformer",
                    kind,
                    "self",
                    shape.batch,
                    shape.out,
                    shape.dim,
                    shape.tokens,
                    shape.tokens,
                    shape.calls,
                )
                rows.append(attention_traffic(attention, dtype, arch))
    return rows
