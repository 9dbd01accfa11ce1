"""Host time per op call, from the public `sdkernels.ops.*` function down to the launch, without a GPU.

The launch is stubbed by the launch recorder in stub mode (sdkernels/kernels/_launch.py): everything the host does
runs except the driver call itself. Two columns:
- "direct" (the default path): a call signature seen before skips the checks and plans and launches the compiled
  kernel Triton chose for it without Triton's binder (sdkernels/kernels/_direct.py): signature lookup, output
  allocation, the pointers' alignment key, and the call of the kernel's launcher with the full argument list (the
  stand-in launcher does nothing). A GPU adds the current-device and current-stream queries (two C calls).
- "binder" (SDKERNELS_DIRECT_LAUNCH=0, and every first call of a signature): input checks, the direct-or-
  dispatcher decision, the cached launch plan, and Triton's own argument binder and kernel-cache key for sm_90.
Inputs are meta tensors of SD's real shapes (fp16), so no memory is touched. Timed in process CPU time, best of
several rounds, next to a calibration call (a 16-element CPU `torch.add`) timed the same way, so results from
machines of different speed compare by the ratio.

    python -m bench.bench_host            # table: op, shape, µs per call, ratio to the calibration call
    python -m bench.bench_host --steps    # and the per-UNet-step totals for SD1.5 and SDXL (replayed on meta)
"""

from __future__ import annotations

import argparse
import collections
import time
from collections.abc import Callable

import torch

from sdkernels import ops
from sdkernels.kernels import _direct
from sdkernels.kernels._launch import LaunchRecorder

FP16 = torch.float16


def _meta(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, dtype=FP16, device="meta")


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, inner = x.shape
    return x.view(batch, length, heads, inner // heads).transpose(1, 2)  # what the attention processor passes


def cases() -> dict[str, tuple[str, Callable[[], object]]]:
    """op name -> (SD shape, a call of the public op on meta tensors of that shape)."""
    q, kv = _heads(_meta(2, 4096, 320), 8), _heads(_meta(2, 77, 320), 8)
    x, w, b = _meta(2, 4096, 320), _meta(2560, 320), _meta(2560)
    h = _meta(2, 4096, 2560)
    gx, gw, add = _meta(2, 320, 64, 64), _meta(320), _meta(2, 320)
    return {
        "attention": ("self (2,8,4096,40)", lambda: ops.attention(q, q, q)),
        "attention cross": ("(2,8,4096,40) x 77 keys", lambda: ops.attention(q, kv, kv)),
        "geglu": ("x (2,4096,320) W (2560,320)", lambda: ops.geglu(x, w, b)),
        "gelu_gate": ("h (2,4096,2560)", lambda: ops.gelu_gate(h)),
        "group_norm_silu": ("(2,320,64,64) G32 +temb", lambda: ops.group_norm_silu(gx, 32, gw, gw, add=add)),
    }


def best_us(fn: Callable[[], object], calls: int = 2000, rounds: int = 7) -> float:
    """Best-of-rounds process CPU time per call, in µs."""
    for _ in range(50):
        fn()  # plans, binders and caches warm
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) / calls)
    return best * 1e6


def calibration_us() -> float:
    a, b = torch.ones(16), torch.ones(16)
    return best_us(lambda: torch.add(a, b))


def measure(arch: int = 90, direct: bool = True) -> tuple[float, dict[str, tuple[str, float]]]:
    previous, _direct.enabled = _direct.enabled, direct
    try:
        with torch.no_grad(), LaunchRecorder(arch, stub=True) as recorder:
            results = {name: (shape, best_us(call)) for name, (shape, call) in cases().items()}
    finally:
        _direct.enabled = previous
    assert recorder.calls > 0, "no launch reached the stub: the ops took another path"
    assert (recorder.direct_launches > 0) == direct, "the direct path was not taken as asked"
    return calibration_us(), results


def step_calls(model: str) -> collections.Counter[str]:
    """How often each public op runs in one UNet step of `model` at its native size (replayed on meta)."""
    from sdkernels.replay import record_generation
    from sdkernels.tools.coldstart import meta_models

    counts: collections.Counter[str] = collections.Counter()
    originals = {name: getattr(ops, name) for name in ("attention", "geglu", "gelu_gate", "group_norm_silu")}

    def counting(name: str) -> Callable:
        def call(*args, **kwargs):
            counts[name] += 1
            return originals[name](*args, **kwargs)

        return call

    unet, _ = meta_models(model)
    size = {"sd15": 512, "sdxl": 1024}[model]
    try:
        for name in originals:
            setattr(ops, name, counting(name))
        record_generation(unet, None, height=size, width=size)
    finally:
        for name, fn in originals.items():
            setattr(ops, name, fn)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", action="store_true", help="also the per-UNet-step totals for SD1.5 and SDXL")
    args = parser.parse_args(argv)
    calibration, results = measure()
    _, binder = measure(direct=False)
    print(f"calibration (16-element CPU torch.add): {calibration:.2f} µs")
    print(f"{'op':18s} {'SD shape':30s} {'direct µs':>9s} {'x calib':>8s} {'binder µs':>9s} {'x calib':>8s}")
    for name, (shape, us) in results.items():
        slow = binder[name][1]
        print(f"{name:18s} {shape:30s} {us:9.1f} {us / calibration:8.1f} {slow:9.1f} {slow / calibration:8.1f}")
    if args.steps:
        per_op = {"attention": results["attention"][1], **{n: results[n][1] for n in ("geglu", "gelu_gate")}}
        per_op["group_norm_silu"] = results["group_norm_silu"][1]
        for model in ("sd15", "sdxl"):
            counts = step_calls(model)
            total = sum(per_op[name] * n for name, n in counts.items())
            calls = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
            print(f"{model} UNet step: {calls}: {total / 1000:.2f} ms of host time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
