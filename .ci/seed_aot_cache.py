"""Regenerate tests/aot_measurements.json: the ahead-of-time compile measurements of every build the compile-report
gate checks (all shipped kernel configurations for their archs, plus the stand-in kernels of
tests/test_compile_report.py), so CI's gate finds them instead of recompiling ~840 builds on 2 cores.

Builds already measured (in the committed file or the local cache, ~/.cache/sdkernels/aot) are reused: their key
covers the kernel source, spec, options by value, arch and Triton/ptxas versions (sdkernels/tools/aot_cache.py), so
only builds whose kernel changed are compiled. The file is rewritten from scratch: entries of builds no longer
shipped are dropped. Run it after changing a kernel or its configurations, and commit the file.

Usage: python .ci/seed_aot_cache.py [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_PROVIDERS = ("good_specs", "spilling_specs", "smem_overflow_specs", "no_hgmma_specs")


def measured_only(compile_report, providers: list[str]) -> tuple[list[dict], list[str], list[str]]:
    """The rows of the builds that need no compiling (compile-report's planning pass), and a note of the rest."""
    request = {"op": "plan", "kernels": [], "archs": list(compile_report.ARCHS), "cache": True}
    from sdkernels.tools.compile_workers import WorkerPool

    with WorkerPool(1) as pool:
        plans = pool.map([{**request, "provider": provider} for provider in providers])
    jobs = [job for plan in plans for job in plan.get("jobs", [])]
    rows = [job["result"] for job in jobs if job["result"]]
    errors = [plan["error"] for plan in plans if "error" in plan]
    return rows, [f"{len(jobs) - len(rows)} of {len(jobs)} builds not measured yet, left out"], errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel compile workers")
    parser.add_argument(
        "--no-compile", action="store_true", help="write only the builds already measured (committed or local cache)"
    )
    args = parser.parse_args()
    os.chdir(REPO)
    sys.path.insert(0, str(REPO))
    from sdkernels.tools import aot_cache, compile_report

    providers = [*compile_report.DEFAULT_PROVIDERS]
    providers += [f"{REPO / 'tests' / 'test_compile_report.py'}:{name}" for name in TEST_PROVIDERS]
    start = time.monotonic()
    if args.no_compile:
        rows, notes, errors = measured_only(compile_report, providers)
    else:
        rows, notes, errors = compile_report.collect(providers, [], compile_report.ARCHS, args.jobs, use_cache=True)
    failed = [f"{row['kernel']}/{row['variant']} sm_{row['arch']}: {row['error']}" for row in rows if row["error"]]
    for line in [*notes, *errors, *failed]:
        print(line, file=sys.stderr)
    target = REPO / "tests" / aot_cache.COMMITTED_NAME
    written = aot_cache.write_committed(target, rows)
    compiled = sum(not row["cached"] for row in rows)
    print(
        f"{written} measurements written to {target.relative_to(REPO)} ({compiled} compiled, "
        f"{len(rows) - compiled} reused) in {time.monotonic() - start:.0f} s",
        file=sys.stderr,
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
