"""ControlNet with sdkernels: `patch(pipe)` takes over the ControlNet's sites as well as the UNet's and the VAE's.

python examples/controlnet.py /path/to/sd15 --controlnet /path/to/sd-controlnet-canny --image edges.png
python examples/controlnet.py                  # no paths: a tiny random-weight ControlNet pipeline (offline)
"""

from __future__ import annotations

import argparse

import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
from PIL import Image

import sdkernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="local SD1.x diffusers folder (default: the tiny pipeline)")
    parser.add_argument("--controlnet", help="local diffusers ControlNet folder")
    parser.add_argument("--image", help="control image, e.g. an edge map")
    parser.add_argument("--prompt", default="a modern house by a lake, photograph")
    parser.add_argument("--out", default="controlnet.png")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    if args.model and args.controlnet:
        controlnet = ControlNetModel.from_pretrained(args.controlnet, torch_dtype=dtype, local_files_only=True)
        pipe = StableDiffusionControlNetPipeline.from_pretrained(
            args.model, controlnet=controlnet, torch_dtype=dtype, local_files_only=True
        ).to(device)
        size, steps = 512, 30
    else:  # stand-ins with random weights; nothing is downloaded
        from sdkernels.testing.tiny import make_controlnet_pipeline

        pipe, size, steps = make_controlnet_pipeline(device=device, dtype=dtype), 64, 2
    if args.image:
        control = Image.open(args.image).convert("RGB").resize((size, size))
    else:
        from sdkernels.testing.tiny import make_control_image

        control = make_control_image(size)

    print(sdkernels.patch(pipe))  # UNet, VAE and ControlNet sites, and anything left alone with the reason
    generator = torch.Generator(pipe.device).manual_seed(0)
    image = pipe(args.prompt, image=control, num_inference_steps=steps, height=size, width=size, generator=generator)
    image.images[0].save(args.out)
    print(f"saved {args.out}")
    sdkernels.unpatch(pipe)


if __name__ == "__main__":
    main()
