"""ControlNet with your local SD1.5 / SDXL base model and ControlNet, unpatched vs patched with sdkernels.

    python -m bench.compare_controlnet /models/stable-diffusion-v1-5 --controlnet /models/sd-controlnet-canny \\
        --image edges.png

`sdkernels.patch(pipe)` patches the ControlNet as well as the UNet and the VAE (it walks every model component).
Nothing is downloaded (local_files_only=True); single files need --config (see bench/compare_txt2img.py). Without
--image, a synthetic canny-like edge map is used. Without CUDA, or without both paths, it says what it needs and runs
the tiny random-weight ControlNet pipeline instead.
"""

from __future__ import annotations

import os
import sys

import torch

# On CPU the kernels can only run through Triton's interpreter, which must be switched on before Triton is imported.
if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path
from typing import Any

from diffusers import (
    ControlNetModel,
    StableDiffusionControlNetPipeline,
    StableDiffusionXLControlNetPipeline,
)
from PIL import Image

from bench.compare_txt2img import DTYPES, base_parser, compare_and_save, explain_fallback, load_pipeline, tiny_settings
from sdkernels.testing.tiny import make_control_image, make_controlnet_pipeline, run_pipeline


def load_controlnet(path: Path, dtype: torch.dtype, config: Path | None) -> ControlNetModel:
    if not path.exists():
        raise SystemExit(f"{path} does not exist (expected a diffusers ControlNet folder or a .safetensors file)")
    try:
        if path.is_dir():
            return ControlNetModel.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        return ControlNetModel.from_single_file(
            path, config=str(config) if config else None, torch_dtype=dtype, local_files_only=True
        )
    except (OSError, ValueError) as error:
        raise SystemExit(f"could not load the ControlNet {path} from local files: {error}") from error


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--controlnet", type=Path, help="local ControlNet: diffusers folder or single file")
    parser.add_argument("--controlnet-config", type=Path, help="local diffusers ControlNet folder for a single file")
    parser.add_argument("--image", type=Path, help="control image (e.g. an edge map); default: a synthetic one")
    parser.set_defaults(out=Path("sdkernels_controlnet.png"), prompt="a modern house by a lake, photograph")
    args = parser.parse_args(argv)

    if args.model is not None and args.controlnet is not None and torch.cuda.is_available():
        dtype = DTYPES[args.dtype]
        controlnet = load_controlnet(args.controlnet, dtype, args.controlnet_config)
        pipe = load_pipeline(
            args.model,
            (StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline),
            dtype,
            args.config,
            controlnet=controlnet,
        )
        args.size = args.size or pipe.unet.config.sample_size * pipe.vae_scale_factor
        print(
            f"{type(pipe).__name__} from {args.model} + {args.controlnet}: {args.size}x{args.size}, "
            f"{args.steps} steps, {args.dtype}"
        )
    else:
        if args.controlnet is None:
            args.model = None  # both paths are needed
        explain_fallback(args, "a local base checkpoint and a local ControlNet (--controlnet)")
        device, dtype = tiny_settings(args)
        pipe = make_controlnet_pipeline(device=device, dtype=dtype, seed=args.seed)

    if args.image is not None:
        control_image = Image.open(args.image).convert("RGB").resize((args.size, args.size), Image.BICUBIC)
    else:
        control_image = make_control_image(args.size, args.seed)

    def call() -> Any:
        return run_pipeline(
            pipe, steps=args.steps, size=args.size, seed=args.seed, prompt=args.prompt, image=control_image
        ).images[0]

    return compare_and_save(pipe, call, args)


if __name__ == "__main__":
    sys.exit(main())
