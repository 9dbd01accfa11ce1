"""Tiny random-weight components with Stable Diffusion's topology: UNet configs, VAE, CLIP text encoders, tokenizer,
scheduler. Everything is built offline from a seed; nothing touches the hub.

Sizes are chosen so the patched code paths see what they see in real checkpoints, only narrower:
GroupNorm with 32 groups (1-4 channels per group), attention head dims that are multiples of 8 and >= 16 (what the
flash-attention kernel's `tl.dot` needs), cross-attention over 77 text tokens, and a VAE mid-block attention with a
single head whose head dim is the last VAE block width.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

TEXT_LEN = 77  # CLIP's context length: cross-attention keys/values always have 77 tokens, as in SD.
TEXT_HIDDEN = 32  # width of each tiny CLIP text encoder
SDXL_TIME_EMBED_DIM = 8  # SDXL's addition_time_embed_dim (256 in the real model)

# SD's noise schedule (the scheduler_config.json of SD1.5 / SD2.1 / SDXL).
SD_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

# Words of the default prompt get whole-word merges so the tokenizer does real BPE work, not only byte fallback.
_MERGES: tuple[str, ...] = (
    "a t</w>",
    "c at</w>",
    "o f</w>",
    "p h",
    "o t",
    "ph ot",
    "phot o</w>",
    "d o",
    "do g</w>",
)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with the CPU RNG seeded, leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tiny_unet_config(*, in_channels: int = 4, sample_size: int = 8) -> dict[str, Any]:
    """UNet2DConditionModel kwargs for a tiny SD1.x UNet.

    SD1.x topology: 3 x CrossAttnDownBlock2D + DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D + 3 x CrossAttnUpBlock2D,
    conv proj_in/proj_out (use_linear_projection=False, as SD1.5). Widths (32, 64, 128, 128) keep SD's 1:2:4:4
    ratios; 2 heads per attention, so head dims are 16, 32 and 64; `attention_head_dim` is diffusers' historical name
    for the number of heads in SD1.x configs. `in_channels=9` gives the inpainting UNet.

    Why 128 channels at the two deepest levels: a 64 x 64 image has 8 x 8 latents, so the deepest level is 1 x 1.
    With 64 channels there, each of the 32 GroupNorm groups holds 2 numbers, whose std is often ~1e-5 of their size;
    normalising them amplifies rounding ~10^4-fold (fp32 vs fp64 UNet output: 9306 eps measured) and patched vs
    unpatched images would differ by chaos, not by kernel error. 4 numbers per group: 20-30 eps (3 seeds).
    """
    return {
        "sample_size": sample_size,
        "in_channels": in_channels,
        "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "block_out_channels": (32, 64, 128, 128),
        "layers_per_block": 1,
        "norm_num_groups": 32,
        "attention_head_dim": 2,
        "cross_attention_dim": TEXT_HIDDEN,
        "act_fn": "silu",
        "norm_eps": 1e-5,
    }


def tiny_sdxl_unet_config(*, sample_size: int = 8) -> dict[str, Any]:
    """UNet2DConditionModel kwargs for a tiny SDXL UNet.

    SDXL topology: DownBlock2D + 2 x CrossAttnDownBlock2D, mid CrossAttn, 2 x CrossAttnUpBlock2D + UpBlock2D, linear
    proj_in/proj_out, several transformer layers in the deepest level, and "text_time" added conditioning whose input
    is 6 time ids embedded with `addition_time_embed_dim` each plus the pooled text embedding of text_encoder_2.
    Heads: 2 / 2 / 4 over (32, 64, 64) channels -> head dims 16, 32, 16. Cross dim = both text encoders concatenated.
    """
    return {
        "sample_size": sample_size,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 1,
        "transformer_layers_per_block": (1, 1, 2),
        "norm_num_groups": 32,
        "attention_head_dim": (2, 2, 4),
        "cross_attention_dim": 2 * TEXT_HIDDEN,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": SDXL_TIME_EMBED_DIM,
        "projection_class_embeddings_input_dim": 6 * SDXL_TIME_EMBED_DIM + TEXT_HIDDEN,
        "act_fn": "silu",
        "norm_eps": 1e-5,
    }


def make_unet(config: dict[str, Any], *, seed: int = 0) -> UNet2DConditionModel:
    """A UNet2DConditionModel with random weights drawn from `seed`."""
    with seeded(seed):
        return UNet2DConditionModel(**config).eval()


def make_vae(*, seed: int = 0, force_upcast: bool = True, latent_channels: int = 4, **extra: Any) -> AutoencoderKL:
    """A tiny 4-level AutoencoderKL (downsampling factor 8, 4 latent channels; SD3's has 16 and `extra` config such as
    its shift_factor and no quant convs).

    Like SD's VAE it has a mid-block attention in encoder and decoder (one head; head dim = last block width, 64 here
    instead of 512) with its own GroupNorm, and GroupNorm+SiLU in every resnet and before conv_out. 32 groups over
    32/64 channels = 1-2 channels per group.
    """
    with seeded(seed):
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(32, 32, 64, 64),
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=32,
            act_fn="silu",
            sample_size=64,
            force_upcast=force_upcast,
            **extra,
        ).eval()


def _text_config(tokenizer: CLIPTokenizer, **overrides: Any) -> CLIPTextConfig:
    config = {
        "vocab_size": len(tokenizer),
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "max_position_embeddings": TEXT_LEN,
        "hidden_act": "quick_gelu",
        "bos_token_id": tokenizer.bos_token_id,
        # The pooled output is taken at the first eos token, so the model must know the tokenizer's eos id.
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config.update(overrides)
    return CLIPTextConfig(**config)


def make_text_encoder(tokenizer: CLIPTokenizer, *, seed: int = 0) -> CLIPTextModel:
    """A 2-layer CLIPTextModel (hidden 32) over `tokenizer`'s vocabulary."""
    with seeded(seed):
        return _fp64_safe(CLIPTextModel(_text_config(tokenizer)).eval())


