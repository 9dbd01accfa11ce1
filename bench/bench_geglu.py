"""GEGLU on every FeedForward of the SD1.5 / SD2.1 / SDXL UNet at batch 2 (x: (2, tokens, dim), W: (8*dim, dim)):
sdkernels' fused GEMM+gate kernel, and F.linear + sdkernels.gelu_gate (the path kept for LoRA-wrapped
projections), vs eager diffusers (F.linear -> chunk -> F.gelu -> mul), optionally vs torch.compile of it
(--inductor). Headline metric TFLOP/s of the projection (2*M*dim*2*inner). Writes bench/results/kernels.csv and
geglu.png. Without CUDA: says so, runs the compile report, exits 0.

    python -m bench.bench_geglu [--models sd15,sdxl] [--inductor] [--limit 2]
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from bench.common import DTYPES, Case, Inputs, base_parser, inductor, run_benchmark, select
from sdkernels import ops, reference
from sdkernels.tools import sd_shapes, traffic_model

KERNEL = "geglu"


def eager(inputs: Inputs) -> torch.Tensor:
    """diffusers' GEGLU.forward: proj, chunk into (value, gate), value * gelu(gate) with the exact erf GELU."""
    value, gate = F.linear(inputs["x"], inputs["weight"], inputs["bias"]).chunk(2, dim=-1)
    return value * F.gelu(gate)


def fused(inputs: Inputs) -> torch.Tensor:
    return ops.geglu(inputs["x"], inputs["weight"], inputs["bias"])


def linear_then_gelu_gate(inputs: Inputs) -> torch.Tensor:
    return ops.gelu_gate(F.linear(inputs["x"], inputs["weight"], inputs["bias"]))


def fp32_reference(inputs: Inputs) -> torch.Tensor:
    return reference.geglu(inputs["x"].float(), inputs["weight"].float(), inputs["bias"].float())


def make_case(shape: sd_shapes.GegluShape, dtype: str, with_inductor: bool = False) -> Case:
    torch_dtype = DTYPES[dtype]

    def make_inputs(device: torch.device) -> Inputs:
        # nn.Linear's init scale, so the gate sees O(1) values as in a trained model
        bound = shape.dim**-0.5
        weight = torch.empty(2 * shape.inner, shape.dim, dtype=torch_dtype, device=device).uniform_(-bound, bound)
        return {
            "x": torch.randn(shape.batch, shape.tokens, shape.dim, dtype=torch_dtype, device=device),
            "weight": weight,
            "bias": torch.empty(2 * shape.inner, dtype=torch_dtype, device=device).uniform_(-bound, bound),
        }

    providers = {"sdkernels": fused, "sdkernels-gelu_gate": linear_then_gelu_gate, "eager": eager}
    if with_inductor:
        providers["inductor"] = inductor(eager)
    model = traffic_model.geglu_traffic(shape, dtype)
    return Case(
        KERNEL,
        shape.label,
        shape.model,
        "unet",
        dtype,
        "contiguous",
        shape.calls,
        make_inputs,
        providers,
        fp32_reference,
        model.floor,
        model.flops,
    )


def build_cases(models: list[str], dtype: str, with_inductor: bool = False) -> list[Case]:
    return [make_case(shape, dtype, with_inductor) for shape in sd_shapes.geglu_shapes(models)]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--inductor", action="store_true", help="also time torch.compile of the eager sequence")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        return run_benchmark([], args, [KERNEL, "gelu_gate"])
    cases = build_cases(args.models.split(","), args.dtype, args.inductor)
    return run_benchmark(select(cases, args), args, [KERNEL, "gelu_gate"])


if __name__ == "__main__":
    sys.exit(main())
