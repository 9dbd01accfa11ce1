"""Shared by the attention-processor tests: Attention modules built the way SD builds them (UNet self/cross attention,
the VAE mid-block), and the comparison of SdkernelsAttnProcessor with the diffusers processor it replaces: the replaced
processor on an fp64 copy of the module (the reference), the replaced processor in the test dtype (PyTorch's own
error), and ours in the test dtype, under tests/tolerance.py, with a dispatch-mode counter proving that the sdkernels
ops ran (or, on a fallback, did not)."""

from __future__ import annotations

import copy

import torch
from diffusers.models.attention_processor import Attention

from sdkernels.integrations.attention_processor import SdkernelsAttnProcessor
from tests.op_counter import SdkernelsOpCounter
from tests.tolerance import assert_matches_reference

TEXT_TOKENS = 77  # CLIP context length: the keys of SD's cross-attention
TEXT_DIM = 768  # SD1.x cross_attention_dim


def unet_attention(query_dim: int = 320, dim_head: int = 40, cross: bool = False) -> Attention:
    """attn1 / attn2 of diffusers' BasicTransformerBlock as SD1.x builds them (bias=False, out_bias=True)."""
    return Attention(
        query_dim,
        cross_attention_dim=TEXT_DIM if cross else None,
        heads=query_dim // dim_head,
        dim_head=dim_head,
        bias=False,
        out_bias=True,
    ).eval()


def vae_attention() -> Attention:
    """The AutoencoderKL mid-block attention (UNetMidBlock2D): 1 head of 512, GroupNorm, residual, biases."""
    return Attention(
        512,
        heads=1,
        dim_head=512,
        norm_num_groups=32,
        eps=1e-6,
        residual_connection=True,
        bias=True,
        upcast_softmax=True,
        _from_deprecated_attn_block=True,
    ).eval()


def run(attn: Attention, processor: object, *inputs: torch.Tensor | None, **kwargs: object) -> torch.Tensor:
    attn.set_processor(processor)
    with torch.no_grad():
        return attn(*inputs, **kwargs)


def cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None or not t.is_floating_point() else t.to(dtype)


def check_against_replaced(
    attn: Attention,
    replaced: object,
    dtype: torch.dtype,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    expect_kernel: bool = True,
    **kwargs: object,
) -> SdkernelsAttnProcessor:
    """ours(dtype) vs replaced(fp64) within 2x replaced(dtype)'s error; returns our processor."""

    def inputs(dt: torch.dtype) -> tuple:
        m = mask if mask is None or mask.dtype == torch.bool else mask.to(dt)
        return hidden_states.to(dt), cast(encoder_hidden_states, dt), m

    ref64 = run(copy.deepcopy(attn).double(), replaced, *inputs(torch.float64), **kwargs)
    module = copy.deepcopy(attn).to(dtype)
    torch_same = run(module, replaced, *inputs(dtype), **kwargs)
    ours = SdkernelsAttnProcessor(replaced)
    with SdkernelsOpCounter() as counter:
        out = run(module, ours, *inputs(dtype), **kwargs)
    assert counter.counts["attention"] == (1 if expect_kernel else 0), counter.counts
    assert sum(ours.fallbacks.values()) == (0 if expect_kernel else 1), ours.fallbacks
    assert_matches_reference(out, torch_same, ref64, what=f"{type(replaced).__name__} {dtype}")
    return ours
