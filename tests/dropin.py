"""Shared pieces of the drop-in tests (test_pipelines, test_compile, test_lora, test_fused_projections,
test_moving, test_bad_input): small models, fp64 references, call counting and dtype-independent random draws.

Why small models: the tests whose subject is not the kernels' numerics on SD shapes (LoRA, fused projections,
moving, compile) use the same diffusers block classes with two UNet levels and a 2-level VAE. Interpreted, a patched
forward of small_unet costs ~1.9 s and a small_vae decode ~0.5 s, against ~4.3 s and ~2.5 s for the tiny pipelines'
4-level UNet and VAE (measured on one core). The tiny pipelines themselves are tested in test_pipelines.py.
"""

from __future__ import annotations

import collections
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn as nn
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.models.activations import GEGLU
from diffusers.models.attention_processor import Attention
from diffusers.utils import torch_utils

from sdkernels.testing.tiny.components import (
    TEXT_HIDDEN,
    TEXT_LEN,
    make_scheduler,
    make_text_encoder,
    make_tokenizer,
    seeded,
)

SMALL_GROUPS = 8


def small_unet(*, seed: int = 0, in_channels: int = 4) -> UNet2DConditionModel:
    """SD1.x block classes (CrossAttnDown, Down, mid CrossAttn, Up, CrossAttnUp; conv proj_in), two levels.
    Head dims 16 and 32; 8 groups over 32/64 channels (4 and 8 per group), so at the 4 x 4 level each group holds
    128 numbers (well conditioned: fp32 vs fp64 differ by rounding, not by amplified noise)."""
    with seeded(seed):
        return UNet2DConditionModel(
            sample_size=8,
            in_channels=in_channels,
            out_channels=4,
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(32, 64),
            norm_num_groups=SMALL_GROUPS,
            attention_head_dim=2,
            cross_attention_dim=TEXT_HIDDEN,
            act_fn="silu",
            norm_eps=1e-5,
        ).eval()


def small_vae(*, seed: int = 0) -> AutoencoderKL:
    """A 2-level AutoencoderKL (factor 2) with the mid-block attention (one head of dim 64, its own GroupNorm)."""
    with seeded(seed):
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(32, 64),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=SMALL_GROUPS,
            act_fn="silu",
            sample_size=16,
        ).eval()


def small_sd_pipeline() -> StableDiffusionPipeline:
    """A StableDiffusionPipeline around small_unet and small_vae (for the pipeline-level APIs: load_lora_weights,
    fuse_qkv_projections, to(), attention slicing, offload)."""
    tokenizer = make_tokenizer()
    pipe = StableDiffusionPipeline(
        vae=small_vae(),
        text_encoder=make_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=small_unet(),
        scheduler=make_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unet_inputs(
    unet: nn.Module,
    *,
    batch: int = 1,
    size: int = 8,
    tokens: int = TEXT_LEN,
    seed: int = 1,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sample, timesteps, encoder_hidden_states) with `tokens` text tokens (CLIP's 77 by default), drawn in fp32 and
    cast to `dtype`."""
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, unet.config.in_channels, size, size, generator=generator)
    text = torch.randn(batch, tokens, unet.config.cross_attention_dim, generator=generator)
    timesteps = torch.tensor([10, 500, 900, 250][:batch])
    return sample.to(dtype), timesteps, text.to(dtype)


def run_unet(unet: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        return unet(*inputs).sample


def in_fp64(module: nn.Module, run: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
    """run(*inputs) with `module` and the float inputs in fp64 (the reference), then the module back in its dtype
    (fp32/fp16/bf16 -> fp64 -> back is exact)."""
    dtype = next(module.parameters()).dtype
    module.double()
    try:
        return run(*(t.double() if t.is_floating_point() else t for t in inputs))
    finally:
        module.to(dtype)


@contextlib.contextmanager
def counting_calls(modules: list[nn.Module]) -> Iterator[collections.Counter[str]]:
    """Count forward calls of nn.GroupNorm, diffusers Attention and GEGLU modules (for an unpatched run: how many op
    calls a fully patched run must make). The hooks are removed on exit."""
    calls: collections.Counter[str] = collections.Counter()
    kinds = ((nn.GroupNorm, "group_norm"), (Attention, "attention"), (GEGLU, "geglu"))
    handles = []
    for root in modules:
        for module in root.modules():
            for cls, kind in kinds:
                if isinstance(module, cls):
                    handles.append(module.register_forward_hook(lambda *_, kind=kind: calls.update([kind])))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def dtype_independent_noise(round_to: torch.dtype = torch.float32) -> Iterator[None]:
    """Make diffusers' `randn_tensor` (VAE latent sampling, img2img noise) draw in fp32, round to `round_to` and then
    cast: torch.randn gives unrelated numbers in fp64 and differently rounded ones in fp16/bf16, so without this an
    fp64 reference pipeline would not see the noise the low-precision one sees."""
    original = torch_utils.randn_tensor

    def randn_tensor(
        shape: Any, generator: Any = None, device: Any = None, dtype: torch.dtype | None = None, layout: Any = None
    ) -> torch.Tensor:
        drawn = original(shape, generator=generator, device=device, dtype=torch.float32, layout=layout)
        return drawn.to(round_to).to(dtype or torch.float32)

    users = [
        m
        for name, m in list(sys.modules.items())
        if name.startswith("diffusers") and getattr(m, "randn_tensor", None) is original
    ]
    for module in users:
        module.randn_tensor = randn_tensor
    try:
        yield
    finally:
        for module in users:
            module.randn_tensor = original
