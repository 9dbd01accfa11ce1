"""Re-draw the speedup plots from bench/results/kernels.csv: one PNG per (kernel, dtype) with sdkernels' speedup
over each baseline per shape, for one GPU (by default the GPU of the most recent row).

    python -m bench.plot [--csv bench/results/kernels.csv] [--gpu "NVIDIA H100 80GB HBM3"]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.results_csv import RESULTS, read_rows
from bench.speedup_plot import plot_path, plot_speedups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=RESULTS / "kernels.csv")
    parser.add_argument("--gpu", default="", help="GPU name as in the CSV's gpu_name column")
    parser.add_argument("--out", type=Path, default=None, help="directory for the PNGs (default: next to the CSV)")
    args = parser.parse_args(argv)
    rows = read_rows(args.csv)
    if not rows:
        print(f"no results in {args.csv}: run the bench scripts on a CUDA machine first")
        return 0
    gpu = args.gpu or max(rows, key=lambda r: r.get("timestamp", ""))["gpu_name"]
    rows = [r for r in rows if r.get("gpu_name") == gpu]
    if not rows:
        print(f"no rows for GPU {gpu!r} in {args.csv}")
        return 1
    out_dir = args.out or args.csv.parent
    for kernel, dtype in dict.fromkeys((r["kernel"], r["dtype"]) for r in rows):
        png = plot_path(out_dir, kernel, dtype)
        selected = [r for r in rows if r["kernel"] == kernel and r["dtype"] == dtype]
        print(f"{png}" if plot_speedups(selected, kernel, png) else f"{kernel} {dtype}: no timed baseline rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
