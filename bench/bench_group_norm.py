"""GroupNorm(+temb add)(+SiLU) on every GroupNorm shape of the SD1.5 / SD2.1 / SDXL UNet (batch 2) and VAE
(batch 1), NCHW and channels_last: sdkernels' fused kernel vs eager PyTorch (x + temb -> F.group_norm -> F.silu),
optionally vs torch.compile of the eager sequence (--inductor). Writes bench/results/kernels.csv and
group_norm_silu.png. Without CUDA: says so, runs the compile report, exits 0.

    python -m bench.bench_group_norm [--models sd15,sdxl] [--layouts nchw] [--inductor] [--limit 5]
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from bench.common import DTYPES, Case, Inputs, base_parser, inductor, run_benchmark, select
from sdkernels import ops, reference
from sdkernels.kernels import group_norm as gn_kernel
from sdkernels.tools import sd_shapes, traffic_model

KERNEL = "group_norm_silu"
LAYOUTS = ("nchw", "channels_last")


def eager(inputs: Inputs) -> torch.Tensor:
    """What diffusers runs: ResnetBlock2D adds temb, then norm, then nonlinearity (three kernels + the add)."""
    x = inputs["x"]
    if inputs["temb"] is not None:
        x = x + inputs["temb"].reshape(*inputs["temb"].shape, *([1] * (x.dim() - 2)))
    y = F.group_norm(x, inputs["groups"], inputs["weight"], inputs["bias"], inputs["eps"])
    return F.silu(y) if inputs["silu"] else y


def fused(inputs: Inputs) -> torch.Tensor:
    return ops.group_norm_silu(
        inputs["x"],
        inputs["groups"],
        inputs["weight"],
        inputs["bias"],
        inputs["eps"],
        silu=inputs["silu"],
        add=inputs["temb"],
    )


def fp32_reference(inputs: Inputs) -> torch.Tensor:
    temb = None if inputs["temb"] is None else inputs["temb"].float()
    return reference.group_norm_silu(
        inputs["x"].float(),
        inputs["groups"],
        inputs["weight"].float(),
        inputs["bias"].float(),
        inputs["eps"],
        inputs["silu"],
        temb,
    )


def make_case(
    shape: sd_shapes.GroupNormShape, dtype: str, layout: str, sm_count: int, with_inductor: bool = False
) -> Case:
    torch_dtype = DTYPES[dtype]

    def make_inputs(device: torch.device) -> Inputs:
        batch, channels = shape.batch, shape.channels
        if layout == "channels_last" and len(shape.spatial) == 1:
            # the VAE attention's GroupNorm input: a (B, HW, C) activation seen as (B, C, HW)
            x = torch.randn(batch, shape.spatial[0], channels, dtype=torch_dtype, device=device).transpose(1, 2)
        else:
            x = torch.randn(shape.shape, dtype=torch_dtype, device=device)
            if layout == "channels_last":
                x = x.to(memory_format=torch.channels_last)
        return {
            "x": x,
            "groups": shape.groups,
            "eps": shape.eps,
            "silu": shape.silu,
            "weight": 1 + 0.1 * torch.randn(channels, dtype=torch_dtype, device=device),
            "bias": 0.1 * torch.randn(channels, dtype=torch_dtype, device=device),
            "temb": torch.randn(batch, channels, dtype=torch_dtype, device=device) if shape.add else None,
        }

    providers = {"sdkernels": fused, "eager": eager}
    if with_inductor:
        providers["inductor"] = inductor(eager)
    floor = traffic_model.group_norm_traffic(shape, dtype, sm_count).floor
    return Case(
        KERNEL,
        shape.label,
        shape.model,
        shape.component,
        dtype,
        layout,
        shape.calls,
        make_inputs,
        providers,
        fp32_reference,
        floor,
    )


def build_cases(
    models: list[str],
    dtype: str,
    layouts: tuple[str, ...] = LAYOUTS,
    sm_count: int | None = None,
    with_inductor: bool = False,
) -> list[Case]:
    if sm_count is None:
        sm_count = (
            torch.cuda.get_device_properties(0).multi_processor_count
            if torch.cuda.is_available()
            else gn_kernel.DEFAULT_SM_COUNT
        )
    return [
        make_case(shape, dtype, layout, sm_count, with_inductor)
        for shape in sd_shapes.group_norm_shapes(models)
        for layout in layouts
    ]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated: nchw,channels_last")
    parser.add_argument("--inductor", action="store_true", help="also time torch.compile of the eager sequence")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        return run_benchmark([], args, [KERNEL])
    cases = build_cases(args.models.split(","), args.dtype, tuple(args.layouts.split(",")), with_inductor=args.inductor)
    return run_benchmark(select(cases, args), args, [KERNEL])


if __name__ == "__main__":
    sys.exit(main())
