"""`python -m sdkernels coldstart`: every distinct Triton compile one text-to-image generation triggers on a GPU
architecture, computed without a GPU, and optionally compiled ahead of time.

The generation is replayed on the meta device (sdkernels.replay: one UNet step at the guidance batch, then the VAE
decode) with kernel launches recorded and specialised by Triton's own argument binder for the target
architecture, so the list is exactly what a first run compiles. `--compile` compiles the list in parallel worker
processes into Triton's on-disk cache (what `sdkernels.warmup` does on a GPU machine) and prints the seconds.
`--max-compiles N` exits 1 above N (CI's budget check).
"""

from __future__ import annotations

import argparse
import collections
import time
from typing import Any

import torch

from sdkernels.kernels._launch import Launch
from sdkernels.replay import record_generation
from sdkernels.tools.sd_model_configs import UNET_CONFIGS, VAE_CONFIGS

MODELS = {"sd15": "sd15", "sd2": "sd21", "sdxl": "sdxl"}
SD3_MODELS = ("sd3m", "sd35m", "sd35l")  # transformer pipelines: sdkernels.tools.coldstart_sd3
ARCHS = (80, 86, 89, 90)
# The budgets CI holds the default path to (distinct compiles on sm_90, fp16 pipeline).
BUDGETS = {("sd15", 512, 512): 24, ("sdxl", 1024, 1024): 30, ("sd35m", 1024, 1024): 30}

_models: dict[str, tuple[Any, Any]] = {}


def meta_models(model: str) -> tuple[Any, Any]:
    """UNet and VAE of a published checkpoint's architecture on the meta device (no weights), built once."""
    if model not in _models:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        name = MODELS[model]
        with torch.device("meta"):
            _models[model] = (UNet2DConditionModel(**UNET_CONFIGS[name]), AutoencoderKL(**VAE_CONFIGS[name]))
    return _models[model]


def generation_compiles(
    model: str,
    height: int,
    width: int,
    batch_size: int = 1,
    arch: int = 90,
    dtype: torch.dtype = torch.float16,
    keep_compile_args: bool = False,
) -> list[Launch]:
    """The distinct compiles of one `model` generation (first launch of each, in order of first use)."""
    if model in SD3_MODELS:
        from sdkernels.tools.coldstart_sd3 import sd3_generation_compiles

        return sd3_generation_compiles(model, height, width, batch_size, arch, dtype, keep_compile_args)
    unet, vae = meta_models(model)
    recorder = record_generation(
        unet,
        vae,
        height=height,
        width=width,
        batch_size=batch_size,
        arch=arch,
        dtype=dtype,
        upcast_vae=model == "sdxl",  # StableDiffusionXLPipeline decodes its force_upcast VAE in fp32
        keep_compile_args=keep_compile_args,
    )
    return recorder.compiles()


def short_name(launch: Launch) -> str:
    return launch.kernel.rsplit(".", 1)[-1]


def describe(launch: Launch) -> str:
    dtype = next((ty for ty in launch.signature.values() if ty.startswith("*")), "-")
    tiles = {k: v for k, v in launch.constexprs.items() if k.isupper()}
    return f"{short_name(launch):28s} {dtype:6s} w{launch.num_warps} s{launch.num_stages} {tiles}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdkernels coldstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted([*MODELS, *SD3_MODELS]), default="sd15")
    parser.add_argument("--height", type=int, default=None, help="default: the model's native size")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1, help="images per prompt batch (the UNet runs at 2x)")
    parser.add_argument("--arch", type=int, choices=ARCHS, default=90)
    parser.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16")
    parser.add_argument("--compile", action="store_true", help="compile the list ahead of time (no GPU needed)")
    parser.add_argument("--workers", type=int, default=None, help="compile worker processes (default: CPUs)")
    parser.add_argument("--max-compiles", type=int, default=None, help="exit 1 when the count exceeds this")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every compile")
    args = parser.parse_args(argv)
    native = {"sd15": 512, "sd2": 768, "sdxl": 1024}.get(args.model, 1024)
    height, width = args.height or native, args.width or native
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]

    start = time.perf_counter()
    compiles = generation_compiles(args.model, height, width, args.batch, args.arch, dtype, args.compile)
    seconds = time.perf_counter() - start
    per_kernel = collections.Counter(short_name(c) for c in compiles)
    print(f"{args.model} {height}x{width} batch {args.batch} {args.dtype} on sm_{args.arch}: {len(compiles)} distinct")
    print(f"compiles, no config benchmarked (replayed in {seconds:.1f} s without a GPU)")
    for name, count in per_kernel.most_common():
        print(f"  {count:3d}  {name}")
    if args.verbose:
        for launch in compiles:
            print("  " + describe(launch))
    if args.compile:
        from sdkernels.warmup import compile_ahead

        seconds = compile_ahead(compiles, args.arch, workers=args.workers)
        print(f"compiled {len(compiles)} kernels for sm_{args.arch} in {seconds:.1f} s (Triton's on-disk cache)")
    if args.max_compiles is not None and len(compiles) > args.max_compiles:
        print(f"FAIL: {len(compiles)} compiles > budget {args.max_compiles}")
        return 1
    return 0
