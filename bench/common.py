"""Shared machinery of the kernel benchmarks (Liger-Kernel's recipe): one `Case` per (kernel, SD shape, dtype,
layout) with its providers, `triton.testing.do_bench` p50/p20/p80, achieved GB/s or TFLOP/s against this GPU's
measured copy bandwidth and matmul rate, speedup over each baseline, max |error| against an fp32 reference, and one
CSV (bench/results/kernels.csv) that keeps one row per (kernel, provider, shape, dtype, layout, gpu).

Timing, peaks and the device are parameters (bench/peaks.py), so the shape/byte/CSV/plot logic (bench/results_csv.py,
bench/speedup_plot.py) also runs on CPU with a fake timer (tests/test_bench_logic.py does that); GPU numbers exist
only where a GPU produced them.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.peaks import Peaks, Timer, cuda_timer, measure_peaks
from bench.results_csv import RESULTS, environment, save_rows
from bench.speedup_plot import plot_path, plot_speedups

NO_CUDA_MESSAGE = "no CUDA device: GPU timings skipped"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
Inputs = dict[str, Any]


@dataclass
class Case:
    """One benchmarked shape. Providers take the inputs and return the output; "sdkernels" is ours, the rest are
    baselines. `reference` returns the fp32 answer. floor_bytes (inputs read once, outputs written once) gives GB/s;
    flops > 0 makes TFLOP/s the headline metric."""

    kernel: str
    label: str
    model: str
    component: str
    dtype: str
    layout: str
    calls: int  # how often one UNet step / VAE pass runs this shape
    make_inputs: Callable[[torch.device], Inputs]
    providers: dict[str, Callable[[Inputs], torch.Tensor]]
    reference: Callable[[Inputs], torch.Tensor]
    floor_bytes: int
    flops: int = 0


def inductor(fn: Callable[[Inputs], torch.Tensor]) -> Callable[[Inputs], torch.Tensor]:
    """torch.compile(fn), compiled afresh for each case: a dynamo reset per case keeps the recompile limit away."""
    state: dict[str, Callable[[Inputs], torch.Tensor]] = {}

    def run(inputs: Inputs) -> torch.Tensor:
        if "fn" not in state:
            torch._dynamo.reset()
            state["fn"] = torch.compile(fn, dynamic=False)
        return state["fn"](inputs)

    return run


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def run_case(case: Case, device: torch.device, timer: Timer, peaks: Peaks, env: dict[str, str]) -> list[dict]:
    """Time every provider of one case; a provider that refuses or fails the shape (e.g. a SDPA backend without
    head dim 512) gets a row with the reason in `note` and no timings."""
    inputs = case.make_inputs(device)
    reference = case.reference(inputs).float()
    outputs: dict[str, torch.Tensor] = {}
    timings: dict[str, tuple[float, float, float]] = {}
    notes: dict[str, str] = {}
    for provider, fn in case.providers.items():
        try:
            outputs[provider] = fn(inputs)
            timings[provider] = timer(lambda fn=fn: fn(inputs))
        except Exception as exc:  # recorded in the CSV and printed, so one refusal does not end a long run
            first_line = (str(exc).splitlines() or [""])[0][:200]
            notes[provider] = f"failed: {type(exc).__name__}: {first_line}"
    ours = timings.get("sdkernels")
    rows = []
    for provider in case.providers:
        row: dict[str, Any] = {
            "kernel": case.kernel,
            "provider": provider,
            "shape": case.label,
            "model": case.model,
            "component": case.component,
            "dtype": case.dtype,
            "layout": case.layout,
            "calls": case.calls,
            "note": notes.get(provider, ""),
            **env,
        }
        if provider in timings:
            p50, p20, p80 = timings[provider]
            gbps, tflops = case.floor_bytes / p50 / 1e6, case.flops / p50 / 1e9
            metric, value, peak = (
                ("TFLOP/s", tflops, peaks.matmul_tflops) if case.flops else ("GB/s", gbps, peaks.copy_gbps)
            )
            row.update(
                p50_ms=p50,
                p20_ms=p20,
                p80_ms=p80,
                gbps=gbps,
                tflops=tflops if case.flops else "",
                metric=metric,
                peak=peak,
                peak_fraction=value / peak,
                sdkernels_speedup=p50 / ours[0] if ours else "",
                max_abs_err_fp32=_max_abs(outputs[provider], reference),
                max_abs_diff_vs_sdkernels=_max_abs(outputs[provider], outputs["sdkernels"]) if ours else "",
            )
        rows.append(row)
    return rows


def format_row(row: dict) -> str:
    if row.get("p50_ms", "") == "":
        return f"{row['shape']:58s} {row['provider']:19s} {row['note']}"
    value = row["tflops"] if row["metric"] == "TFLOP/s" else row["gbps"]
    speedup = f"sdkernels x{row['sdkernels_speedup']:.2f}" if row["sdkernels_speedup"] != "" else ""
    return (
        f"{row['shape']:58s} {row['provider']:19s} {row['p50_ms']:9.4f} ms  {value:8.1f} {row['metric']:7s} "
        f"({row['peak_fraction']:5.1%} of measured peak)  {speedup:16s} err {row['max_abs_err_fp32']:.2e}"
    )


def summarize(rows: Iterable[dict]) -> list[str]:
    """Per (kernel, model, component, layout, provider): Σ p50 × calls, i.e. the op's time in one UNet step/VAE pass."""
    totals: dict[tuple, float] = defaultdict(float)
    for row in rows:
        if row.get("p50_ms", "") != "":
            totals[(row["kernel"], row["model"], row["component"], row["layout"], row["provider"])] += float(
                row["p50_ms"]
            ) * int(row["calls"])
    return [
        f"{k} {m}-{c} [{layout}] {p:19s} {ms:9.3f} ms per pass (sum of p50 x calls)"
        for (k, m, c, layout, p), ms in sorted(totals.items())
    ]


