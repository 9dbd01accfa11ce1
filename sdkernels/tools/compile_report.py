"""`python -m sdkernels compile-report`: compile every shipped kernel configuration for sm_80 and sm_90 with no
GPU and print its resources. CI's resource gate: exits 1 (naming the rows) if a configuration spills registers,
overflows shared memory, cannot launch, or is a matrix kernel whose fp16/bf16 build misses the tensor cores
(HGMMA on sm_90, HMMA on sm_80).

Compiles run in worker processes (sdkernels/tools/compile_workers.py) with TRITON_INTERPRET off, so the report
also works from a process running under the interpreter, such as the test suite; results are cached (see
sdkernels.tools.aot_cache).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sdkernels.tools.compile_workers import WorkerPool
from sdkernels.tools.occupancy import LIMITS
from sdkernels.tools.triton_compat import accept_newer_launch_knobs

accept_newer_launch_knobs()  # triton 3.6-3.8: see triton_compat.py (a no-op on 3.9)


def kernel_providers() -> tuple[str, ...]:
    """`module:aot_specs` for every module under sdkernels/kernels/ that defines `aot_specs()`: a new kernel is in
    the report (and CI's resource gate) by existing, with no list to edit. Read as text, so nothing is imported here
    (the compile workers import the kernels without TRITON_INTERPRET)."""
    package = Path(__file__).resolve().parents[1] / "kernels"
    return tuple(
        f"sdkernels.kernels.{path.stem}:aot_specs"
        for path in sorted(package.glob("*.py"))
        if "\ndef aot_specs(" in path.read_text()
    )


DEFAULT_PROVIDERS = kernel_providers()
ARCHS = tuple(sorted(LIMITS))  # sm_80 and sm_90 for most kernels; a spec may also list sm_86 / sm_89
TABLE_COLUMNS = (
    "kernel",
    "variant",
    "arch",
    "dtype",
    "warps",
    "stages",
    "regs/thread",
    "spill B st/ld",
    "smem B / limit",
    "CTAs/SM (limit)",
    "tensor core",
    "main loop / iteration (per warp)",
    "kernel instr",
    "status",
)


def problems(row: dict[str, Any]) -> list[str]:
    """Why a configuration must not ship; empty when it is fine."""
    if row["error"]:  # Triton's CompilationError quotes the kernel source: keep where and what, not the listing
        lines = [line.strip() for line in row["error"].splitlines() if line.strip()]
        return [f"build failed: {lines[0]}" + (f" ... {lines[-1]}" if len(lines) > 1 else "")]
    found = []
    if row["spill_stores"] or row["spill_loads"]:
        found.append(f"spills registers ({row['spill_stores']} B stores, {row['spill_loads']} B loads per thread)")
    if row["shared_bytes"] > row["shared_limit"]:
        found.append(f"shared memory {row['shared_bytes']} B > {row['shared_limit']} B per block")
    elif row["ctas_per_sm"] == 0:
        found.append(f"cannot launch: 0 CTAs per SM ({row['occupancy_limit']})")
    if row["uses_dot"] and row["dtype"] in ("fp16", "bf16"):
        wanted = "HGMMA" if row["arch"] >= 90 else "HMMA"
        if row["tensor_core"] != wanted:
            found.append(f"matrix kernel without {wanted} on sm_{row['arch']} (found: {row['tensor_core']})")
    return found


def _progress(total: int, to_build: int) -> Callable[[int], None]:
    """Prints (to stderr) how far a long cold build has got, about every tenth of the way."""
    start = time.monotonic()
    if to_build:
        print(
            f"compile report: {total - to_build} of {total} configurations cached, building {to_build}",
            file=sys.stderr,
            flush=True,
        )

    def report(built: int) -> None:
        if built % max(to_build // 10, 1) == 0 or built == to_build:
            print(
                f"compile report: built {built}/{to_build} in {time.monotonic() - start:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    return report


def collect(
    providers: Sequence[str], kernels: Sequence[str], archs: Sequence[int], jobs: int, use_cache: bool
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(rows, notes, errors): one row per (spec, arch) of every provider, filtered by kernel name and arch."""
    notes: list[str] = []
    errors: list[str] = []
    planned: list[tuple[str, dict[str, Any]]] = []
    with WorkerPool(jobs) as pool:
        plans = pool.map(
            [
                {"op": "plan", "provider": provider, "kernels": list(kernels), "archs": list(archs), "cache": use_cache}
                for provider in providers
            ]
        )
        for provider, plan in zip(providers, plans, strict=True):
            if "jobs" in plan:
                planned += [(provider, job) for job in plan["jobs"]]
                if plan["unknown_archs"]:
                    notes.append(f"{provider}: no resource model for sm_{plan['unknown_archs']}, not checked there")
            elif "note" in plan:
                notes.append(plan["note"])
            else:
                errors.append(f"{provider}: {plan['error']}")
        to_build = [(provider, job) for provider, job in planned if job["result"] is None]
        built = pool.map(
            [
                {"op": "compile", "provider": provider, "index": job["index"], "arch": job["arch"], "cache": use_cache}
                for provider, job in to_build
            ],
            _progress(len(planned), len(to_build)),
        )
    for (_, job), answer in zip(to_build, built, strict=True):
        result = answer.get("result")
        if result is None or (result["kernel"], result["variant"]) != (job["kernel"], job["variant"]):
            reason = answer.get("error", "aot_specs() listed its specs in a different order on a second call")
            errors.append(f"{job['kernel']}/{job['variant']} sm_{job['arch']}: {reason}")
            result = None
        job["result"] = result
    rows = [job["result"] | {"problems": problems(job["result"])} for _, job in planned if job["result"]]
    return rows, notes, errors


def loop_cell(mix: dict[str, int]) -> str:
    """One main-loop iteration's instruction mix in a few words: total, MMAs (with shape), MUFU, FP32 ALU,
    integer/address, loads (global / async copy / shared / TMA), barriers."""
    if not mix:
        return "no loop"
    shapes = ",".join(f"{count} {name[4:]}" for name, count in mix.items() if name.startswith("mma:"))
    loads = "/".join(str(mix.get(name, 0)) for name in ("ldg", "ldgsts", "lds", "tma"))
    return (
        f"{mix['total']}: {shapes or '0 MMA'}; {mix.get('mufu', 0)} MUFU, {mix.get('fp32', 0)} FP32, "
        f"{mix.get('int', 0)} INT, ld g/cp/s/tma {loads}, {mix.get('barrier', 0)} BAR"
    )


def _cells(row: dict[str, Any]) -> list[str]:
    measured = (
        ["-"] * 7
        if row["error"]
        else [
            str(row["registers"]),
            f"{row['spill_stores']}/{row['spill_loads']}",
            f"{row['shared_bytes']} / {row['shared_limit']}",
            f"{row['ctas_per_sm']} ({row['occupancy_limit']})",
            row["tensor_core"],
            loop_cell(row["loop_mix"]),
            str(row["kernel_mix"].get("total", "-")),
        ]
    )
    return [
        row["kernel"],
        row["variant"],
        f"sm_{row['arch']}",
        row["dtype"],
        str(row["num_warps"]),
        str(row["num_stages"]),
        *measured,
        "FAIL" if row["problems"] else "ok",
    ]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    table = [list(TABLE_COLUMNS)] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(TABLE_COLUMNS))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in table)
    return "\n".join(line.rstrip() for line in lines)


