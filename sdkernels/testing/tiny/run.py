"""Run any (tiny or real) SD pipeline once with a fixed prompt, generator and deterministic extra inputs."""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from PIL import Image

PROMPT = "a photo of a cat"


def _smooth_noise(size: int, channels: int, generator: torch.Generator, cells: int = 8) -> torch.Tensor:
    """(channels, size, size) values in [0, 1]: a coarse random grid upsampled bilinearly, so the image has
    image-like low-frequency structure instead of pixel noise."""
    coarse = torch.rand(1, channels, cells, cells, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]


def _to_pil(values: torch.Tensor) -> Image.Image:
    array = (values.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def make_init_image(size: int, seed: int = 0) -> Image.Image:
    """An RGB image for img2img/inpaint, deterministic in `seed`."""
    return _to_pil(_smooth_noise(size, 3, torch.Generator().manual_seed(seed)))


def make_mask_image(size: int, seed: int = 0) -> Image.Image:
    """An inpainting mask ("L", white = repaint): a half-size square at a random offset, so both the repainted and
    the kept region are large."""
    generator = torch.Generator().manual_seed(seed + 1)
    top, left = torch.randint(size // 8, size // 3, (2,), generator=generator).tolist()
    mask = torch.zeros(1, size, size)
    mask[:, top : top + size // 2, left : left + size // 2] = 1.0
    return _to_pil(mask)


def make_control_image(size: int, seed: int = 0) -> Image.Image:
    """A canny-like control image: white level lines of smooth noise on black, replicated to RGB."""
    field = _smooth_noise(size, 1, torch.Generator().manual_seed(seed + 2), cells=6)
    bands = (field * 6).floor()
    edges = torch.zeros_like(field)
    edges[:, 1:, :] += (bands[:, 1:, :] != bands[:, :-1, :]).float()
    edges[:, :, 1:] += (bands[:, :, 1:] != bands[:, :, :-1]).float()
    return _to_pil(edges.clamp(0, 1).expand(3, -1, -1))


def extra_inputs(pipe: DiffusionPipeline, size: int, seed: int) -> dict[str, Any]:
    """The image inputs a pipeline's `__call__` needs besides the prompt: a control image for ControlNet pipelines,
    an init image (and mask for inpainting) for img2img-style pipelines, nothing for txt2img."""
    parameters = inspect.signature(pipe.__call__).parameters
    if getattr(pipe, "controlnet", None) is not None:
        return {"image": make_control_image(size, seed)}
    inputs: dict[str, Any] = {}
    if "image" in parameters:
        inputs["image"] = make_init_image(size, seed)
    if "mask_image" in parameters:
        inputs["mask_image"] = make_mask_image(size, seed)
    return inputs


def initial_latents(pipe: DiffusionPipeline, size: int, generator: torch.Generator) -> torch.Tensor:
    """The initial noise, drawn in fp32 and then cast: diffusers draws it in the pipeline's dtype, and
    torch.randn gives unrelated numbers in fp64 (and differently rounded ones in fp16/bf16), so pipelines of different
    dtypes would not start from the same noise."""
    latent_size = size // pipe.vae_scale_factor
    shape = (1, pipe.vae.config.latent_channels, latent_size, latent_size)
    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer  # SD3: a transformer
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(pipe.device, denoiser.dtype)


def _steps_for_strength(steps: int, strength: float) -> int:
    """img2img-style pipelines denoise only int(num_inference_steps * strength) steps (0 steps -> a crash); ask for
    enough that exactly `steps` UNet steps run."""
    if not 0 < strength < 1:
        return steps
    total = math.ceil(steps / strength)
    while int(total * strength) < steps:  # float rounding in ceil
        total += 1
    return total


def run_pipeline(
    pipe: DiffusionPipeline, *, steps: int = 2, size: int = 64, seed: int = 0, output_type: str = "np", **extra: Any
) -> Any:
    """Call `pipe` with PROMPT, `steps` denoising steps (img2img-style pipelines get `steps / strength` inference
    steps, so that `steps` of them run), a `size` x `size` image and a CPU generator seeded with `seed` (the initial
    noise is drawn in fp32 on the CPU, so it is the same on every device and dtype), plus the extra image inputs its
    type needs. `extra` overrides or adds call arguments. Returns the pipeline's output object (`.images`)."""
    kwargs: dict[str, Any] = {
        "prompt": PROMPT,
        "num_inference_steps": steps,
        "generator": torch.Generator(device="cpu").manual_seed(seed),
        "output_type": output_type,
        **extra_inputs(pipe, size, seed),
    }
    parameters = inspect.signature(pipe.__call__).parameters
    if "height" in parameters:  # img2img takes its size from the init image
        kwargs.update(height=size, width=size)
    if "latents" in parameters:
        kwargs["latents"] = initial_latents(pipe, size, kwargs["generator"])
    kwargs.update(extra)
    if "strength" in parameters and "num_inference_steps" not in extra:
        kwargs["num_inference_steps"] = _steps_for_strength(
            steps, kwargs.get("strength", parameters["strength"].default)
        )
    with torch.inference_mode():
        return pipe(**kwargs)


def to_uint8(images: Any) -> np.ndarray:
    """Pipeline images (a float array in [0, 1] or a list of PIL images) as a uint8 (N, H, W, 3) array."""
    if isinstance(images, np.ndarray):
        return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
    return np.stack([np.asarray(image.convert("RGB")) for image in images])
