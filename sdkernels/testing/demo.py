"""`python -m sdkernels demo`: patch a tiny offline SD pipeline (random weights, nothing downloads), compare the
patched image with the unpatched one, print the patch report and timings, save the images side by side.

Without CUDA, `python -m sdkernels demo` sets TRITON_INTERPRET=1 before Triton is imported, so the real Triton
kernels run on CPU tensors through the interpreter: slow (minutes: ~50 s of CPU per step, mostly GroupNorm programs),
but the same kernel code as on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

import sdkernels
from sdkernels import _dispatch
from sdkernels.testing.interpreter import apply_interpreter_fixes
from sdkernels.testing.tiny import make_sd3_pipeline, make_sd_pipeline, make_sdxl_pipeline, run_pipeline

if _dispatch.INTERPRET:
    apply_interpreter_fixes()  # the demo is a fixture too: bf16 right under the interpreter

MODELS = {
    "sd": ("tiny SD1.x pipeline", make_sd_pipeline),
    "sdxl": ("tiny SDXL pipeline", make_sdxl_pipeline),
    "sd3": ("tiny SD3.5-style pipeline (QK RMSNorm, dual attention, no T5)", make_sd3_pipeline),
}
CAPTION_HEIGHT = 14  # pixels under the images for their captions
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(prog="python -m sdkernels demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="sd", help="which tiny pipeline (default sd)")
    parser.add_argument("--steps", type=int, default=3, help="denoising steps (default 3)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels, a multiple of 8 (default 64)")
    parser.add_argument("--out", type=Path, default=Path("sdkernels_demo.png"), help="where to save the images")
    parser.add_argument("--device", default="cuda" if cuda else "cpu", help="default: cuda if available, else cpu")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float16" if cuda else "float32",
        help="default: float16 on CUDA, float32 on CPU",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and of the noise")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3 if cuda else 1,
        help="timed runs after a warm-up on CUDA (default 3; 1 on CPU, where there is no warm-up)",
    )
    args = parser.parse_args(argv)
    if args.size % 8:
        parser.error(f"--size must be a multiple of 8 (the VAE factor), got {args.size}")
    if args.model == "sd3" and args.size % 16:
        parser.error(f"--size must be a multiple of 16 for sd3 (VAE factor 8 x patch size 2), got {args.size}")
    return args


def time_calls(call: Callable[[], Any], device: torch.device, repeats: int) -> tuple[list[float], Any]:
    """Milliseconds of each of `repeats` calls (CUDA events on a GPU, so the time is GPU time, not launch time;
    wall clock elsewhere) and the last result."""
    times: list[float] = []
    result = None
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = call()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            result = call()
            times.append((time.perf_counter() - began) * 1e3)
    return times, result


def timed(call: Callable[[], Any], device: torch.device, repeats: int) -> tuple[Any, float]:
    """Run `call` `repeats` times; return the last result and the median time in ms."""
    times, result = time_calls(call, device, repeats)
    return result, statistics.median(times)


def side_by_side(unpatched: np.ndarray, patched: np.ndarray, min_side: int = 256) -> Image.Image:
    """[unpatched | patched | |difference| scaled to its maximum], upscaled (nearest) so tiny images are visible,
    with a caption bar underneath (the scale of the difference panel is in it)."""
    difference = np.abs(patched - unpatched).max(axis=-1, keepdims=True)
    largest = float(difference.max())
    difference = np.repeat(difference / max(largest, 1e-12), 3, axis=-1)
    panels = [np.clip(image, 0.0, 1.0) for image in (unpatched, patched, difference)]
    strip = (np.concatenate(panels, axis=1) * 255).round().astype(np.uint8)
    zoom = max(1, min_side // unpatched.shape[0])
    height, width = strip.shape[0] * zoom, strip.shape[1] * zoom
    canvas = Image.new("RGB", (width, height + CAPTION_HEIGHT))
    canvas.paste(Image.fromarray(strip).resize((width, height), Image.NEAREST))
    draw = ImageDraw.Draw(canvas)
    panel = width // 3
    for index, caption in enumerate(("unpatched", "patched", f"|difference|, white = {largest:.2g}")):
        draw.text((index * panel + 4, height + 2), caption, fill=(255, 255, 255))
    return canvas


@dataclass
class Comparison:
    """One pipeline call unpatched and patched: images (H, W, 3) in [0, 1], median times, the patch report."""

    unpatched: np.ndarray
    patched: np.ndarray
    unpatched_ms: float
    patched_ms: float
    report: sdkernels.PatchReport
    restored_sites: int

    @property
    def max_difference(self) -> float:
        return float(np.abs(self.patched - self.unpatched).max())


def compare_patched(
    pipe: Any, call: Callable[[], np.ndarray], *, repeats: int = 1, warm_up: bool | None = None
) -> Comparison:
    """Run `call` (one pipeline call returning an image) unpatched, then patched with `sdkernels.patch(pipe)`
    (printing the report), then unpatch. On CUDA each side gets an untimed warm-up call first (cuDNN autotuning,
    Triton compilation) unless `warm_up=False`."""
    device = pipe.device
    warm_up = device.type == "cuda" if warm_up is None else warm_up
    if warm_up:
        call()
    unpatched, unpatched_ms = timed(call, device, repeats)
    report = sdkernels.patch(pipe)
    try:
        print(report)
        print(f"kernels run on: {', '.join(sorted(set(report.paths.values())))}")
        if device.type == "cpu" and not _dispatch.INTERPRET:
            print(
                "note: TRITON_INTERPRET was not 1 when Triton was imported, so on CPU the ops run their PyTorch "
                "reference, not the Triton kernels (`python -m sdkernels demo` sets it)"
            )
        if device.type == "cpu" and _dispatch.INTERPRET:
            print("running the patched pipeline through the Triton interpreter (minutes on CPU)...", flush=True)
        if warm_up:
            call()
        patched, patched_ms = timed(call, device, repeats)
    finally:
        restored = sdkernels.unpatch(pipe)
    return Comparison(unpatched, patched, unpatched_ms, patched_ms, report, restored)


def print_timings(comparison: Comparison, device: torch.device) -> None:
    speed_note = ""
    if device.type == "cpu":
        runs_on = "the Triton interpreter runs kernels in Python" if _dispatch.INTERPRET else "PyTorch reference ops"
        speed_note = f" (CPU: {runs_on}; not a speed test)"
    speedup = comparison.unpatched_ms / comparison.patched_ms
    print(
        f"pipeline call: unpatched {comparison.unpatched_ms:.1f} ms, patched {comparison.patched_ms:.1f} ms "
        f"({speedup:.2f}x){speed_note}"
    )
    fallbacks = _dispatch.fallback_counts()
    if fallbacks:
        print("ops that fell back to PyTorch:", {f"{op}: {why}": n for (op, why), n in fallbacks.items()})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if device.type == "cpu":
        torch.set_num_threads(1)  # the interpreter gets slower, not faster, with threads on a shared CPU
    run = dict(steps=args.steps, size=args.size, seed=args.seed)
    title, make_pipeline = MODELS[args.model]
    print(f"{title} (random weights, offline): {args.size}x{args.size}, {args.steps} steps, {args.dtype} on {device}")

    pipe = make_pipeline(device=device, dtype=dtype, seed=args.seed)
    comparison = compare_patched(pipe, lambda: run_pipeline(pipe, **run).images[0], repeats=args.repeats)

    # How far the image moves from rounding alone: the same pipeline one precision up (fp32 -> fp64, else -> fp32).
    reference_dtype = torch.float64 if dtype == torch.float32 else torch.float32
    reference = run_pipeline(make_pipeline(device=device, dtype=reference_dtype, seed=args.seed), **run).images[0]
    noise = float(np.abs(comparison.unpatched - reference).max())

    difference = comparison.max_difference
    print(f"max |patched - unpatched| = {difference:.3g} (pixel values in [0, 1]; 1/255 = {1 / 255:.3g})")
    print(
        f"rounding noise of {args.dtype} for context: max |unpatched {args.dtype} - unpatched "
        f"{str(reference_dtype).removeprefix('torch.')}| = {noise:.3g}"
    )
    print_timings(comparison, device)
    print(f"unpatched {comparison.restored_sites} sites")

    side_by_side(comparison.unpatched, comparison.patched).save(args.out)
    print(f"saved [unpatched | patched | |difference| scaled to max] to {args.out}")
    finite = bool(np.isfinite(comparison.patched).all())
    # Kernel rounding is expected to stay within a few times the dtype's own rounding noise (floor: 2 grey levels).
    within = difference <= max(4 * noise, 2 / 255)
    print("result:", "OK" if finite and within else "the patched image differs more than rounding explains")
    return 0 if finite and within else 1
