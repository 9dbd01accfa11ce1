"""`python -m sdkernels traffic`: the bytes each sdkernels kernel moves on Stable Diffusion's real shapes, next to
what eager PyTorch's op sequence moves and the floor (every input read once, every output written once).

Kernel bytes are derived from each kernel's tiling, for the launch config stated per row (the first autotune
candidate that survives the kernel's own pruning, i.e. what the interpreter runs; on a GPU the autotuner may time
the others and pick a different tile, which changes the re-read counts): logical global loads and stores, i.e.
what the kernel requests, including re-reads that a GPU may serve from L2. The model is exact for that config:
tests/test_traffic.py counts the bytes the kernels load and store under the Triton interpreter and compares them
tensor by tensor.

Eager baselines (the op sequence diffusers runs without sdkernels):
- GroupNorm -> SiLU: [x + temb (read x, write h)], F.group_norm as PyTorch's CUDA kernel does it (a moments kernel
  reads x, an apply kernel reads x and writes y), F.silu (read y, write z). A channels_last copy is not counted.
- GEGLU: F.linear with the same tile re-reads as our kernel (so the difference is exactly what fusion saves), its
  (M, 2*inner) output written, gelu(gate) (read, write), value * g (2 reads, 1 write).
- attention: unfused math (S = scale*QK^T written, softmax reads S writes P, P@V reads P), and a flash-style
  estimate (K/V re-read per 128-query tile); matmul operands of the unfused path are counted once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import asdict

from sdkernels.kernels import group_norm as gn_kernel
from sdkernels.tools import sd3_shapes, sd_shapes, traffic_sd3
from sdkernels.tools.traffic_model import (
    ITEMSIZE,
    Traffic,
    attention_traffic,
    geglu_traffic,
    gelu_gate_traffic,
    group_norm_traffic,
)

KERNELS = ("group_norm_silu", "geglu", "gelu_gate", "attention", "ada_layer_norm", "linear_gelu")


# -------------------------------------------------------------------------------------------------------- table
def collect(models: list[str] | None, kernels: list[str], dtype: str, arch: str, sm_count: int) -> list[Traffic]:
    sd3_models = [m for m in (models or []) if m in sd3_shapes.SD3_MODELS]
    models = None if models is None else [m for m in models if m not in sd3_shapes.SD3_MODELS]
    rows: list[Traffic] = []
    if sd3_models:
        rows += traffic_sd3.sd3_traffic(sd3_models, kernels, dtype, arch)
    if models == []:
        return rows
    if "group_norm_silu" in kernels:
        rows += [group_norm_traffic(s, dtype, sm_count) for s in sd_shapes.group_norm_shapes(models)]
    if "geglu" in kernels:
        rows += [geglu_traffic(s, dtype) for s in sd_shapes.geglu_shapes(models)]
    if "gelu_gate" in kernels:
        rows += [gelu_gate_traffic(s, dtype) for s in sd_shapes.geglu_shapes(models)]
    if "attention" in kernels:
        rows += [attention_traffic(s, dtype, arch) for s in sd_shapes.attention_shapes(models)]
    return rows


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def _grid(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [
        [c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        for line in [header, *body]
    ]
    return "\n".join("  ".join(line) for line in lines)


def totals(rows: list[Traffic]) -> list[dict]:
    """Per (kernel, model, component): bytes of one UNet step / VAE pass, summed over shapes x calls."""
    acc: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        slot = acc[(r.kernel, r.model, r.component)]
        slot["ours"] += r.total * r.calls
        slot["floor"] += r.floor * r.calls
        for name, value in r.baselines.items():
            slot[name] += value * r.calls
    return [{"kernel": k, "model": m, "component": c, **v} for (k, m, c), v in acc.items()]


def format_text(rows: list[Traffic], dtype: str) -> str:
    out = [
        f"Bytes moved per call, {dtype}, MB = 1e6 bytes. ours = logical global loads + stores of the sdkernels "
        "kernel for the config named below (re-reads that L2 may serve included); baselines = the eager op "
        "sequences described in `python -m sdkernels traffic --help`; floor = inputs read once, outputs written "
        "once."
    ]
    for kernel in KERNELS:
        selected = [r for r in rows if r.kernel == kernel]
        if not selected:
            continue
        names = list(selected[0].baselines)
        header = [
            "shape",
            "calls",
            "ours MB",
            *(f"{n} MB" for n in names),
            "floor MB",
            "ours/floor",
            *(f"{n}/ours" for n in names),
        ]
        body = [
            [
                r.label,
                str(r.calls),
                _mb(r.total),
                *(_mb(r.baselines[n]) for n in names),
                _mb(r.floor),
                f"{r.total / r.floor:.2f}",
                *(f"{r.baselines[n] / r.total:.2f}" for n in names),
            ]
            for r in selected
        ]
        out += ["", f"== {kernel}", _grid(header, body), "config assumed per shape:"]
        out += [f"  {r.label}: {r.config}" for r in selected]
    summary = totals(rows)
    if summary:
        out += ["", "== per UNet/transformer step (batch 2) / VAE encode or decode (batch 1): sum of bytes x calls, MB"]
        body = [
            [
                f"{t['kernel']} {t['model']}-{t['component']}",
                _mb(t["ours"]),
                "  ".join(
                    f"{k}={_mb(v)}" for k, v in t.items() if k not in ("kernel", "model", "component", "ours", "floor")
                ),
                _mb(t["floor"]),
            ]
            for t in summary
        ]
        out.append(_grid(["kernel / part", "ours", "baselines", "floor"], body))
    return "\n".join(out)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sdkernels traffic", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable rows and totals")
    parser.add_argument(
        "--models", default=",".join(sd_shapes.MODELS), help="comma-separated: sd15,sd21,sdxl and sd3m,sd35m,sd35l"
    )
    parser.add_argument("--kernel", action="append", choices=KERNELS, help="only these kernels (repeatable)")
    parser.add_argument("--dtype", default="fp16", choices=sorted(ITEMSIZE))
    parser.add_argument(
        "--arch",
        default="sm90",
        choices=("sm80", "sm90", "small"),
        help="attention config row to assume (sm90 = H100, sm80 = A100)",
    )
    parser.add_argument(
        "--sm-count",
        type=int,
        default=gn_kernel.DEFAULT_SM_COUNT,
        help="SMs for the GroupNorm split decision (132 = H100 SXM, 108 = A100)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    models = [m for m in args.models.split(",") if m]
    rows = collect(models, args.kernel or list(KERNELS), args.dtype, args.arch, args.sm_count)
    if args.json:
        print(
            json.dumps(
                {
                    "dtype": args.dtype,
                    "arch": args.arch,
                    "sm_count": args.sm_count,
                    "rows": [{**asdict(r), "ours_total": r.total} for r in rows],
                    "totals": totals(rows),
                },
                indent=1,
            )
        )
    else:
        print(format_text(rows, args.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
