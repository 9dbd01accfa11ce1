"""The benchmarks' results files: one CSV row per (kernel, provider, shape, dtype, layout, gpu), merged (a rerun
replaces its own rows and keeps the rest), and the environment columns (GPU, versions, time) every row carries."""

from __future__ import annotations

import csv
import datetime
from collections.abc import Sequence
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
ENVIRONMENT_COLUMNS = ("gpu_name", "torch", "triton", "diffusers", "sdkernels", "timestamp")  # environment()'s keys
KEY_COLUMNS = ("kernel", "provider", "shape", "dtype", "layout", "gpu_name")
CSV_COLUMNS = (
    "kernel",
    "provider",
    "shape",
    "model",
    "component",
    "dtype",
    "layout",
    "calls",
    "p50_ms",
    "p20_ms",
    "p80_ms",
    "gbps",
    "tflops",
    "metric",
    "peak",
    "peak_fraction",
    "sdkernels_speedup",
    "max_abs_err_fp32",
    "max_abs_diff_vs_sdkernels",
    "note",
    *ENVIRONMENT_COLUMNS,
)


def environment(device: torch.device) -> dict[str, str]:
    import triton

    import sdkernels
    from sdkernels._versions import installed

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {
        "gpu_name": name,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "diffusers": installed("diffusers") or "not installed",  # the kernel benches run without diffusers
        "sdkernels": sdkernels.__version__,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def save_rows(
    rows: Sequence[dict], path: Path, columns: Sequence[str] = CSV_COLUMNS, key: Sequence[str] = KEY_COLUMNS
) -> None:
    """Merge rows into the CSV: a new row replaces an old one with the same key (same GPU, kernel, provider, shape,
    dtype, layout); rows of other GPUs and shapes are kept."""
    new_keys = {tuple(str(row.get(k, "")) for k in key) for row in rows}
    kept = [row for row in read_rows(path) if tuple(row.get(k, "") for k in key) not in new_keys]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows([*kept, *rows])
