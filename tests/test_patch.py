"""patch / unpatch / patched on tiny offline models: report, op-call counts, bit-exact unpatch, idempotence,
untouched parameters and state_dict, left-alone reporting, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from diffusers.models.activations import GEGLU
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel

import sdkernels
from sdkernels.testing.tiny import make_sd_pipeline
from tests.dropin import run_unet, small_unet, unet_inputs
from tests.op_counter import SdkernelsOpCounter
from tests.tolerance import assert_matches_reference


@pytest.fixture(scope="module")
def pipe():
    return make_sd_pipeline()


def snapshot(module: nn.Module) -> dict[str, tuple[int, torch.Tensor]]:
    return {k: (v.data_ptr(), v.clone()) for k, v in module.state_dict().items()}


def test_report_counts_and_op_calls_in_unet(pipe):
    unet = pipe.unet
    resnets = [m for m in unet.modules() if isinstance(m, ResnetBlock2D)]
    transformers = [m for m in unet.modules() if isinstance(m, Transformer2DModel)]
    inputs = unet_inputs(unet, batch=2, tokens=7)
    with sdkernels.patched(unet, attention=False, geglu=False) as report, SdkernelsOpCounter() as counter:
        run_unet(unet, inputs)
    assert report.count("group_norm", component="UNet2DConditionModel") == len(resnets) + len(transformers) + 1
    assert not report.left_alone
    # every ResnetBlock2D norm (2 each), conv_norm_out and every Transformer2DModel.norm go through the op
    assert counter.counts["group_norm_silu"] == 2 * len(resnets) + 1 + len(transformers)
    assert "attention" not in counter.counts and "geglu" not in counter.counts
    assert "forward" not in unet.conv_norm_out.__dict__, "patched() must restore on exit"


def test_vae_decode_goes_through_op(pipe):
    vae = pipe.vae
    decoder_resnets = [m for m in vae.decoder.modules() if isinstance(m, ResnetBlock2D)]
    latents = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        expected = vae.decode(latents).sample
        expected64 = vae.double().decode(latents.double()).sample
        vae.float()
    with sdkernels.patched(vae, attention=False) as report, SdkernelsOpCounter() as counter, torch.no_grad():
        got = vae.decode(latents).sample
    assert sum(r.site == "conv_norm_out+conv_act" and r.status == "patched" for r in report.results) == 2
    assert counter.counts["group_norm_silu"] == 2 * len(decoder_resnets) + 1
    assert_matches_reference(got, expected, expected64, what="vae.decode")


@pytest.mark.parametrize("kinds", [{}, {"attention": False, "geglu": False}])
def test_patched_matches_unpatched_and_unpatch_is_bit_exact(pipe, kinds):
    unet = pipe.unet
    inputs = unet_inputs(unet, batch=2, tokens=7)
    expected64 = run_unet(unet.double(), tuple(t.double() if t.is_floating_point() else t for t in inputs))
    unet.float()
    expected = run_unet(unet, inputs)
    before = snapshot(unet)
    types_before = {name: type(m) for name, m in unet.named_modules()}

    report = sdkernels.patch(unet, **kinds)
    assert report.count() > 0
    got = run_unet(unet, inputs)
    assert_matches_reference(got, expected, expected64, what="patched unet")

    again = sdkernels.patch(unet, **kinds)  # idempotent: nothing newly patched, same output
    assert again.count() == 0 and again.count(status="already patched") == report.count()
    assert torch.equal(run_unet(unet, inputs), got)

    after = snapshot(unet)
    assert after.keys() == before.keys()
    for key, (ptr, value) in before.items():
        assert after[key][0] == ptr and torch.equal(after[key][1], value), key
    assert {name: type(m) for name, m in unet.named_modules()} == types_before

    assert sdkernels.unpatch(unet) == report.count()
    assert torch.equal(run_unet(unet, inputs), expected), "unpatch must restore the original bit-exactly"
    assert not any("forward" in m.__dict__ for m in unet.modules())
    assert sdkernels.unpatch(unet) == 0


def test_pipeline_components_are_all_walked(pipe):
    with sdkernels.patched(pipe) as report:
        components = {r.component for r in report.results}
    assert {"unet", "vae"} <= components
    assert report.paths["unet"] and report.paths["vae"]
    text = str(report)
    assert "ResnetBlock2D" in text and "conv_norm_out" in text and "runs on" in text


def test_hooked_norm_and_other_activation_are_left_alone_with_reason():
    hooked = ResnetBlock2D(in_channels=64, out_channels=64, temb_channels=32, groups=32)
    hooked.norm1.register_forward_hook(lambda *a: None)
    mish = ResnetBlock2D(in_channels=64, out_channels=64, temb_channels=32, groups=32, non_linearity="mish")
    model = nn.ModuleDict({"hooked": hooked, "mish": mish})
    report = sdkernels.patch(model)
    reasons = {r.path: r.reason for r in report.left_alone}
    assert "hooks" in reasons["hooked"] and "Mish" in reasons["mish"]
    assert "forward" not in hooked.__dict__ and "forward" not in mish.__dict__
    assert "hooked" in str(report)


def test_bad_targets_raise_clear_errors():
    with pytest.raises(TypeError, match="DiffusionPipeline or a torch.nn.Module"):
        sdkernels.patch(42)
    with pytest.raises(TypeError, match="unexpected keyword argument .flash."):
        sdkernels.patch(nn.Linear(2, 2), flash=True)


def _patch_state(model: nn.Module) -> dict[str, tuple]:
    """Per submodule: the sdkernels rules applied, its instance attribute names and its attention processor type."""
    return {
        name: (
            sorted(m.__dict__.get("_sdkernels_rules", ())),
            sorted(m.__dict__),
            type(getattr(m, "processor", None)).__name__,
        )
        for name, m in model.named_modules()
    }


def test_patched_block_undoes_only_what_it_patched_and_keeps_earlier_patches():
    """Per rule, not per module: the UNet itself carries the conv_norm_out rule (group_norm) and the
    set_default_attn_processor rule (attention); leaving an attention-only block must keep the first."""
    unet = small_unet()
    inputs = unet_inputs(unet)
    sdkernels.patch(unet, attention=False, geglu=False)
    before = _patch_state(unet)
    with SdkernelsOpCounter() as counter:
        run_unet(unet, inputs)
    group_norm_calls = counter.counts["group_norm_silu"]
    assert group_norm_calls > 0 and "attention" not in counter.counts

    with sdkernels.patched(unet, group_norm=False, geglu=False) as report:
        assert report.count("attention") > 0 and report.count("group_norm") == 0
        with sdkernels.patched(unet) as inner:  # nested: only GEGLU is new here
            assert inner.count() == inner.count("geglu") > 0
        assert not any("forward" in m.__dict__ for m in unet.modules() if isinstance(m, GEGLU))
        assert sdkernels.patch(unet, group_norm=False, geglu=False).count() == 0  # the block's attention stays
    assert _patch_state(unet) == before
    with SdkernelsOpCounter() as counter:
        run_unet(unet, inputs)
    assert counter.counts == {"group_norm_silu": group_norm_calls}, "the patches made before the block must stay"

    with sdkernels.patched(unet, attention=False, geglu=False) as report:  # nothing new: nothing undone
        assert report.count() == 0
    assert _patch_state(unet) == before