# ------------------------------------------------------------------------------------------------- entry points
def no_cuda(kernels: Sequence[str]) -> int:
    """What every benchmark does without a GPU: say so, then run the ahead-of-time compile report for its kernels
    (registers, spills, shared memory on sm_80/sm_90), and exit 0."""
    print(NO_CUDA_MESSAGE)
    try:
        from sdkernels.tools.compile_report import main as compile_report_main
    except ImportError as exc:
        print(f"compile report unavailable ({exc}); nothing else to do without a GPU")
        return 0
    print(f"running the ahead-of-time compile report for {', '.join(kernels) or 'all kernels'} instead")
    status = compile_report_main([arg for kernel in kernels for arg in ("--kernel", kernel)])
    print(f"compile report finished with exit status {status}")
    return 0


def base_parser(description: str, default_csv: str = "kernels.csv") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models", default="sd15,sd21,sdxl", help="comma-separated subset of sd15,sd21,sdxl")
    parser.add_argument("--dtype", default="fp16", choices=sorted(DTYPES))
    parser.add_argument("--match", default="", help="only shapes whose label contains this text")
    parser.add_argument("--limit", type=int, default=0, help="only the first N cases (quick smoke run)")
    parser.add_argument("--csv", type=Path, default=RESULTS / default_csv, help="results CSV (merged, not replaced)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    return parser


def select(cases: list[Case], args: argparse.Namespace) -> list[Case]:
    cases = [c for c in cases if args.match in c.label]
    return cases[: args.limit] if args.limit else cases


def run_benchmark(
    cases: list[Case],
    args: argparse.Namespace,
    kernels: Sequence[str],
    timer: Timer = cuda_timer,
    device: torch.device | None = None,
    peaks: Peaks | None = None,
) -> int:
    """Run the cases on the GPU (or the given device with a given timer and peaks), merge the CSV, print per-pass
    totals and plot each kernel's speedups."""
    if device is None:
        if not torch.cuda.is_available():
            return no_cuda(kernels)
        device = torch.device("cuda")
    env = environment(device)
    if peaks is None:
        peaks = measure_peaks(device, DTYPES[args.dtype], timer)
    print(
        f"{env['gpu_name']}: measured copy {peaks.copy_gbps:.0f} GB/s, {args.dtype} matmul "
        f"{peaks.matmul_tflops:.1f} TFLOP/s; torch {env['torch']}, triton {env['triton']}"
    )
    rows: list[dict] = []
    for case in cases:
        case_rows = run_case(case, device, timer, peaks, env)
        rows += case_rows
        for row in case_rows:
            print(format_row(row), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    save_rows(rows, args.csv)
    print(f"wrote {len(rows)} rows to {args.csv}")
    print("\n".join(summarize(rows)))
    if not args.no_plot:
        for kernel in dict.fromkeys(r["kernel"] for r in rows):
            png = plot_path(args.csv.parent, kernel, args.dtype)
            if plot_speedups(rows, kernel, png):
                print(f"plot: {png}")
    return 0