def whole_run_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Per build with a `whole_run` (GEGLU at SD's K): instructions per warp over one program, and the epilogue's
    share: loop body × trips + the rest of the kernel."""
    lines = []
    for row in rows:
        for k, run in row.get("whole_run", {}).items():
            loop = row["loop_mix"]["total"]
            lines.append(
                f"whole run {row['kernel']}/{row['variant']} sm_{row['arch']} K={k}: {loop} x {run['trips']} + "
                f"{row['kernel_mix']['total'] - loop} = {run['total']} per warp, epilogue {run['epilogue']} "
                f"({100 * run['epilogue_share']:.1f}%)"
            )
    return lines


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sdkernels compile-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print machine-readable rows")
    parser.add_argument("--kernel", action="append", default=[], metavar="NAME", help="only this kernel")
    parser.add_argument("--arch", action="append", type=int, choices=ARCHS, help="only this architecture")
    parser.add_argument(
        "--specs",
        action="append",
        metavar="MODULE:FUNC",
        help="spec providers ('module:func' or 'file.py:func') instead of the shipped kernels",
    )
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile workers (default 2)")
    parser.add_argument("--no-cache", action="store_true", help="recompile even if a cached result exists")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    rows, notes, errors = collect(
        args.specs or DEFAULT_PROVIDERS, args.kernel, args.arch or ARCHS, args.jobs, use_cache=not args.no_cache
    )
    if args.kernel and not rows and not errors:
        errors.append(f"no configuration of kernel {', '.join(args.kernel)} was found")
    failing = [row for row in rows if row["problems"]]
    if args.json:
        print(json.dumps({"ok": not (failing or errors), "rows": rows, "notes": notes, "errors": errors}, indent=1))
    else:
        print(format_table(rows))
        for line in whole_run_lines(rows):
            print(line)
        for note in notes:
            print(f"note: {note}")
    report = sys.stderr if args.json else sys.stdout
    for row in failing:
        print(
            f"FAIL {row['kernel']}/{row['variant']} sm_{row['arch']} {row['dtype']} "
            f"(warps={row['num_warps']}, stages={row['num_stages']}): {'; '.join(row['problems'])}",
            file=report,
        )
    for error in errors:
        print(f"ERROR {error}", file=report)
    if failing or errors:
        print(f"compile report: {len(failing)} of {len(rows)} configurations fail, {len(errors)} errors", file=report)
        return 1
    print(f"compile report: all {len(rows)} configurations fit", file=report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
