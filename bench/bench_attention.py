"""Attention on every layer shape of SD1.5 / SD2.1 / SDXL (UNet self + cross at batch 2) and the VAE mid-block
(batch 1, one head of 512): sdkernels' flash attention vs torch SDPA (default dispatch, and each fused backend
forced: flash, mem-efficient, cuDNN), xformers when installed, optionally SDPA's math path (--math). q/k/v are
(B, H, L, D) views of (B, L, H*D) projections, exactly as diffusers' AttnProcessor2_0 passes them. Headline metric
TFLOP/s (4*B*H*Lq*Lk*D). Writes bench/results/kernels.csv and attention.png. Without CUDA: says so, runs the
compile report, exits 0.

    python -m bench.bench_attention [--models sd15] [--match vae] [--math]
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.common import DTYPES, Case, Inputs, base_parser, run_benchmark, select
from sdkernels import ops, reference
from sdkernels.kernels import attention_configs
from sdkernels.tools import sd_shapes, traffic_model

KERNEL = "attention"
FORCED_BACKENDS = {
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
}


def fused(inputs: Inputs) -> torch.Tensor:
    return ops.attention(inputs["q"], inputs["k"], inputs["v"])


def sdpa(inputs: Inputs) -> torch.Tensor:
    return F.scaled_dot_product_attention(inputs["q"], inputs["k"], inputs["v"])


def forced(backend: SDPBackend) -> Callable[[Inputs], torch.Tensor]:
    """SDPA restricted to one backend; raises (recorded as 'failed' in the CSV) where that backend cannot run."""

    def run(inputs: Inputs) -> torch.Tensor:
        with sdpa_kernel([backend]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a rejecting backend warns per reason before it raises; the CSV notes it
            return F.scaled_dot_product_attention(inputs["q"], inputs["k"], inputs["v"])

    return run


def xformers_attention(inputs: Inputs) -> torch.Tensor:
    import xformers.ops

    # xformers takes (B, L, H, D), which is what the projections are before diffusers' transpose
    q, k, v = (inputs[name].transpose(1, 2) for name in ("q", "k", "v"))
    return xformers.ops.memory_efficient_attention(q, k, v).transpose(1, 2)


def fp32_reference(inputs: Inputs) -> torch.Tensor:
    return reference.attention(inputs["q"].float(), inputs["k"].float(), inputs["v"].float())


def make_case(shape: sd_shapes.AttentionShape, dtype: str, arch: str, with_math: bool = False) -> Case:
    torch_dtype = DTYPES[dtype]

    def make_inputs(device: torch.device) -> Inputs:
        def heads_view(tokens: int) -> torch.Tensor:
            projection = torch.randn(
                shape.batch, tokens, shape.heads * shape.head_dim, dtype=torch_dtype, device=device
            )
            return projection.view(shape.batch, tokens, shape.heads, shape.head_dim).transpose(1, 2)

        return {"q": heads_view(shape.lq), "k": heads_view(shape.lk), "v": heads_view(shape.lk)}

    providers = {"sdkernels": fused, "sdpa": sdpa, **{name: forced(b) for name, b in FORCED_BACKENDS.items()}}
    if importlib.util.find_spec("xformers") is not None:
        providers["xformers"] = xformers_attention
    if with_math:
        providers["sdpa-math"] = forced(SDPBackend.MATH)
    model = traffic_model.attention_traffic(shape, dtype, arch)
    return Case(
        KERNEL,
        shape.label,
        shape.model,
        shape.component,
        dtype,
        "bhld-view",
        shape.calls,
        make_inputs,
        providers,
        fp32_reference,
        model.floor,
        model.flops,
    )


def build_cases(models: list[str], dtype: str, with_math: bool = False) -> list[Case]:
    # the config row this GPU runs, so the CSV's floor/flops match what `sdkernels traffic --arch` reports
    arch = attention_configs.arch_kind(torch.device("cuda")) if torch.cuda.is_available() else "sm90"
    return [make_case(shape, dtype, arch, with_math) for shape in sd_shapes.attention_shapes(models)]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--math", action="store_true", help="also time SDPA's unfused math backend")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        return run_benchmark([], args, [KERNEL])
    return run_benchmark(select(build_cases(args.models.split(","), args.dtype, args.math), args), args, [KERNEL])


if __name__ == "__main__":
    sys.exit(main())
