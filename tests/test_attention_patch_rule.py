"""The patch rule that swaps SdkernelsAttnProcessor in for the diffusers processors it replaces and back out: which
processors it replaces and leaves alone, unpatch restoring the very objects, LoRA adapters, and a UNet's
fuse/unfuse_qkv_projections around patching."""

from __future__ import annotations

import copy

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
from sdkernels.integrations.attention_processor import SdkernelsAttnProcessor
from tests.attention_modules import TEXT_DIM, TEXT_TOKENS, unet_attention
from tests.op_counter import SdkernelsOpCounter
from tests.tolerance import assert_matches_reference


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
