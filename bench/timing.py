"""Per-call timing for whole-model benchmarks (bench_e2e, compare_*): CUDA events on a GPU, so the figure is GPU time
rather than launch time; wall clock elsewhere. Per-kernel benchmarks use triton.testing.do_bench (bench/peaks.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def time_calls(call: Callable[[], Any], device: torch.device, repeats: int) -> tuple[list[float], Any]:
    """Milliseconds of each of `repeats` calls and the last result."""
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
