"""Text-to-image with sdkernels: load a Stable Diffusion pipeline, patch it, generate, save, unpatch.

    python examples/txt2img.py /path/to/stable-diffusion-v1-5     # a local diffusers folder: SD 1.x, 2.x or SDXL
    python examples/txt2img.py                                      # no path: a tiny random-weight pipeline (offline)

On CUDA the patched ops run the Triton kernels. On CPU they run their PyTorch reference, unless TRITON_INTERPRET=1 is
set before Python starts (then the same Triton kernels run through Triton's interpreter: slow, but real).
"""

from __future__ import annotations

import argparse

import torch
from diffusers import DiffusionPipeline

import sdkernels


def load_pipeline(path: str | None, device: str, dtype: torch.dtype) -> DiffusionPipeline:
    if path is None:  # a stand-in with SD1.x's block classes and random weights; nothing is downloaded
        from sdkernels.testing.tiny import make_sd_pipeline

        return make_sd_pipeline(device=device, dtype=dtype)
    # AutoPipeline-style loading: model_index.json names the pipeline class (SD, SDXL, ...).
    return DiffusionPipeline.from_pretrained(path, torch_dtype=dtype, local_files_only=True).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="local diffusers folder (default: the tiny offline pipeline)")
    parser.add_argument("--prompt", default="a photo of an astronaut riding a horse on the moon")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default="txt2img.png")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    pipe = load_pipeline(args.model, "cuda" if cuda else "cpu", torch.float16 if cuda else torch.float32)
    size = None if args.model else 64  # the tiny pipeline: 64x64 pixels, a few steps
    steps = args.steps if args.model else 2

    report = sdkernels.patch(pipe)  # every UNet/VAE GroupNorm+SiLU, attention and GEGLU site it can take over
    print(report)  # what was patched, what was left alone and why, which path the ops take
    generator = torch.Generator(pipe.device).manual_seed(0)
    image = pipe(args.prompt, num_inference_steps=steps, height=size, width=size, generator=generator).images[0]
    image.save(args.out)
    print(f"saved {args.out}")

    sdkernels.unpatch(pipe)  # the pipeline is exactly as loaded again


if __name__ == "__main__":
    main()