def make_text_encoder_with_projection(tokenizer: CLIPTokenizer, *, seed: int = 0) -> CLIPTextModelWithProjection:
    """SDXL's second text encoder: a CLIPTextModelWithProjection whose `text_embeds` (width 32) feed "text_time"."""
    with seeded(seed):
        return _fp64_safe(CLIPTextModelWithProjection(_text_config(tokenizer, projection_dim=TEXT_HIDDEN)).eval())


def _fp64_safe(encoder: torch.nn.Module) -> torch.nn.Module:
    """transformers 4.x fills CLIP's causal mask with finfo(fp64).min in torch's default dtype (fp32), which
    overflows when the encoder runs in fp64 (the tests' reference copies). Run its forward with the default dtype
    set to fp64 then; module-level hooks, so the encoder still pickles and deep-copies."""
    encoder.register_forward_pre_hook(_default_dtype_like_weights)
    encoder.register_forward_hook(_restore_default_dtype)
    return encoder


_saved_default_dtypes: list[torch.dtype] = []


def _default_dtype_like_weights(module: torch.nn.Module, args: Any) -> None:
    _saved_default_dtypes.append(torch.get_default_dtype())
    if next(module.parameters()).dtype == torch.float64:
        torch.set_default_dtype(torch.float64)


def _restore_default_dtype(module: torch.nn.Module, args: Any, output: Any) -> None:
    torch.set_default_dtype(_saved_default_dtypes.pop())


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte maps to one printable unicode character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codepoints = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codepoints.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codepoints), strict=True))


@lru_cache(maxsize=1)
def _tokenizer_files() -> tuple[str, str]:
    """vocab.json and merges.txt contents in CLIP's layout: bytes, bytes + "</w>", merge results, special tokens."""
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [char + "</w>" for char in alphabet]
    tokens += ["".join(merge.split(" ")) for merge in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    merges = "#version: 0.2\n" + "\n".join(_MERGES) + "\n"
    return json.dumps(vocab), merges


def make_tokenizer(*, pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """A CLIPTokenizer loaded with `from_pretrained` from a temporary folder holding a tiny byte-level BPE vocabulary
    (514 byte tokens + a few merges + the two special tokens), model_max_length 77. SDXL's second tokenizer pads with
    "!" (`pad_token="!"`)."""
    vocab, merges = _tokenizer_files()
    with tempfile.TemporaryDirectory(prefix="sdkernels_tiny_tokenizer_") as folder:
        root = Path(folder)
        (root / "vocab.json").write_text(vocab, encoding="utf-8")
        (root / "merges.txt").write_text(merges, encoding="utf-8")
        config = {"model_max_length": TEXT_LEN, "pad_token": pad_token, "tokenizer_class": "CLIPTokenizer"}
        (root / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


def make_scheduler(kind: str = "ddim") -> DDIMScheduler | EulerDiscreteScheduler:
    """SD's scheduler with SD's numbers: "ddim" (SD1.x/SD2.x pipelines) or "euler" (SDXL)."""
    if kind == "ddim":
        return DDIMScheduler(**SD_SCHEDULE, clip_sample=False, set_alpha_to_one=False)
    if kind == "euler":
        return EulerDiscreteScheduler(**SD_SCHEDULE, timestep_spacing="leading", interpolation_type="linear")
    raise ValueError(f"unknown scheduler kind {kind!r}; use 'ddim' or 'euler'")
