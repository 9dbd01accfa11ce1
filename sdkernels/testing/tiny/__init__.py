"""Tiny offline Stable Diffusion pipelines with random weights (SD1.x txt2img / img2img / inpaint / ControlNet, SDXL,
SD3.5)
for tests, the demo and the examples: they build in well under a second, download nothing, and keep SD's topology,
GroupNorm groups, attention head dims >= 16 and 77-token cross-attention, so every patched code path runs."""

from sdkernels.testing.tiny.components import (
    make_scheduler,
    make_text_encoder,
    make_text_encoder_with_projection,
    make_tokenizer,
    make_unet,
    make_vae,
    tiny_sdxl_unet_config,
    tiny_unet_config,
)
from sdkernels.testing.tiny.pipelines import (
    make_controlnet,
    make_controlnet_pipeline,
    make_img2img_pipeline,
    make_inpaint_pipeline,
    make_sd_pipeline,
    make_sdxl_pipeline,
)
from sdkernels.testing.tiny.run import (
    PROMPT,
    make_control_image,
    make_init_image,
    make_mask_image,
    run_pipeline,
    to_uint8,
)
from sdkernels.testing.tiny.sd3 import make_sd3_pipeline, make_sd3_transformer, tiny_sd3_transformer_config

BUILDERS = {
    "sd": make_sd_pipeline,
    "img2img": make_img2img_pipeline,
    "inpaint": make_inpaint_pipeline,
    "controlnet": make_controlnet_pipeline,
    "sdxl": make_sdxl_pipeline,
    "sd3": make_sd3_pipeline,
}

__all__ = [
    "BUILDERS",
    "PROMPT",
    "make_control_image",
    "make_controlnet",
    "make_controlnet_pipeline",
    "make_img2img_pipeline",
    "make_init_image",
    "make_inpaint_pipeline",
    "make_mask_image",
    "make_scheduler",
    "make_sd_pipeline",
    "make_sd3_pipeline",
    "make_sd3_transformer",
    "make_sdxl_pipeline",
    "make_text_encoder",
    "make_text_encoder_with_projection",
    "make_tokenizer",
    "make_unet",
    "make_vae",
    "run_pipeline",
    "tiny_sd3_transformer_config",
    "tiny_sdxl_unet_config",
    "tiny_unet_config",
    "to_uint8",
]
