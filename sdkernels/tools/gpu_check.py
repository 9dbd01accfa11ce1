"""`python -m sdkernels gpu-check OUT_DIR` (or `bash bench/gpu_check.sh OUT_DIR`): everything worth running the day
a CUDA GPU is at hand, offline, in about 8 minutes on an H100/H200, with the torch/triton already installed.

Stages (each a subprocess with its own time limit; a failure or timeout is recorded and the next stage still runs):
versions -> GPU-marked tests -> correctness sweep (every op x SD1.5 shape x fitting shipped config, vs the
reference) -> per-kernel benches (short shape list) -> one SD1.5 UNet step default / patched / patched+compile.
Writes OUT_DIR/summary.md, versions.txt, *.csv and one log per stage. Without diffusers the stages that need it
are reported as skipped. `--cpu-dry-run` runs the plumbing on CPU (interpreter, tiny shapes, no benches).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# seconds per stage: 80 + 140 + 3 x 35 + 150 = 475 s at most (the budget is 8 min); the sweep stops starting new
# rows 20 s before its limit, and a stage killed at its limit keeps what it wrote
LIMITS = {"tests": 80, "sweep": 140, "bench": 35, "e2e": 150}


def _versions_text() -> str:
    from sdkernels import _versions

    lines = [f"python {sys.version.split()[0]}"]
    for package in ("torch", "triton", "diffusers", "transformers", "numpy"):
        lines.append(f"{package} {_versions.installed(package) or 'NOT INSTALLED'}")
    import torch

    lines.append(
        f"cuda {torch.version.cuda}, device {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}"
    )
    lines += [f"{name}: {path}" for name, path in _versions.version_paths().items() if name != "versions"]
    lines += [f"OUT OF SUPPORTED RANGE: {p}" for p in _versions.out_of_range()]
    return "\n".join(lines)


def _stage(name: str, cmd: list[str], out: Path, limit: float, env: dict[str, str]) -> tuple[str, float]:
    """Run one stage; its output goes to OUT/<name>.log. Returns (status, seconds)."""
    start = time.monotonic()
    print(f"[gpu-check] {name}: {' '.join(cmd)} (limit {limit:.0f} s)", flush=True)
    with (out / f"{name}.log").open("w") as log:
        try:  # own process group, so a timeout also ends the stage's workers (compile pools, inductor)
            proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        except OSError as exc:
            return f"COULD NOT START: {exc}", 0.0
        try:
            code = proc.wait(timeout=limit)
            status = "ok" if code == 0 else f"FAILED (exit {code})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = f"TIMED OUT after {limit:.0f} s"
    seconds = time.monotonic() - start
    print(f"[gpu-check] {name}: {status} in {seconds:.0f} s", flush=True)
    return status, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sdkernels gpu-check", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for summary.md, CSVs and logs")
    parser.add_argument("--cpu-dry-run", action="store_true", help="no GPU: exercise the plumbing on CPU")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    import torch

    versions = _versions_text()
    print(versions, flush=True)
    (out / "versions.txt").write_text(versions + "\n")
    if not torch.cuda.is_available() and not args.cpu_dry_run:
        message = "no CUDA device: nothing to check (use --cpu-dry-run to exercise the plumbing on CPU)"
        (out / "summary.md").write_text(f"# sdkernels GPU check\n\n{message}\n\n```\n{versions}\n```\n")
        print(message)
        return 0

    has_diffusers = _has("diffusers")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TRITON_INTERPRET="1" if args.cpu_dry_run else "0")
    py = sys.executable
    dry = ["--cpu-dry-run", "--budget", "60"] if args.cpu_dry_run else ["--budget", str(LIMITS["sweep"] - 20)]
    tests = [py, *"-m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors".split()]
    tests += [f"--junitxml={out / 'gpu_tests.xml'}", "tests", "bench/test_bench.py"]
    stages: list[tuple[str, list[str] | None, float, str]] = [
        ("tests", tests, LIMITS["tests"], ""),
        ("sweep", [py, "-m", "sdkernels.tools.gpu_sweep", str(out / "sweep.csv"), *dry], LIMITS["sweep"], ""),
    ]
    for kernel in ("group_norm", "geglu", "attention"):
        cmd = [py, "-m", f"bench.bench_{kernel}", *"--models sd15 --limit 6 --no-plot --csv".split()]
        cmd.append(str(out / f"bench_{kernel}.csv"))
        stages.append((f"bench_{kernel}", None if args.cpu_dry_run else cmd, LIMITS["bench"], "needs CUDA"))
    e2e = [py, "-m", "bench.bench_e2e", *"--models sd15-unet --variants default,patched,patched+compile".split()]
    e2e += [*"--warmup 2 --iters 5 --csv".split(), str(out / "e2e.csv")]
    why_no_e2e = "diffusers is not installed" if not has_diffusers else "needs CUDA"
    stages.append(("e2e_sd15_unet", e2e if has_diffusers and not args.cpu_dry_run else None, LIMITS["e2e"], why_no_e2e))

    results = []
    for name, cmd, limit, why_skipped in stages:
        if cmd is None:
            print(f"[gpu-check] {name}: SKIPPED ({why_skipped})", flush=True)
            results.append((name, f"skipped: {why_skipped}", 0.0))
            continue
        status, seconds = _stage(name, cmd, out, limit, env)
        if name == "tests" and not has_diffusers and status != "ok":
            status += " (test modules that import diffusers cannot be collected; see tests.log for the gpu tests run)"
        results.append((name, status, seconds))
    summary = _summary(versions, results, out, has_diffusers)
    (out / "summary.md").write_text(summary)
    print(summary)
    return 0 if all(s == "ok" or s.startswith("skipped") for _, s, _ in results) else 1


def _has(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def _summary(versions: str, results: list[tuple[str, str, float]], out: Path, has_diffusers: bool) -> str:
    lines = ["# sdkernels GPU check", "", "```", versions, "```", ""]
    if not has_diffusers:
        lines += ["**diffusers is not installed**: the end-to-end step and the diffusers-based tests did not run;", ""]
    lines += ["| stage | status | seconds | output |", "|---|---|---|---|"]
    for name, status, seconds in results:
        files = ", ".join(
            sorted(p.name for p in out.glob("*") if p.stem.startswith(name.split("_")[0]) and p.is_file())
        )
        lines.append(f"| {name} | {status} | {seconds:.0f} | {files} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
