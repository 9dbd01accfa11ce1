"""SdkernelsAttnProcessor against the diffusers processors it replaces, on Attention modules built the way SD builds
them (UNet self/cross attention, the VAE mid-block); the patch rule that swaps it in and back out is tested in
test_attention_patch_rule.py.

Each comparison runs the replaced processor on an fp64 copy of the module (the reference), the replaced processor in
the test dtype (PyTorch's own error), and ours in the test dtype, then applies tests/tolerance.py. A dispatch-mode
counter proves that the sdkernels ops ran (or, on a fallback, did not)."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from diffusers.models.attention_processor import (
    Attention,
    AttnProcessor,
    AttnProcessor2_0,
    FusedAttnProcessor2_0,
)

from sdkernels._dispatch import fallback_counts
from sdkernels.integrations.attention_processor import SdkernelsAttnProcessor
from tests.attention_modules import TEXT_DIM, TEXT_TOKENS, check_against_replaced, run, unet_attention, vae_attention
from tests.op_counter import SdkernelsOpCounter

DTYPES = [torch.float32, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_unet_attention_matches_replaced_processor(cross: bool, fused: bool, dtype: torch.dtype) -> None:
    attn = unet_attention(cross=cross)
    if fused:
        attn.fuse_projections()  # what UNet2DConditionModel.fuse_qkv_projections does per layer
    replaced = FusedAttnProcessor2_0() if fused else AttnProcessor2_0()
    context = torch.randn(1, TEXT_TOKENS, TEXT_DIM) if cross else None
    check_against_replaced(attn, replaced, dtype, torch.randn(1, 64, 320), context)


@pytest.mark.parametrize("dim_head,query_dim", [(64, 320), (80, 320), (160, 320)])
def test_sd_head_dims(dim_head: int, query_dim: int) -> None:
    attn = unet_attention(query_dim, dim_head, cross=True)
    check_against_replaced(
        attn, AttnProcessor2_0(), torch.float16, torch.randn(1, 16, query_dim), torch.randn(1, TEXT_TOKENS, TEXT_DIM)
    )


@pytest.mark.parametrize("dtype,fused", [(torch.float32, False), (torch.float16, True)], ids=["fp32", "fp16-fused"])
def test_vae_mid_block_attention(dtype: torch.dtype, fused: bool) -> None:
    attn = vae_attention()
    if fused:
        attn.fuse_projections()
    replaced = FusedAttnProcessor2_0() if fused else AttnProcessor2_0()
    with SdkernelsOpCounter() as counter:  # 4-D input, GroupNorm, residual; temb as UNetMidBlock2D passes it
        check_against_replaced(attn, replaced, dtype, torch.randn(1, 512, 8, 8), temb=None)
    assert counter.counts["group_norm_silu"] == 1, counter.counts
    assert "temb" in inspect.signature(SdkernelsAttnProcessor.__call__).parameters


@pytest.mark.parametrize(
    "dtype,boolean",
    [(torch.float32, False), (torch.float16, False), (torch.float32, True)],
    ids=["fp32-additive", "fp16-additive", "fp32-bool"],
)
def test_key_padding_mask(dtype: torch.dtype, boolean: bool) -> None:
    keep = torch.ones(2, TEXT_TOKENS)
    keep[0, 20:] = 0  # the first prompt has 20 real tokens, the second all 77
    # UNet2DConditionModel turns a (B, Lk) 0/1 mask into a (B, 1, Lk) additive bias of -10000 (or SDPA's bool form)
    mask = (keep > 0.5)[:, None] if boolean else ((1 - keep) * -10000.0)[:, None]
    attn = unet_attention(cross=True)
    check_against_replaced(
        attn, AttnProcessor2_0(), dtype, torch.randn(2, 32, 320), torch.randn(2, TEXT_TOKENS, TEXT_DIM), mask
    )


@pytest.mark.parametrize("dtype,scale", [(torch.float32, 1.0), (torch.float16, 0.07)], ids=["scale_qk-off", "custom"])
def test_classic_processor_scale(dtype: torch.dtype, scale: float) -> None:
    attn = Attention(64, heads=2, dim_head=32, bias=False, scale_qk=False, upcast_attention=True).eval()
    assert type(attn.processor) is AttnProcessor and attn.scale == 1.0
    attn.scale = scale  # differs from SDPA's 1/sqrt(32): a processor ignoring attn.scale fails this test
    hidden_states = torch.randn(1, 16, 64) * 0.5
    ours = check_against_replaced(attn, AttnProcessor(), dtype, hidden_states)
    assert "attn.scale" in ours.describe()
    sdpa = run(copy.deepcopy(attn), AttnProcessor2_0(), hidden_states)
    classic = run(copy.deepcopy(attn), AttnProcessor(), hidden_states)
    assert (sdpa - classic).abs().max() > 1e-2, "the scale must change the result for this test to mean anything"


def test_stale_fused_projection_after_unfuse_is_not_used() -> None:
    """unfuse_qkv_projections() puts AttnProcessor2_0 back but leaves to_qkv and fused_projections=True behind."""
    attn = unet_attention(query_dim=64, dim_head=32)
    attn.fuse_projections()
    with torch.no_grad():
        attn.to_q.weight.mul_(-1.5)  # to_qkv now holds stale query weights: using it would be wrong
    assert attn.fused_projections
    hidden_states = torch.randn(1, 16, 64)
    for replaced in (AttnProcessor2_0(), FusedAttnProcessor2_0()):  # each reads the projections it reads
        check_against_replaced(attn, replaced, torch.float32, hidden_states)
    assert (
        run(attn, AttnProcessor2_0(), hidden_states) - run(attn, FusedAttnProcessor2_0(), hidden_states)
    ).abs().max() > 1e-2


def test_fallback_for_uncovered_head_dim_is_visible_and_matches() -> None:
    attn = unet_attention(query_dim=24, dim_head=12)
    reason = "head_dim 12 is not a multiple of 8 up to 512"
    before = fallback_counts().get(("attention_processor", reason), 0)
    ours = check_against_replaced(attn, AttnProcessor2_0(), torch.float32, torch.randn(2, 16, 24), expect_kernel=False)
    assert ours.fallbacks == {reason: 1}
    assert fallback_counts()[("attention_processor", reason)] == before + 1


def test_training_with_autograd_falls_back_and_backpropagates() -> None:
    attn = unet_attention(query_dim=64, dim_head=32)
    ours = SdkernelsAttnProcessor(AttnProcessor2_0())
    attn.set_processor(ours)
    hidden_states = torch.randn(1, 8, 64, requires_grad=True)
    with SdkernelsOpCounter() as counter:
        attn(hidden_states).square().sum().backward()
    assert counter.counts["attention"] == 0 and hidden_states.grad is not None
    assert attn.to_q.weight.grad is not None and attn.to_q.weight.grad.abs().sum() > 0
    assert list(ours.fallbacks.values()) == [1]
    assert next(iter(ours.fallbacks)).startswith("gradients needed")


def test_deprecated_scale_warns_and_unexpected_kwargs_run_the_replaced_processor() -> None:
    attn = unet_attention(query_dim=64, dim_head=32)
    hidden_states = torch.randn(1, 8, 64)
    expected = run(copy.deepcopy(attn), AttnProcessor2_0(), hidden_states)
    ours = SdkernelsAttnProcessor(AttnProcessor2_0())
    with torch.no_grad(), SdkernelsOpCounter() as counter:
        with pytest.warns(FutureWarning, match="`scale` argument is deprecated"):
            out = ours(attn, hidden_states, scale=0.5)
        assert counter.counts["attention"] == 1 and not ours.fallbacks
        delegated = ours(attn, hidden_states, ip_adapter_masks=None)
        assert counter.counts["attention"] == 1
    assert ours.fallbacks == {"unexpected keyword arguments ['ip_adapter_masks']": 1}
    ip_adapter_inputs = (torch.randn(1, 4, 64), [torch.randn(1, 4, 64)])  # (text, [image]) as IP-Adapter passes
    with torch.no_grad(), pytest.raises(AttributeError):  # AttnProcessor2_0 cannot take the tuple: neither do we
        ours(attn, hidden_states, ip_adapter_inputs)
    assert ours.fallbacks["encoder_hidden_states is a tuple (IP-Adapter image embeddings)"] == 1
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(delegated, expected, rtol=0, atol=0)
