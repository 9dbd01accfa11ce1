"""What a benchmark measures its kernels against: triton.testing.do_bench's p50/p20/p80 (the default timer), and this
GPU's measured copy bandwidth and matmul rate (the denominators of peak_fraction). Both are parameters of
bench.common.run_benchmark, so a test can pass a fake timer and made-up peaks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Timer = Callable[[Callable[[], Any]], tuple[float, float, float]]


def cuda_timer(fn: Callable[[], Any]) -> tuple[float, float, float]:
    """(p50, p20, p80) milliseconds of fn, with triton's L2 flush between runs."""
    import triton.testing

    p50, p20, p80 = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8])
    return float(p50), float(p20), float(p80)


@dataclass(frozen=True)
class Peaks:
    copy_gbps: float  # device-to-device copy: bytes read + bytes written per second
    matmul_tflops: float  # square matmul in the benchmark dtype


def measure_peaks(
    device: torch.device, dtype: torch.dtype, timer: Timer = cuda_timer, copy_bytes: int = 1 << 30, matmul_n: int = 8192
) -> Peaks:
    """This GPU's measured (not datasheet) copy bandwidth and matrix rate: the denominators of peak_fraction."""
    return Peaks(
        2 * copy_bytes / _copy_ms(device, copy_bytes, timer) / 1e6,
        2 * matmul_n**3 / _matmul_ms(device, dtype, matmul_n, timer) / 1e9,
    )


def _copy_ms(device: torch.device, copy_bytes: int, timer: Timer) -> float:
    src = torch.empty(copy_bytes // 2, dtype=torch.float16, device=device).normal_()
    dst = torch.empty_like(src)
    return timer(lambda: dst.copy_(src))[0]


def _matmul_ms(device: torch.device, dtype: torch.dtype, n: int, timer: Timer) -> float:
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    return timer(lambda: a @ b)[0]
