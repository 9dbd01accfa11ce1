"""SdkernelsAttnProcessor against the diffusers processors it replaces, on Attention modules built the way SD builds
them (UNet self/cross attention, the VAE mid-block), and the patch rule that swaps it in and back out.

Each comparison runs the replaced processor on an fp64 copy of the module (the reference), the replaced processor in
the test dtype (PyTorch's own error), and ours in the test dtype, then applies tests/tolerance.py. A dispatch-mode
counter proves that the sdkernels ops ran (or, on a fallback, did not)."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import torch.nn as nn
from diffusers.models.attention_processor import (
    Attention,
    AttnProcessor,
    AttnProcessor2_0,
    FusedAttnProcessor2_0,
    IPAdapterAttnProcessor2_0,
)

import sdkernels
from sdkernels._dispatch import fallback_counts
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


class SomeonesProcessor:
    def __call__(self, attn: Attention, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return hidden_states


def patch_target() -> tuple[nn.Module, list[object]]:
    """Six Attention layers: two sharing one AttnProcessor2_0 (as set_attn_processor(proc) leaves them), a fused
    one, a classic one, a custom one and an IP-Adapter one."""
    model = nn.ModuleList(
        [unet_attention(64, 32) for _ in range(3)] + [unet_attention(64, 32, cross=True) for _ in range(3)]
    )
    shared = AttnProcessor2_0()
    model[2].fuse_projections()
    processors = [
        shared,
        shared,
        FusedAttnProcessor2_0(),
        AttnProcessor(),
        SomeonesProcessor(),
        IPAdapterAttnProcessor2_0(64, cross_attention_dim=TEXT_DIM),
    ]
    for attn, processor in zip(model, processors, strict=True):
        attn.set_processor(processor)
    return model, processors


def test_patch_rule_replaces_the_three_processors_and_unpatch_restores_the_objects() -> None:
    model, originals = patch_target()
    report = sdkernels.patch(model)
    assert report.count("attention") == 4
    ours = [attn.processor for attn in model[:4]]
    assert all(type(p) is SdkernelsAttnProcessor for p in ours)
    assert len({id(p) for p in ours}) == 4, "each layer needs its own processor instance"
    assert [p.replaced for p in ours] == originals[:4] and [p.fused for p in ours] == [False, False, True, False]
    assert model[4].processor is originals[4] and model[5].processor is originals[5]
    left_alone = {r.path: r.reason for r in report.left_alone if r.kind == "attention"}
    assert left_alone == {
        "4": "processor SomeonesProcessor is not one sdkernels replaces",
        "5": "processor IPAdapterAttnProcessor2_0 is not one sdkernels replaces",
    }
    assert {r.path: r.reason for r in report.results if r.status == "patched"}["2"].startswith("fused QKV")
    assert "fused QKV" in str(report)
    assert sdkernels.patch(model).count("attention", status="already patched") == 4

    users_choice = AttnProcessor2_0()
    model[1].set_processor(users_choice)  # set after patching: unpatch must leave it
    assert sdkernels.unpatch(model) == 4
    expected = [originals[0], users_choice, *originals[2:]]
    assert all(attn.processor is p for attn, p in zip(model, expected, strict=True))
    assert sdkernels.patch(model).count("attention") == 4  # patchable again after unpatch


def test_lora_adapter_output_is_the_same_patched_and_unpatched() -> None:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = nn.ModuleDict({"attn1": unet_attention(64, 32), "attn2": unet_attention(64, 32, cross=True)})
    config = LoraConfig(
        r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )  # random A and B: the adapter really changes the output
    model = inject_adapter_in_model(config, model).eval()
    hidden_states, context = torch.randn(1, 16, 64), torch.randn(1, TEXT_TOKENS, TEXT_DIM)

    def forward(m: nn.Module, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        with torch.no_grad():
            x = m["attn1"](hidden_states.to(dtype))
            return m["attn2"](x, context.to(dtype))

    ref64 = forward(copy.deepcopy(model).double(), torch.float64)
    unpatched = forward(model)
    with sdkernels.patched(model) as report, SdkernelsOpCounter() as counter:
        assert report.count("attention") == 2
        patched = forward(model)
    assert counter.counts["attention"] == 2
    assert_matches_reference(patched, unpatched, ref64, what="LoRA")
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.enable_adapters(False)
    assert (forward(model) - unpatched).abs().max() > 1e-2, "the LoRA must change the output for this test to mean it"


def test_unet_fuse_and_unfuse_around_patching_leave_no_sdkernels_processor_after_unpatch() -> None:
    from sdkernels.testing.tiny.components import make_unet, tiny_unet_config

    unet = make_unet(tiny_unet_config())
    originals = dict(unet.attn_processors)
    assert sdkernels.patch(unet, group_norm=False, geglu=False).count("attention") == len(originals)
    unet.fuse_qkv_projections()  # saves our processors, sets FusedAttnProcessor2_0 everywhere
    sdkernels.unpatch(unet)  # diffusers' Fused processors are not ours: they stay
    assert {type(p) for p in unet.attn_processors.values()} == {FusedAttnProcessor2_0}
    assert sdkernels.patch(unet, group_norm=False, geglu=False).count("attention") == len(originals)
    assert all(p.fused for p in unet.attn_processors.values())
    unet.unfuse_qkv_projections()  # puts the first (unfused) sdkernels processors back
    assert all(type(p) is SdkernelsAttnProcessor and not p.fused for p in unet.attn_processors.values())
    sdkernels.unpatch(unet)
    assert all(p is originals[name] for name, p in unet.attn_processors.items())
