"""Replay one text-to-image generation on the meta device with kernel launches recorded, not run.

`record_generation(unet, vae, ...)` builds weightless meta-device twins of the models (same config, same class),
patches them as `sdkernels.patch` would, and runs one UNet step at the guidance batch and the VAE decode at the
generation's resolution inside a `LaunchRecorder` for the target GPU architecture. The recorder's distinct compiles
are exactly the Triton compiles that generation triggers on that GPU: `sdkernels.warmup` compiles them ahead of
time, and `python -m sdkernels coldstart` lists and counts them without a GPU.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from sdkernels.kernels._launch import LaunchRecorder


def meta_twin(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A weightless copy of a diffusers model (same class and config) on the meta device, in `dtype`."""
    with torch.device("meta"):
        twin = type(module).from_config(dict(module.config))
    return twin.to(dtype).eval()


def _unet_inputs(unet: nn.Module, batch: int, height: int, width: int, text_len: int, dtype: torch.dtype) -> dict:
    config = unet.config
    scale = 8  # the VAE's downsampling: latents are image / 8
    inputs: dict[str, Any] = {
        "sample": torch.empty(batch, config.in_channels, height // scale, width // scale, dtype=dtype, device="meta"),
        "timestep": torch.tensor(999, device="meta"),
        "encoder_hidden_states": torch.empty(batch, text_len, config.cross_attention_dim, dtype=dtype, device="meta"),
    }
    if config.get("addition_embed_type") == "text_time":  # SDXL: pooled text embedding + 6 size/crop ids
        time_ids = 6
        text_embeds = config.projection_class_embeddings_input_dim - time_ids * config.addition_time_embed_dim
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.empty(batch, text_embeds, dtype=dtype, device="meta"),
            "time_ids": torch.empty(batch, time_ids, dtype=dtype, device="meta"),
        }
    return inputs


def vae_dtype(vae: nn.Module, dtype: torch.dtype, upcast_vae: bool) -> torch.dtype:
    """SDXL pipelines (`upcast_vae`) decode with a `force_upcast` VAE in fp32 when they run in fp16; SD1.x/2.x
    pipelines decode in the pipeline's dtype."""
    upcast = upcast_vae and dtype == torch.float16 and vae.config.get("force_upcast", False)
    return torch.float32 if upcast else dtype


def record_generation(
    unet: nn.Module | None,
    vae: nn.Module | None,
    *,
    height: int,
    width: int,
    batch_size: int = 1,
    guidance: bool = True,
    dtype: torch.dtype = torch.float16,
    arch: int = 90,
    text_len: int = 77,
    upcast_vae: bool = False,
    patch_kwargs: dict[str, bool] | None = None,
    keep_compile_args: bool = False,
) -> LaunchRecorder:
    """Record the launches of one UNet step and one VAE decode of a `height` x `width` generation of `batch_size`
    images (the UNet runs at 2 * batch_size with classifier-free guidance) on GPU architecture `arch`.
    `upcast_vae`: the pipeline decodes a force_upcast VAE in fp32 (StableDiffusionXLPipeline does)."""
    from sdkernels.patch import patch

    recorder = LaunchRecorder(arch, keep_compile_args=keep_compile_args)
    with torch.no_grad():
        if unet is not None:
            twin = meta_twin(unet, dtype)
            patch(twin, **(patch_kwargs or {}))
            inputs = _unet_inputs(twin, batch_size * (2 if guidance else 1), height, width, text_len, dtype)
            with recorder:
                twin(**inputs)
        if vae is not None:
            _record_decode(recorder, vae, batch_size, height, width, vae_dtype(vae, dtype, upcast_vae), patch_kwargs)
    return recorder


def _record_decode(
    recorder: LaunchRecorder,
    vae: nn.Module,
    batch_size: int,
    height: int,
    width: int,
    dtype: torch.dtype,
    patch_kwargs: dict[str, bool] | None = None,
) -> None:
    """Record one VAE decode of `batch_size` latents of a `height` x `width` image (a patched meta twin)."""
    from sdkernels.patch import patch

    twin = meta_twin(vae, dtype)
    patch(twin, **(patch_kwargs or {}))
    latents = torch.empty(batch_size, twin.config.latent_channels, height // 8, width // 8, dtype=dtype, device="meta")
    with recorder:
        twin.decode(latents)


def record_sd3_generation(
    transformer: nn.Module,
    vae: nn.Module | None,
    *,
    height: int,
    width: int,
    batch_size: int = 1,
    guidance: bool = True,
    dtype: torch.dtype = torch.float16,
    arch: int = 90,
    text_len: int = 77 + 256,
    keep_compile_args: bool = False,
) -> LaunchRecorder:
    """`record_generation` for SD3 / SD3.5 pipelines: one SD3Transformer2DModel step (image tokens + `text_len` text
    tokens: CLIP's 77 + max_sequence_length) at the guidance batch, then the VAE decode in the pipeline's dtype."""
    from sdkernels.patch import patch

    recorder = LaunchRecorder(arch, keep_compile_args=keep_compile_args)
    batch, meta = batch_size * (2 if guidance else 1), {"dtype": dtype, "device": "meta"}
    with torch.no_grad():
        twin = meta_twin(transformer, dtype)
        patch(twin)
        config = twin.config
        with recorder:
            twin(
                hidden_states=torch.empty(batch, config.in_channels, height // 8, width // 8, **meta),
                encoder_hidden_states=torch.empty(batch, text_len, config.joint_attention_dim, **meta),
                pooled_projections=torch.empty(batch, config.pooled_projection_dim, **meta),
                timestep=torch.empty(batch, **meta),
            )
        if vae is not None:
            _record_decode(recorder, vae, batch_size, height, width, dtype)
    return recorder
