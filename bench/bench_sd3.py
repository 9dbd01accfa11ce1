"""SD3 / SD3.5 transformer ops at 1024² (batch 2, 4096 image + 333 text tokens; SD3.5 medium: hidden 1536, 24 heads,
dual attention in blocks 0-12; SD3.5 large: hidden 2432, 38 heads): the fused AdaLN modulation
(`sdkernels.ada_layer_norm` vs diffusers' LayerNorm -> ·(1 + scale) -> + shift), the feed-forward GEMM + GELU(tanh)
(`sdkernels.linear_gelu` vs F.linear -> F.gelu), and joint attention (`sdkernels.attention` vs SDPA). Writes
bench/results/kernels.csv and plots. Without CUDA: says so, runs the compile report for these kernels, exits 0.

    python -m bench.bench_sd3 [--models sd35m,sd35l] [--match ff] [--limit 2]
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from bench.common import DTYPES, Case, Inputs, base_parser, run_benchmark, select
from sdkernels import ops, reference
from sdkernels.tools import sd3_shapes, traffic_sd3

KERNELS = ["ada_layer_norm", "linear_gelu", "attention"]


def _adaln_case(shape: sd3_shapes.SD3OpShape, dtype: torch.dtype, name: str) -> Case:
    def make_inputs(device: torch.device) -> Inputs:
        emb = torch.randn(shape.batch, 6 * shape.dim, dtype=dtype, device=device) * 0.5
        shift, scale = emb.chunk(6, dim=1)[:2]  # strided chunks, as AdaLayerNormZero passes them
        x = torch.randn(shape.batch, shape.tokens, shape.dim, dtype=dtype, device=device)
        return {"x": x, "scale": scale, "shift": shift}

    def eager(i: Inputs) -> torch.Tensor:
        return F.layer_norm(i["x"], (shape.dim,), eps=1e-6) * (1 + i["scale"][:, None]) + i["shift"][:, None]

    providers = {"sdkernels": lambda i: ops.ada_layer_norm(i["x"], i["scale"], i["shift"], 1e-6), "eager": eager}
    model = traffic_sd3.ada_layer_norm_traffic(shape, name)

    def fp32_reference(i: Inputs) -> torch.Tensor:
        return reference.ada_layer_norm(i["x"].float(), i["scale"].float(), i["shift"].float(), 1e-6)

    return Case(
        "ada_layer_norm", shape.label, shape.model, "transformer", name, "contiguous", shape.calls, make_inputs,
        providers, fp32_reference, model.floor,
    )  # fmt: skip


def _linear_gelu_case(shape: sd3_shapes.SD3OpShape, dtype: torch.dtype, name: str) -> Case:
    def make_inputs(device: torch.device) -> Inputs:
        bound = shape.dim**-0.5  # nn.Linear's init scale
        return {
            "x": torch.randn(shape.batch, shape.tokens, shape.dim, dtype=dtype, device=device),
            "weight": torch.empty(shape.out, shape.dim, dtype=dtype, device=device).uniform_(-bound, bound),
            "bias": torch.empty(shape.out, dtype=dtype, device=device).uniform_(-bound, bound),
        }

    providers = {
        "sdkernels": lambda i: ops.linear_gelu(i["x"], i["weight"], i["bias"], "tanh"),
        "eager": lambda i: F.gelu(F.linear(i["x"], i["weight"], i["bias"]), approximate="tanh"),
    }
    model = traffic_sd3.linear_gelu_traffic(shape, name)

    def fp32_reference(i: Inputs) -> torch.Tensor:
        return reference.linear_gelu(i["x"].float(), i["weight"].float(), i["bias"].float(), "tanh")

    return Case(
        "linear_gelu", shape.label, shape.model, "transformer", name, "contiguous", shape.calls, make_inputs,
        providers, fp32_reference, model.floor, model.flops,
    )  # fmt: skip


def _attention_case(shape: sd3_shapes.SD3OpShape, dtype: torch.dtype, name: str) -> Case:
    def make_inputs(device: torch.device) -> Inputs:
        size = (shape.batch, shape.out, shape.tokens, shape.dim)  # (B, H, L, 64)
        return {k: torch.randn(size, dtype=dtype, device=device) for k in ("q", "k", "v")}

    providers = {
        "sdkernels": lambda i: ops.attention(i["q"], i["k"], i["v"]),
        "sdpa": lambda i: F.scaled_dot_product_attention(i["q"], i["k"], i["v"]),
    }

    def fp32_reference(i: Inputs) -> torch.Tensor:
        return reference.attention(i["q"].float(), i["k"].float(), i["v"].float())

    elements = shape.batch * shape.out * shape.tokens * shape.dim
    flops = 4 * shape.batch * shape.out * shape.tokens * shape.tokens * shape.dim
    return Case(
        "attention", shape.label, shape.model, "transformer", name, "contiguous", shape.calls, make_inputs,
        providers, fp32_reference, DTYPES_BYTES[name] * 4 * elements, flops,
    )  # fmt: skip


DTYPES_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}
_BUILDERS = {"ada_layer_norm": _adaln_case, "linear_gelu": _linear_gelu_case, "attention": _attention_case}


def build_cases(models: list[str], dtype: str, image_size: int = 1024) -> list[Case]:
    return [
        _BUILDERS[shape.op](shape, DTYPES[dtype], dtype)
        for model in models
        for shape in sd3_shapes.sd3_shapes(model, image_size)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.set_defaults(models="sd35m,sd35l")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        return run_benchmark([], args, KERNELS[:2])
    cases = build_cases(args.models.split(","), args.dtype)
    return run_benchmark(select(cases, args), args, KERNELS)


if __name__ == "__main__":
    sys.exit(main())
