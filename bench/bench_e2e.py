"""End to end on real-size models with random weights (no download): one SD1.5 / SD2.1 / SDXL UNet denoising step
at batch 2 (classifier-free guidance; latents 64² / 96² / 128², text (2, 77, cross_dim); SDXL also gets
text_embeds (2, 1280) and time_ids (2, 6)), and the VAE decoder at 512² and 1024² (batch 1).
Variants: diffusers' default, sdkernels.patch(model), patched + torch.compile (and default + torch.compile on
request). CUDA-event time per call after warm-up, it/s, peak memory (torch.cuda.max_memory_allocated over the timed
calls, weights included), and the largest output difference vs the default. Writes bench/results/e2e.csv.
Without CUDA: says so, runs the compile report, exits 0.

    python -m bench.bench_e2e [--models sd15-unet,vae-512] [--no-compile] [--iters 10]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import sdkernels
from bench.common import DTYPES, no_cuda
from bench.results_csv import ENVIRONMENT_COLUMNS, RESULTS, environment, save_rows
from bench.timing import time_calls
from sdkernels._dispatch import fallback_counts, reset_fallback_counts
from sdkernels.tools import sd_model_configs, sd_shapes

VARIANTS = ("default", "patched", "patched+compile", "default+compile")
DEFAULT_VARIANTS = ("default", "patched", "patched+compile")
E2E_COLUMNS = (
    "workload",
    "component",
    "variant",
    "batch",
    "resolution",
    "dtype",
    "median_ms",
    "mean_ms",
    "min_ms",
    "max_ms",
    "it_per_s",
    "peak_mem_gb",
    "max_abs_diff_vs_default",
    "max_abs_default",
    "finite",
    "first_call_s",
    "patched_sites",
    "fallbacks",
    "iters",
    *ENVIRONMENT_COLUMNS,
)
E2E_KEY = ("workload", "variant", "dtype", "gpu_name")


@dataclass
class Workload:
    name: str
    component: str  # "unet" | "vae.decoder"
    batch: int
    resolution: int  # image side in pixels
    build: Callable[[], torch.nn.Module]  # on the current default device, fp32
    make_inputs: Callable[[torch.device, torch.dtype], dict[str, Any]]
    forward: Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor]


def unet_workload(
    name: str, config: dict, resolution: int, text_embeds_dim: int | None = None, batch: int = sd_shapes.UNET_BATCH
) -> Workload:
    from diffusers import UNet2DConditionModel

    def make_inputs(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        side = resolution // 8
        inputs = {
            "sample": torch.randn(batch, config.get("in_channels", 4), side, side, device=device, dtype=dtype),
            "timestep": torch.full((batch,), 500, device=device),
            "encoder_hidden_states": torch.randn(
                batch, sd_shapes.TEXT_LEN, config["cross_attention_dim"], device=device, dtype=dtype
            ),
        }
        if text_embeds_dim is not None:  # SDXL: pooled text embedding + (size, crop, target size) ids
            time_ids = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], device=device)
            inputs["added_cond_kwargs"] = {
                "text_embeds": torch.randn(batch, text_embeds_dim, device=device, dtype=dtype),
                "time_ids": time_ids.to(dtype).expand(batch, sd_model_configs.SDXL_TIME_IDS),
            }
        return inputs

    def forward(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        return model(**inputs, return_dict=False)[0]

    return Workload(name, "unet", batch, resolution, lambda: UNet2DConditionModel(**config), make_inputs, forward)


def vae_decode_workload(name: str, config: dict, resolution: int, batch: int = sd_shapes.VAE_BATCH) -> Workload:
    from diffusers import AutoencoderKL

    def make_inputs(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        side = resolution // 8
        return {"z": torch.randn(batch, config.get("latent_channels", 4), side, side, device=device, dtype=dtype)}

    def forward(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        return model.decode(inputs["z"], return_dict=False)[0]

    return Workload(name, "vae.decoder", batch, resolution, lambda: AutoencoderKL(**config), make_inputs, forward)


def workloads() -> dict[str, Workload]:
    unets = {
        f"{model}-unet": unet_workload(
            f"{model}-unet",
            sd_model_configs.UNET_CONFIGS[model],
            sd_shapes.IMAGE_SIZE[model],
            sd_model_configs.SDXL_TEXT_EMBEDS_DIM if model == "sdxl" else None,
        )
        for model in sd_shapes.MODELS
    }
    vaes = {
        "vae-512": vae_decode_workload("vae-512", sd_model_configs.VAE_CONFIGS["sd15"], 512),
        "vae-1024": vae_decode_workload("vae-1024", sd_model_configs.VAE_CONFIGS["sdxl"], 1024),
    }
    return {**unets, **vaes}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_variant(
    workload: Workload,
    model: torch.nn.Module,
    inputs: dict[str, Any],
    variant: str,
    device: torch.device,
    warmup: int,
    iters: int,
) -> tuple[dict[str, Any], torch.Tensor]:
    patched = variant.startswith("patched")
    report = sdkernels.patch(model) if patched else None
    runner = torch.compile(model) if variant.endswith("+compile") else model
    reset_fallback_counts()
    try:
        with torch.no_grad():
            begin = time.perf_counter()
            workload.forward(runner, inputs)  # first call: compiles / autotunes, reported apart
            _synchronize(device)
            first_call_s = time.perf_counter() - begin
            for _ in range(max(0, warmup - 1)):
                workload.forward(runner, inputs)
            _synchronize(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times, out = time_calls(lambda: workload.forward(runner, inputs), device, iters)
    finally:
        if patched:
            sdkernels.unpatch(model)
        if variant.endswith("+compile"):
            torch._dynamo.reset()
    median = statistics.median(times)
    row = {
        "variant": variant,
        "median_ms": median,
        "mean_ms": statistics.fmean(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "it_per_s": 1e3 / median,
        "first_call_s": first_call_s,
        "iters": iters,
        "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else "",
        "patched_sites": report.count() if report is not None else 0,
        "fallbacks": sum(fallback_counts().values()),
        "finite": bool(torch.isfinite(out).all()),
    }
    return row, out


def run_workload(
    workload: Workload,
    variants: tuple[str, ...],
    device: torch.device,
    dtype: torch.dtype,
    warmup: int,
    iters: int,
    env: dict[str, str],
) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    with device:
        model = workload.build()
    model = model.to(dtype).eval()
    inputs = workload.make_inputs(device, dtype)
    rows, default_out = [], None
    if "default" not in variants:  # the reference output every variant is compared with
        with torch.no_grad():
            default_out = workload.forward(model, inputs)
    for variant in variants:
        row, out = run_variant(workload, model, inputs, variant, device, warmup, iters)
        if variant == "default":
            default_out = out
        row.update(
            workload=workload.name,
            component=workload.component,
            batch=workload.batch,
            resolution=workload.resolution,
            dtype=str(dtype).removeprefix("torch."),
            max_abs_diff_vs_default=float((out.float() - default_out.float()).abs().max()),
            max_abs_default=float(default_out.float().abs().max()),
            **env,
        )
        rows.append(row)
        print(format_row(row), flush=True)
    del model, inputs, default_out
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def format_row(row: dict[str, Any]) -> str:
    memory = f"{row['peak_mem_gb']:6.2f} GB" if row["peak_mem_gb"] != "" else "   n/a   "
    return (
        f"{row['workload']:10s} {row['variant']:16s} {row['median_ms']:9.2f} ms  {row['it_per_s']:7.2f} it/s  "
        f"peak {memory}  max|diff| {row['max_abs_diff_vs_default']:.3e} (max|out| {row['max_abs_default']:.2f})"
        f"  sites {row['patched_sites']:3d}  fallbacks {row['fallbacks']}  first call {row['first_call_s']:.1f} s"
        f"{'' if row['finite'] else '  NON-FINITE OUTPUT'}"
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        default="sd15-unet,sdxl-unet,vae-512,vae-1024",
        help=f"comma-separated subset of {','.join(workloads())}",
    )
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated: {VARIANTS}")
    parser.add_argument("--no-compile", action="store_true", help="drop the torch.compile variants")
    parser.add_argument("--dtype", default="fp16", choices=sorted(DTYPES))
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (the first one compiles)")
    parser.add_argument("--iters", type=int, default=10, help="timed calls")
    parser.add_argument("--csv", type=Path, default=RESULTS / "e2e.csv")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if not torch.cuda.is_available():
        return no_cuda([])
    available = workloads()
    names = [name for name in args.models.split(",") if name]
    variants = tuple(v for v in args.variants.split(",") if v and not (args.no_compile and v.endswith("+compile")))
    unknown = [n for n in names if n not in available] + [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"unknown models/variants: {unknown}", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    env = environment(device)
    print(f"{env['gpu_name']}, torch {env['torch']}, diffusers {env['diffusers']}, sdkernels {env['sdkernels']}")
    rows = []
    for name in names:
        rows += run_workload(available[name], variants, device, DTYPES[args.dtype], args.warmup, args.iters, env)
        save_rows(rows, args.csv, E2E_COLUMNS, E2E_KEY)  # after every model: a later crash keeps what was measured
    print(f"\nwrote {len(rows)} rows to {args.csv}")
    for row in rows:
        print(format_row(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
