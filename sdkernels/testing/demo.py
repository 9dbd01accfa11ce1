"""`python -m sdkernels demo`: patch a tiny offline SD pipeline (random weights, nothing downloads), compare the
patched image with the unpatched one, print the patch report and timings, save the images side by side.

Without CUDA, `python -m sdkernels demo` sets TRITON_INTERPRET=1 before Triton is imported, so the real Triton
kernels run on CPU tensors through the interpreter: slow (minutes: ~50 s of CPU per step, mostly GroupNorm programs),
but the same kernel code as on a GPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from sdkernels import _dispatch
from sdkernels.testing.compare import DTYPES, compare_patched, print_timings, side_by_side
from sdkernels.testing.interpreter import apply_interpreter_fixes
from sdkernels.testing.tiny import make_sd_pipeline, run_pipeline

if _dispatch.INTERPRET:
    apply_interpreter_fixes()  # the demo is a fixture too: bf16 right under the interpreter


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(prog="python -m sdkernels demo", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="denoising steps (default 3)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels, a multiple of 8 (default 64)")
    parser.add_argument("--out", type=Path, default=Path("sdkernels_demo.png"), help="where to save the images")
    parser.add_argument("--device", default="cuda" if cuda else "cpu", help="default: cuda if available, else cpu")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float16" if cuda else "float32",
        help="default: float16 on CUDA, float32 on CPU",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and of the noise")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3 if cuda else 1,
        help="timed runs after a warm-up on CUDA (default 3; 1 on CPU, where there is no warm-up)",
    )
    args = parser.parse_args(argv)
    if args.size % 8:
        parser.error(f"--size must be a multiple of 8 (the VAE factor), got {args.size}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if device.type == "cpu":
        torch.set_num_threads(1)  # the interpreter gets slower, not faster, with threads on a shared CPU
    run = dict(steps=args.steps, size=args.size, seed=args.seed)
    print(
        f"tiny SD1.x pipeline (random weights, offline): {args.size}x{args.size}, {args.steps} steps, "
        f"{args.dtype} on {device}"
    )

    pipe = make_sd_pipeline(device=device, dtype=dtype, seed=args.seed)
    comparison = compare_patched(pipe, lambda: run_pipeline(pipe, **run).images[0], repeats=args.repeats)

    # How far the image moves from rounding alone: the same pipeline one precision up (fp32 -> fp64, else -> fp32).
    reference_dtype = torch.float64 if dtype == torch.float32 else torch.float32
    reference = run_pipeline(make_sd_pipeline(device=device, dtype=reference_dtype, seed=args.seed), **run).images[0]
    noise = float(np.abs(comparison.unpatched - reference).max())

    difference = comparison.max_difference
    print(f"max |patched - unpatched| = {difference:.3g} (pixel values in [0, 1]; 1/255 = {1 / 255:.3g})")
    print(
        f"rounding noise of {args.dtype} for context: max |unpatched {args.dtype} - unpatched "
        f"{str(reference_dtype).removeprefix('torch.')}| = {noise:.3g}"
    )
    print_timings(comparison, device)
    print(f"unpatched {comparison.restored_sites} sites")

    side_by_side(comparison.unpatched, comparison.patched).save(args.out)
    print(f"saved [unpatched | patched | |difference| scaled to max] to {args.out}")
    finite = bool(np.isfinite(comparison.patched).all())
    # Kernel rounding is expected to stay within a few times the dtype's own rounding noise (floor: 2 grey levels).
    within = difference <= max(4 * noise, 2 / 255)
    print("result:", "OK" if finite and within else "the patched image differs more than rounding explains")
    return 0 if finite and within else 1
