"""The UNet and VAE configs of the published SD1.5, SD2.1 and SDXL checkpoints, to build real-size models with random
weights or on the meta device (nothing downloads). Used by the shape census, coldstart and bench_e2e."""

from __future__ import annotations

# config.json fields of the published checkpoints that differ from diffusers' defaults (UNet2DConditionModel /
# AutoencoderKL), e.g. `UNet2DConditionModel(**UNET_CONFIGS["sdxl"])`. Parameters: UNet SD1.5 859.5M, SD2.1
# 865.9M, SDXL 2567.5M; VAE 83.7M.
_SD_UNET_COMMON = {
    "act_fn": "silu",
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
UNET_CONFIGS: dict[str, dict] = {
    "sd15": {**_SD_UNET_COMMON, "attention_head_dim": 8, "cross_attention_dim": 768, "sample_size": 64},
    "sd21": {
        **_SD_UNET_COMMON,
        "attention_head_dim": [5, 10, 20, 20],
        "cross_attention_dim": 1024,
        "dual_cross_attention": False,
        "num_class_embeds": None,
        "only_cross_attention": False,
        "sample_size": 96,
        "upcast_attention": True,
        "use_linear_projection": True,
    },
    "sdxl": {
        "act_fn": "silu",
        "addition_embed_type": "text_time",
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": 256,
        "attention_head_dim": [5, 10, 20],
        "block_out_channels": [320, 640, 1280],
        "center_input_sample": False,
        "class_embed_type": None,
        "class_embeddings_concat": False,
        "conv_in_kernel": 3,
        "conv_out_kernel": 3,
        "cross_attention_dim": 2048,
        "cross_attention_norm": None,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1,
        "dual_cross_attention": False,
        "encoder_hid_dim": None,
        "encoder_hid_dim_type": None,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_only_cross_attention": None,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "num_attention_heads": None,
        "num_class_embeds": None,
        "only_cross_attention": False,
        "out_channels": 4,
        "projection_class_embeddings_input_dim": 2816,
        "resnet_out_scale_factor": 1.0,
        "resnet_skip_time_act": False,
        "resnet_time_scale_shift": "default",
        "sample_size": 128,
        "time_cond_proj_dim": None,
        "time_embedding_act_fn": None,
        "time_embedding_dim": None,
        "time_embedding_type": "positional",
        "timestep_post_act": None,
        "transformer_layers_per_block": [1, 2, 10],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "upcast_attention": None,
        "use_linear_projection": True,
    },
}
_VAE_COMMON = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
VAE_CONFIGS: dict[str, dict] = {
    "sd15": {**_VAE_COMMON, "sample_size": 512},
    "sd21": {**_VAE_COMMON, "sample_size": 768},
    "sdxl": {**_VAE_COMMON, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
}
# Extra UNet inputs: SDXL's added conditioning (pooled text embedding 1280 + 6 size/crop ids).
SDXL_TEXT_EMBEDS_DIM = 1280
SDXL_TIME_IDS = 6
