"""Text-to-image with your local SD1.5 / SD2.1 / SDXL checkpoint, unpatched vs patched with sdkernels.

    python -m bench.compare_txt2img /models/stable-diffusion-v1-5                  # a diffusers folder
    python -m bench.compare_txt2img /models/v1-5-pruned-emaonly.safetensors \\
        --config /models/stable-diffusion-v1-5                                  # one file + its configs

(From the repository root, with sdkernels installed: `pip install -e .`.)
Nothing is downloaded: everything loads with local_files_only=True. A single .safetensors file still needs the
component configs (text encoder, tokenizer, scheduler); pass --config with a local diffusers folder of the same model
(or have them in the Hugging Face cache). SDXL is recognised from model_index.json or from the checkpoint's keys.

Prints the patch report, the largest pixel difference, and the median time of a pipeline call (CUDA events, after
one untimed warm-up call each), and saves [unpatched | patched | |difference|] side by side. Without CUDA, or without
a checkpoint path, it says what it needs and runs the tiny random-weight SD pipeline instead (on CPU, through the
Triton interpreter: slow, but the real kernels).
"""

from __future__ import annotations

import os
import sys

import torch

# On CPU the kernels can only run through Triton's interpreter, which must be switched on before Triton is imported.
if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.pipelines.pipeline_utils import DiffusionPipeline

from sdkernels import _dispatch
from sdkernels.testing.compare import DTYPES, compare_patched, print_timings, side_by_side
from sdkernels.testing.tiny import make_sd_pipeline, run_pipeline

TINY_STEPS, TINY_SIZE = 2, 64


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("model", nargs="?", type=Path, help="local diffusers folder or single .safetensors file")
    parser.add_argument("--config", type=Path, help="local diffusers folder with the configs for a single file")
    parser.add_argument("--prompt", default="a photo of an astronaut riding a horse on the moon")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, help="image side (default: the model's native size)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side, after a warm-up (CUDA)")
    parser.add_argument("--out", type=Path, default=Path("sdkernels_txt2img.png"))
    return parser


def is_sdxl(model: Path) -> bool:
    """SDXL if the diffusers folder's pipeline class says so, or if the single-file checkpoint has SDXL's second
    text encoder (`conditioner.embedders.1.*`); only key names are read, no tensors."""
    if model.is_dir():
        return "XL" in json.loads((model / "model_index.json").read_text())["_class_name"]
    from safetensors import safe_open

    with safe_open(str(model), framework="pt") as checkpoint:
        return any(key.startswith("conditioner.embedders.1.") for key in checkpoint.keys())


def load_pipeline(
    model: Path,
    classes: tuple[type, type],
    dtype: torch.dtype,
    config: Path | None,
    device: str = "cuda",
    **components: Any,
) -> DiffusionPipeline:
    """Load `model` with classes[1] if it is SDXL, else classes[0], strictly from local files, onto `device`."""
    if not model.exists():
        raise SystemExit(f"{model} does not exist (expected a diffusers folder or a .safetensors file)")
    pipeline_class = classes[1] if is_sdxl(model) else classes[0]
    if pipeline_class.__name__.startswith("StableDiffusion") and "XL" not in pipeline_class.__name__:
        components.setdefault("safety_checker", None)  # not what is measured here, and it blanks random outputs
    options: dict[str, Any] = {"torch_dtype": dtype, "local_files_only": True, **components}
    try:
        if model.is_dir():
            pipe = pipeline_class.from_pretrained(model, **options)
        else:
            pipe = pipeline_class.from_single_file(model, config=str(config) if config else None, **options)
    except (OSError, ValueError) as error:
        hint = "" if model.is_dir() or config else " (for a single file, pass --config /path/to/diffusers-folder)"
        raise SystemExit(f"could not load {model} from local files{hint}: {error}") from error
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def explain_fallback(args: argparse.Namespace, needs: str) -> None:
    missing = [] if torch.cuda.is_available() else ["a CUDA GPU"]
    if args.model is None:
        missing.append(needs)
    print(
        f"this example needs {' and '.join(missing)}; running the tiny random-weight pipeline instead "
        f"({TINY_SIZE}x{TINY_SIZE}, {TINY_STEPS} steps)."
    )
    if not torch.cuda.is_available() and _dispatch.INTERPRET:
        print("on CPU the patched run goes through the Triton interpreter: expect a few minutes.")


def tiny_settings(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    """Device and dtype for the tiny fallback; sets args.steps/args.size to the tiny run's."""
    args.steps, args.size = TINY_STEPS, TINY_SIZE
    if torch.cuda.is_available():
        return torch.device("cuda"), DTYPES[args.dtype]
    torch.set_num_threads(1)  # the interpreter is slower, not faster, with threads
    return torch.device("cpu"), torch.float32


def compare_and_save(pipe: DiffusionPipeline, call: Callable[[], Any], args: argparse.Namespace) -> int:
    """Unpatched vs patched: print the report, the difference and the timings, save the images side by side."""
    device = pipe.device
    repeats = args.repeats if device.type == "cuda" else 1
    comparison = compare_patched(pipe, call, repeats=repeats)
    print(
        f"max |patched - unpatched| = {comparison.max_difference:.3g} (pixel values in [0, 1]; 1/255 = {1 / 255:.3g})"
    )
    print_timings(comparison, device)
    side_by_side(comparison.unpatched, comparison.patched).save(args.out)
    print(f"saved [unpatched | patched | |difference| scaled to max] to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = base_parser(__doc__.splitlines()[0]).parse_args(argv)
    if args.model is not None and torch.cuda.is_available():
        pipe = load_pipeline(
            args.model, (StableDiffusionPipeline, StableDiffusionXLPipeline), DTYPES[args.dtype], args.config
        )
        args.size = args.size or pipe.unet.config.sample_size * pipe.vae_scale_factor
        print(f"{type(pipe).__name__} from {args.model}: {args.size}x{args.size}, {args.steps} steps, {args.dtype}")
    else:
        explain_fallback(args, "a local SD1.5/SD2.1/SDXL checkpoint (folder or .safetensors)")
        device, dtype = tiny_settings(args)
        pipe = make_sd_pipeline(device=device, dtype=dtype, seed=args.seed)

    def call() -> Any:
        return run_pipeline(pipe, steps=args.steps, size=args.size, seed=args.seed, prompt=args.prompt).images[0]

    return compare_and_save(pipe, call, args)


if __name__ == "__main__":
    sys.exit(main())
