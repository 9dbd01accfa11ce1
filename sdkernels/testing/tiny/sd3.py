"""A tiny offline Stable Diffusion 3 / 3.5 pipeline with random weights: SD3.5's transformer topology (MMDiT joint
blocks, QK RMSNorm, a dual-attention first block, a context-pre-only last block, AdaLayerNormZero /
SD35AdaLayerNormZeroX / AdaLayerNormContinuous, GELU(tanh) feed-forwards), SD3's 64-wide attention heads, two CLIP
text encoders and no T5 (diffusers 0.42 then appends `max_sequence_length` zero tokens, 256 by default, to CLIP's 77:
333 text tokens, as with T5),
a 16-latent-channel VAE and the flow-matching Euler scheduler.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

from sdkernels.testing.tiny.components import (
    TEXT_HIDDEN,
    make_text_encoder_with_projection,
    make_tokenizer,
    make_vae,
    seeded,
)

_TRANSFORMER, _VAE, _TEXT, _TEXT_2 = 0, 1, 2, 3  # offsets added to `seed`, one per component
SD3_HEAD_DIM = 64  # SD3 / SD3.5 medium and large all use 64-wide heads


def tiny_sd3_transformer_config(
    *,
    heads: int = 2,
    num_layers: int = 2,
    dual_attention_layers: tuple[int, ...] = (0,),
    qk_norm: str | None = "rms_norm",
) -> dict[str, Any]:
    """SD3.5-medium's structure, narrower: `heads` x 64 channels, `num_layers` joint blocks (the last one
    context-pre-only), dual attention in `dual_attention_layers`, QK RMSNorm (qk_norm=None gives SD3.0)."""
    inner = heads * SD3_HEAD_DIM
    return {
        "sample_size": 8,
        "patch_size": 2,
        "in_channels": 16,
        "num_layers": num_layers,
        "attention_head_dim": SD3_HEAD_DIM,
        "num_attention_heads": heads,
        "joint_attention_dim": 2 * TEXT_HIDDEN,  # the two CLIP encoders' hidden states side by side
        "caption_projection_dim": inner,
        "pooled_projection_dim": 2 * TEXT_HIDDEN,  # their pooled outputs side by side
        "out_channels": 16,
        "pos_embed_max_size": 16,
        "dual_attention_layers": dual_attention_layers,
        "qk_norm": qk_norm,
    }


def make_sd3_transformer(config: dict[str, Any] | None = None, *, seed: int = 0) -> SD3Transformer2DModel:
    """An SD3Transformer2DModel with random weights drawn from `seed`. diffusers initialises the AdaLN-Zero linears
    and proj_out like any Linear, so every block really contributes."""
    with seeded(seed):
        return SD3Transformer2DModel(**(config or tiny_sd3_transformer_config())).eval()


def make_sd3_pipeline(
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    transformer_config: dict[str, Any] | None = None,
) -> StableDiffusion3Pipeline:
    """A tiny CLIP-only SD3.5-style pipeline (transformer 1.2 M parameters, 16-channel VAE), flow-matching Euler."""
    from sdkernels.testing.tiny.pipelines import _finish

    tokenizer = make_tokenizer()
    tokenizer_2 = make_tokenizer(pad_token="!")
    vae = make_vae(
        seed=seed + _VAE,
        latent_channels=16,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=make_sd3_transformer(transformer_config, seed=seed + _TRANSFORMER),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=make_text_encoder_with_projection(tokenizer, seed=seed + _TEXT),
        tokenizer=tokenizer,
        text_encoder_2=make_text_encoder_with_projection(tokenizer_2, seed=seed + _TEXT_2),
        tokenizer_2=tokenizer_2,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    return _finish(pipe, device, dtype)
