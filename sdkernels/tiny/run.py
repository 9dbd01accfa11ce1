"""Run any (tiny or real) SD pipeline once with a fixed prompt, generator and deterministic extra inputs."""

from __future__ import annotations

import inspect
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
    """An inpainting mask ("L", white = repaint): a random rectangle covering roughly the middle of the image."""
    generator = torch.Generator().manual_seed(seed + 1)
    low, high = torch.randint(size // 8, size // 3, (2,), generator=generator).tolist(), size * 2 // 3
    mask = torch.zeros(1, size, size)
    mask[:, low[0]:high + low[0] // 2, low[1]:high + low[1] // 2] = 1.0
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


def run_pipeline(pipe: DiffusionPipeline, *, steps: int = 2, size: int = 64, seed: int = 0, output_type: str = "np",
                 **extra: Any) -> Any:
    """Call `pipe` with PROMPT, `steps` inference steps, a `size` x `size` image and a CPU generator seeded with
    `seed` (so the initial noise is the same on every device), plus the extra image inputs its type needs.
    `extra` overrides or adds call arguments. Returns the pipeline's output object (`.images`)."""
    kwargs: dict[str, Any] = {
        "prompt": PROMPT,
        "num_inference_steps": steps,
        "generator": torch.Generator(device="cpu").manual_seed(seed),
        "output_type": output_type,
        **extra_inputs(pipe, size, seed),
    }
    if "height" in inspect.signature(pipe.__call__).parameters:  # img2img takes its size from the init image
        kwargs.update(height=size, width=size)
    kwargs.update(extra)
    with torch.inference_mode():
        return pipe(**kwargs)


def to_uint8(images: Any) -> np.ndarray:
    """Pipeline images (a float array in [0, 1] or a list of PIL images) as a uint8 (N, H, W, 3) array."""
    if isinstance(images, np.ndarray):
        return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
    return np.stack([np.asarray(image.convert("RGB")) for image in images])
