"""Correctness sweep for the GPU check: every op against the fp32 PyTorch reference on SD1.5 shapes, once per
shipped autotune configuration that the kernel's own pruning accepts for that shape (no sanitizer, so it is fast).

How every config is reached without knowing kernel internals: with opt-in autotuning on (GPU only), the first
call records which `triton.autotune` wrappers ran and with which arguments; each of their configs that the
wrapper's prune function keeps for those arguments is then pinned alone (`autotuner.configs = [config]`) and the
op is run and compared again.
Rule: max |ours - fp32 reference| <= 2 x max |PyTorch same dtype - fp32 reference| + a small floor, per dtype.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from triton.runtime.autotuner import Autotuner

from sdkernels import ops, reference

FLOOR = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float32: 1e-4}
Case = tuple[str, str, Callable[[], tuple[Callable[[], torch.Tensor], Callable[[torch.dtype], torch.Tensor]]]]


def _group_norm_case(shape: tuple[int, ...], groups: int, dtype: torch.dtype, device: str):
    def make():
        x = torch.randn(shape, device=device, dtype=dtype)
        w, b = (torch.randn(shape[1], device=device, dtype=dtype) for _ in range(2))
        add = torch.randn(shape[0], shape[1], device=device, dtype=dtype)
        run = lambda: ops.group_norm_silu(x, groups, w, b, 1e-5, silu=True, add=add)  # noqa: E731
        ref = lambda dt: reference.group_norm_silu(  # noqa: E731
            x.to(dt), groups, w.to(dt), b.to(dt), 1e-5, silu=True, add=add.to(dt)
        )
        return run, ref

    return make


def _attention_case(b: int, h: int, lq: int, lk: int, d: int, dtype: torch.dtype, device: str):
    def make():
        q = torch.randn(b, h, lq, d, device=device, dtype=dtype)
        k, v = (torch.randn(b, h, lk, d, device=device, dtype=dtype) for _ in range(2))
        run = lambda: ops.attention(q, k, v)  # noqa: E731
        ref = lambda dt: reference.attention(q.to(dt), k.to(dt), v.to(dt), d**-0.5, None)  # noqa: E731
        return run, ref

    return make


def _geglu_case(tokens: int, dim: int, dtype: torch.dtype, device: str):
    def make():
        x = torch.randn(2, tokens, dim, device=device, dtype=dtype)
        w = torch.randn(8 * dim, dim, device=device, dtype=dtype) * dim**-0.5
        bias = torch.randn(8 * dim, device=device, dtype=dtype)
        run = lambda: ops.geglu(x, w, bias)  # noqa: E731
        ref = lambda dt: reference.geglu(x.to(dt), w.to(dt), bias.to(dt))  # noqa: E731
        return run, ref

    return make


def sd15_cases(device: str, small: bool = False) -> list[Case]:
    """SD1.5 UNet (batch 2, 64x64 latents) and VAE shapes; `small` shrinks spatial sizes (CPU dry run)."""
    s = 8 if small else 64
    cases: list[Case] = []
    for dtype in (torch.float16, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        for c, hw in ((320, s), (640, s // 2), (1280, s // 8 or 1)):
            cases.append(
                ("group_norm_silu", f"unet C{c} {hw}x{hw} {name}", _group_norm_case((2, c, hw, hw), 32, dtype, device))
            )
        cases.append(
            ("group_norm_silu", f"vae C512 {name}", _group_norm_case((1, 512, 2 * s, 2 * s), 32, dtype, device))
        )
        for d, tokens in ((40, s * s), (80, s * s // 4), (160, s * s // 16)):
            cases.append(
                ("attention", f"self d{d} L{tokens} {name}", _attention_case(2, 8, tokens, tokens, d, dtype, device))
            )
            cases.append(
                ("attention", f"cross d{d} L{tokens}x77 {name}", _attention_case(2, 8, tokens, 77, d, dtype, device))
            )
        cases.append(
            ("attention", f"vae d512 L{s * s} {name}", _attention_case(1, 1, s * s, s * s, 512, dtype, device))
        )
        for dim, tokens in ((320, s * s), (640, s * s // 4), (1280, s * s // 16)):
            cases.append(("geglu", f"dim{dim} T{tokens} {name}", _geglu_case(tokens, dim, dtype, device)))
    return cases


class _Recorder:
    """Records every Autotuner that runs, with the named arguments of its first call."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[Autotuner, dict[str, Any]]] = {}
        self._original = Autotuner.run

    def __enter__(self) -> _Recorder:
        original, seen = self._original, self.seen

        def run(tuner: Autotuner, *args: Any, **kwargs: Any) -> Any:
            seen.setdefault(id(tuner), (tuner, {**dict(zip(tuner.arg_names, args, strict=False)), **kwargs}))
            return original(tuner, *args, **kwargs)

        Autotuner.run = run
        return self

    def __exit__(self, *exc: object) -> None:
        Autotuner.run = self._original


