"""Unpatched vs patched on one pipeline call: the images, the largest difference, the patch report, wall-clock
times, and [unpatched | patched | |difference|] side by side. Used by the demo and bench/compare_*.py."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

import sdkernels
from sdkernels import _dispatch

CAPTION_HEIGHT = 14  # pixels under the images for their captions
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def timed(call: Callable[[], Any], device: torch.device, repeats: int) -> tuple[Any, float]:
    """Run `call` `repeats` times; return the last result and the median wall-clock ms (the device synchronised
    after each call). A demo's figure, not a benchmark: bench/ times kernels with CUDA events."""
    times: list[float] = []
    result = None
    for _ in range(repeats):
        began = time.perf_counter()
        result = call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - began) * 1e3)
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
            print("running the patched pipeline through the Triton interpreter (tens of seconds on CPU)...", flush=True)
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
