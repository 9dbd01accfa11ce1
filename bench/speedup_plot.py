"""The speedup plots: sdkernels' speedup over each baseline, one PNG per (kernel, dtype) beside the results CSV."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path


def plot_path(directory: Path, kernel: str, dtype: str) -> Path:
    return directory / (f"{kernel}.png" if dtype == "fp16" else f"{kernel}-{dtype}.png")


def plot_speedups(rows: Sequence[dict], kernel: str, path: Path) -> bool:
    """Horizontal bars: sdkernels' speedup over each baseline, per shape (one GPU's rows). False if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [
        r
        for r in rows
        if r["kernel"] == kernel
        and r["provider"] != "sdkernels"
        and str(r.get("sdkernels_speedup", "")) not in ("", "nan")
    ]
    if not timed:
        return False
    # one bar series per baseline (and per layout when several were run), one group of bars per shape
    several_layouts = len({r["layout"] for r in timed}) > 1

    def series(r: dict) -> str:
        return f"{r['provider']} [{r['layout']}]" if several_layouts else r["provider"]

    labels = list(dict.fromkeys(r["shape"] for r in timed))
    baselines = list(dict.fromkeys(series(r) for r in timed))
    speedup = {(r["shape"], series(r)): float(r["sdkernels_speedup"]) for r in timed}
    height = 0.8 / len(baselines)
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.28 * len(labels) * max(1, len(baselines) / 2)))
    for i, name in enumerate(baselines):
        ys = [j + i * height for j in range(len(labels))]
        ax.barh(ys, [speedup.get((label, name), math.nan) for label in labels], height=height, label=name)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(labels))], labels, fontsize=7)
    ax.set_ylim(len(labels), -0.2)  # first shape on top, no empty margin
    ax.set_xlabel("sdkernels speedup over baseline (p50 time ratio; > 1 = sdkernels faster)")
    gpu = timed[0].get("gpu_name", "")
    ax.set_title(f"{kernel} on {gpu} ({timed[0].get('dtype', '')})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
