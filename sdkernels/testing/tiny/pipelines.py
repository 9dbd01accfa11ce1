"""Tiny offline Stable Diffusion pipelines with random weights: SD1.x txt2img / img2img / inpaint / ControlNet and
SDXL. Each builder is deterministic in `seed` (same seed -> bit-identical weights on any device/dtype it is cast to),
builds in well under a second and never touches the hub.

Component seeds are offsets of `seed`, so e.g. the txt2img and img2img pipelines for one seed share their weights.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.pipelines.pipeline_utils import DiffusionPipeline

from sdkernels.testing.tiny.components import (
    make_scheduler,
    make_text_encoder,
    make_text_encoder_with_projection,
    make_tokenizer,
    make_unet,
    make_vae,
    seeded,
    tiny_sdxl_unet_config,
    tiny_unet_config,
)

_UNET, _VAE, _TEXT, _TEXT_2, _CONTROLNET = range(5)  # offsets added to `seed`, one per component
_CONTROL_EMBEDDING_CHANNELS = (16, 16, 32, 32)  # 3 stride-2 convs: control image -> latent resolution (factor 8)

_SD_EXTRAS = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


def _finish(pipe: DiffusionPipeline, device: str | torch.device, dtype: torch.dtype) -> DiffusionPipeline:
    # torch.nn.Module.to, not ModelMixin.to: diffusers 0.42 warns about "modules that should be kept in float32: []"
    # on every dtype cast (its `fp32_modules or []` is never None); these models have no such modules.
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            torch.nn.Module.to(component, device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sd_components(seed: int, *, unet_in_channels: int = 4) -> dict[str, Any]:
    tokenizer = make_tokenizer()
    return {
        "vae": make_vae(seed=seed + _VAE),
        "text_encoder": make_text_encoder(tokenizer, seed=seed + _TEXT),
        "tokenizer": tokenizer,
        "unet": make_unet(tiny_unet_config(in_channels=unet_in_channels), seed=seed + _UNET),
        "scheduler": make_scheduler("ddim"),
        **_SD_EXTRAS,
    }


def make_sd_pipeline(
    *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> StableDiffusionPipeline:
    """A tiny SD1.x txt2img pipeline (UNet 5.8 M parameters, VAE 1.0 M, 2-layer text encoder), DDIM scheduler."""
    return _finish(StableDiffusionPipeline(**_sd_components(seed)), device, dtype)


def make_img2img_pipeline(
    *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> StableDiffusionImg2ImgPipeline:
    """Tiny SD1.x img2img: the same weights as `make_sd_pipeline(seed=seed)`; also runs the VAE encoder."""
    return _finish(StableDiffusionImg2ImgPipeline(**_sd_components(seed)), device, dtype)


def make_inpaint_pipeline(
    *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> StableDiffusionInpaintPipeline:
    """Tiny SD1.x inpainting: UNet with in_channels=9 (noisy latents + mask + masked-image latents)."""
    return _finish(StableDiffusionInpaintPipeline(**_sd_components(seed, unet_in_channels=9)), device, dtype)


def make_controlnet(unet: torch.nn.Module, *, seed: int = 0) -> ControlNetModel:
    """A ControlNetModel matching `unet`'s config, with random weights.

    ControlNet initialises its output convolutions (the conditioning embedding's conv_out, the per-level
    `controlnet_down_blocks` and `controlnet_mid_block`) to zero, so an untrained one adds exactly nothing to the UNet
    and a wrong kernel inside it could not change the image. They are re-drawn small and random here so the
    ControlNet's residuals really reach the UNet.
    """
    with seeded(seed):
        controlnet = ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=_CONTROL_EMBEDDING_CHANNELS, load_weights_from_unet=False
        )
        zero_initialised = [
            controlnet.controlnet_cond_embedding.conv_out,
            controlnet.controlnet_mid_block,
            *controlnet.controlnet_down_blocks,
        ]
        for conv in zero_initialised:
            torch.nn.init.normal_(conv.weight, std=0.5 / conv.weight[0].numel() ** 0.5)
            torch.nn.init.normal_(conv.bias, std=0.02)
    return controlnet.eval()


def make_controlnet_pipeline(
    *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> StableDiffusionControlNetPipeline:
    """Tiny SD1.x ControlNet pipeline: the txt2img weights of `seed` plus a ControlNet with the same topology."""
    components = _sd_components(seed)
    controlnet = make_controlnet(components["unet"], seed=seed + _CONTROLNET)
    return _finish(StableDiffusionControlNetPipeline(controlnet=controlnet, **components), device, dtype)


def make_sdxl_pipeline(
    *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> StableDiffusionXLPipeline:
    """A tiny SDXL pipeline: two CLIP text encoders (the second with projection; its tokenizer pads with "!"),
    an SDXL-topology UNet with "text_time" conditioning, Euler scheduler, no watermarker."""
    tokenizer = make_tokenizer()
    tokenizer_2 = make_tokenizer(pad_token="!")
    pipe = StableDiffusionXLPipeline(
        vae=make_vae(seed=seed + _VAE),
        text_encoder=make_text_encoder(tokenizer, seed=seed + _TEXT),
        text_encoder_2=make_text_encoder_with_projection(tokenizer_2, seed=seed + _TEXT_2),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=make_unet(tiny_sdxl_unet_config(), seed=seed + _UNET),
        scheduler=make_scheduler("euler"),
        add_watermarker=False,
    )
    return _finish(pipe, device, dtype)
