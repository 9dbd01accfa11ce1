"""The SD shape tables (sdkernels/tools/sd_shapes.py) against a meta-device forward of the real diffusers models
(sdkernels/tools/sd_census.py hooks every GroupNorm, GEGLU and Attention module)."""

from __future__ import annotations

import pytest
import torch

from sdkernels.tools import sd_census, sd_model_configs, sd_shapes


@pytest.mark.parametrize("model", sd_shapes.MODELS)
def test_sd_shapes_match_a_meta_forward_of_diffusers(model: str) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    side = sd_shapes.latent_side(model)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**sd_model_configs.UNET_CONFIGS[model])
        sample = torch.empty(2, 4, side, side)
        context = torch.empty(2, sd_shapes.TEXT_LEN, sd_model_configs.UNET_CONFIGS[model]["cross_attention_dim"])
        extra = {}
        if model == "sdxl":
            extra = {
                "added_cond_kwargs": {
                    "text_embeds": torch.empty(2, sd_model_configs.SDXL_TEXT_EMBEDS_DIM),
                    "time_ids": torch.empty(2, sd_model_configs.SDXL_TIME_IDS),
                }
            }
        gn, geglu, attention = sd_census.census(model, unet, lambda: unet(sample, 10, context, **extra), "unet")
        if model == "sd15":  # the VAE is the same network in all three; its table is per level, checked at 512²
            vae = AutoencoderKL(**sd_model_configs.VAE_CONFIGS[model])
            image = torch.empty(1, 3, sd_shapes.IMAGE_SIZE[model], sd_shapes.IMAGE_SIZE[model])
            vae_gn, _, vae_attention = sd_census.census(
                model, vae, lambda: vae.decode(vae.encode(image).latent_dist.mode())
            )
            gn, attention = gn + vae_gn, attention + vae_attention
    parts = ("vae.encoder", "vae.decoder") if model == "sd15" else ()
    assert sorted(gn, key=repr) == sorted(sd_shapes.group_norm_shapes([model], vae_parts=parts), key=repr)
    assert sorted(geglu, key=repr) == sorted(sd_shapes.geglu_shapes([model]), key=repr)
    assert sorted(attention, key=repr) == sorted(sd_shapes.attention_shapes([model], vae_parts=parts), key=repr)
