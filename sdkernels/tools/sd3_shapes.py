"""The shapes SD3 / SD3.5 run through sdkernels' ops per transformer step, from the published configs
(`transformer/config.json` of stabilityai/stable-diffusion-3-medium-diffusers, stable-diffusion-3.5-medium and
stable-diffusion-3.5-large) and diffusers 0.42's SD3Transformer2DModel / JointTransformerBlock:

- image tokens (H/16)·(W/16) (VAE factor 8, patch 2): 4096 at 1024²; text tokens 77 (CLIP) + max_sequence_length
  (T5, or zeros without T5; 256 by default) = 333; batch 2 (classifier-free guidance);
- per joint block: one joint attention over image + text tokens (head dim 64), plus a second image-only attention
  (`attn2`) in SD3.5 medium's dual-attention blocks 0-12; AdaLN modulation of the image tokens (two with
  SD35AdaLayerNormZeroX) and of the text tokens; a GELU(tanh) feed-forward dim -> 4·dim on the image tokens and on
  the text tokens (not in the last, context-pre-only block); one more modulation in `norm_out`.
tests/test_sd3.py counts the same op calls on a tiny transformer of this topology.
"""

from __future__ import annotations

from dataclasses import dataclass

CFG_BATCH = 2
HEAD_DIM = 64
TEXT_TOKENS = 77 + 256


@dataclass(frozen=True)
class SD3Config:
    name: str
    heads: int
    layers: int
    dual_attention_layers: int  # blocks 0 .. n-1 have attn2
    qk_norm: bool

    @property
    def dim(self) -> int:
        return self.heads * HEAD_DIM


SD3_MODELS = {
    "sd3m": SD3Config("sd3m", heads=24, layers=24, dual_attention_layers=0, qk_norm=False),
    "sd35m": SD3Config("sd35m", heads=24, layers=24, dual_attention_layers=13, qk_norm=True),
    "sd35l": SD3Config("sd35l", heads=38, layers=38, dual_attention_layers=0, qk_norm=True),
}


@dataclass(frozen=True)
class SD3OpShape:
    model: str
    op: str  # "attention" | "ada_layer_norm" | "linear_gelu"
    label: str
    batch: int
    tokens: int  # Lq = Lk for attention; rows per sample otherwise
    dim: int  # head dim for attention; hidden width otherwise
    out: int  # heads for attention; output features for linear_gelu; dim for ada_layer_norm
    calls: int  # per transformer step


def image_tokens(image_size: int) -> int:
    return (image_size // 16) ** 2


def sd3_shapes(model: str, image_size: int = 1024, text_tokens: int = TEXT_TOKENS) -> list[SD3OpShape]:
    """Every distinct sdkernels op call of one SD3 transformer step at `image_size`², with its count."""
    config, image = SD3_MODELS[model], image_tokens(image_size)
    dim, b, n, dual = config.dim, CFG_BATCH, config.layers, config.dual_attention_layers
    text, joint = text_tokens, image + text_tokens
    shapes = [
        SD3OpShape(model, "attention", f"joint L={joint}", b, joint, HEAD_DIM, config.heads, n),
        SD3OpShape(model, "ada_layer_norm", f"image {image}x{dim}", b, image, dim, dim, n + dual + 1),
        SD3OpShape(model, "ada_layer_norm", f"text {text}x{dim}", b, text, dim, dim, n),
        SD3OpShape(model, "linear_gelu", f"ff image {image}x{dim}->{4 * dim}", b, image, dim, 4 * dim, n),
        SD3OpShape(model, "linear_gelu", f"ff text {text}x{dim}->{4 * dim}", b, text, dim, 4 * dim, n - 1),
    ]
    if dual:
        shapes.insert(1, SD3OpShape(model, "attention", f"attn2 L={image}", b, image, HEAD_DIM, config.heads, dual))
    return shapes


# transformer/config.json of the published checkpoints (the fields that shape the ops), and their shared VAE: SDXL's
# layout with 16 latent channels and no quant convs (vae/config.json of the SD3 / SD3.5 repositories).
_SD3_COMMON = {"sample_size": 128, "joint_attention_dim": 4096, "pooled_projection_dim": 2048, "attention_head_dim": 64}
SD3_TRANSFORMER_CONFIGS: dict[str, dict] = {
    "sd3m": {**_SD3_COMMON, "num_layers": 24, "num_attention_heads": 24, "caption_projection_dim": 1536},
    "sd35m": {
        **_SD3_COMMON,
        "num_layers": 24,
        "num_attention_heads": 24,
        "caption_projection_dim": 1536,
        "dual_attention_layers": tuple(range(13)),
        "qk_norm": "rms_norm",
        "pos_embed_max_size": 384,
    },
    "sd35l": {
        **_SD3_COMMON,
        "num_layers": 38,
        "num_attention_heads": 38,
        "caption_projection_dim": 2432,
        "qk_norm": "rms_norm",
        "pos_embed_max_size": 192,
    },
}
SD3_VAE_CONFIG: dict = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 16,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "sample_size": 1024,
    "scaling_factor": 1.5305,
    "shift_factor": 0.0609,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