def _fits(tuner: Autotuner, config: Any, named_args: dict[str, Any]) -> bool:
    prune = getattr(tuner, "early_config_prune", None)
    if prune is None:
        return True
    try:
        return bool(prune([config], named_args))
    except ValueError:  # sdkernels' prune raises when nothing fits
        return False


def _errors(run: Callable[[], torch.Tensor], ref: Callable[[torch.dtype], torch.Tensor], dtype: torch.dtype):
    ours = run().float()
    exact = ref(torch.float32).float()
    torch_same = ref(dtype).float()
    return (ours - exact).abs().max().item(), (torch_same - exact).abs().max().item(), bool(torch.isfinite(ours).all())


def _config_rows(op: str, label: str, make: Any, deadline: float) -> list[dict[str, Any]]:
    """Rows of one case: the op as autotuned, then each fitting config of every autotuner it ran, pinned alone."""
    torch.manual_seed(0)
    run, ref = make()
    with _Recorder() as recorder:
        dtype = run().dtype  # the first call also autotunes (compiling every candidate once)
    rows = []
    for tuner, named_args in [(None, {})] + list(recorder.seen.values()):
        for index, config in enumerate(tuner.configs if tuner is not None else [None]):
            if config is not None and not _fits(tuner, config, named_args):
                continue
            row = {"op": op, "case": label, "kernel": getattr(getattr(tuner, "base_fn", None), "__name__", "autotuned")}
            row.update(config=index if config is not None else "best", detail=str(config or ""))
            if time.monotonic() > deadline:
                rows.append({**row, "status": "not reached (time budget)"})
                continue
            saved = (tuner.configs, dict(tuner.cache)) if tuner is not None else None
            try:
                if tuner is not None:
                    tuner.configs, tuner.cache = [config], {}
                ours, torch_err, finite = _errors(run, ref, dtype)
                ok = finite and ours <= 2 * torch_err + FLOOR[dtype]
                row.update(max_err=f"{ours:.3e}", torch_err=f"{torch_err:.3e}", status="ok" if ok else "FAIL")
            except Exception as exc:  # one config failing must not hide the others
                row.update(status=f"ERROR {type(exc).__name__}: {exc}"[:300])
            finally:
                if saved is not None:
                    tuner.configs, tuner.cache = saved
            rows.append(row)
    return rows


def sweep(out_csv: Path, device: str = "cuda", budget_s: float = 120.0, small: bool = False) -> tuple[int, int]:
    """Run every case x fitting config, appending CSV rows as they come (a killed run keeps what it measured).
    Returns (rows, failures)."""
    deadline, count, failures = time.monotonic() + budget_s, 0, 0
    columns = ["op", "case", "kernel", "config", "status", "max_err", "torch_err", "detail"]
    with out_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for op, label, make in sd15_cases(device, small):
            try:
                rows = (
                    _config_rows(op, label, make, deadline)
                    if time.monotonic() < deadline
                    else [{"op": op, "case": label, "status": "not reached (time budget)"}]
                )
            except Exception as exc:
                rows = [{"op": op, "case": label, "status": f"ERROR {type(exc).__name__}: {exc}"[:300]}]
            for row in rows:
                writer.writerow(row)
                failures += not str(row["status"]).startswith(("ok", "not reached"))
            count += len(rows)
            handle.flush()
            print(f"sweep: {label}: " + ", ".join(sorted({str(r["status"])[:40] for r in rows})), flush=True)
    return count, failures


def main(argv: list[str] | None = None) -> int:
    """`python -m sdkernels.tools.gpu_sweep OUT.csv [--cpu-dry-run]` (the GPU check's sweep stage)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("csv", type=Path)
    parser.add_argument("--cpu-dry-run", action="store_true", help="interpreter on CPU, tiny shapes")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds before the remaining rows are skipped")
    args = parser.parse_args(argv)
    if args.cpu_dry_run:
        from sdkernels.testing.interpreter import apply_interpreter_fixes

        apply_interpreter_fixes()
    else:
        from sdkernels.kernels._tuning import set_autotune

        set_autotune(True)  # launches then go through triton's autotuners, whose configs the sweep pins one by one
    rows, failures = sweep(args.csv, "cpu" if args.cpu_dry_run else "cuda", args.budget, small=args.cpu_dry_run)
    print(f"sweep: {rows} (case, config) rows, {failures} failing -> {args.csv}")
    return 1 if failures else 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
