"""What users do to a pipeline after patching it: `pipe.to(dtype)`, `pipe.to(device)`, attention slicing,
`set_default_attn_processor()`, model / sequential CPU offload. Each either keeps working and patched, or its effect
on the patch is asserted plainly here (and reported)."""

from __future__ import annotations

import collections

import pytest
import torch
from accelerate import cpu_offload
from diffusers.models.attention_processor import Attention, AttnProcessor, SlicedAttnProcessor

import sdkernels
from sdkernels.integrations.attention_processor import SdkernelsAttnProcessor
from sdkernels.testing import tiny
from tests.dropin import counting_calls, in_fp64, run_unet, small_sd_pipeline, small_unet, unet_inputs
from tests.op_counter import SdkernelsOpCounter
from tests.tolerance import FLOOR, assert_matches_reference

ATTENTION_ONLY = {"group_norm": False, "geglu": False}


def unet_and_decoder(pipe, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = unet_inputs(pipe.unet, dtype=dtype)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)).to(dtype)
    with torch.no_grad():
        return run_unet(pipe.unet, inputs), pipe.vae.decode(latents).sample


def processor_types(unet) -> collections.Counter[str]:
    return collections.Counter(type(m.processor).__name__ for m in unet.modules() if isinstance(m, Attention))


def test_to_device_and_dtype_after_patching_keep_the_patch() -> None:
    reference = small_sd_pipeline().to(torch.bfloat16)  # the same weights, never patched
    with counting_calls([reference.unet, reference.vae]) as calls:
        expected = unet_and_decoder(reference, torch.bfloat16)
    reference.unet.double(), reference.vae.double()  # the bf16 weights, computed in fp64
    fp64 = unet_and_decoder(reference, torch.float64)

    pipe = small_sd_pipeline()
    report = sdkernels.patch(pipe)
    pipe.to("cpu")
    pipe.to(torch.device("cpu"))
    pipe.to(torch.bfloat16)
    assert pipe.unet.dtype == pipe.vae.dtype == torch.bfloat16
    again = sdkernels.patch(pipe)  # nothing was lost: every site is still patched
    assert again.count() == 0 and again.count(status="already patched") == report.count()

    with SdkernelsOpCounter() as counter:
        got = unet_and_decoder(pipe, torch.bfloat16)
    assert counter.counts["group_norm_silu"] == calls["group_norm"]
    assert counter.counts["attention"] == calls["attention"] and counter.counts["geglu"] == calls["geglu"]
    for what, ours, theirs, ref in zip(("unet", "vae.decode"), got, expected, fp64, strict=True):
        assert ours.dtype == torch.bfloat16
        assert_matches_reference(ours, theirs, ref, floor=FLOOR[torch.bfloat16], what=f"bf16 after pipe.to: {what}")


def test_attention_slicing_after_patching_replaces_sdkernels_attention_visibly() -> None:
    pipe = small_sd_pipeline()
    inputs = unet_inputs(pipe.unet)
    expected = run_unet(pipe.unet, inputs)
    n_attention = sum(isinstance(m, Attention) for m in pipe.unet.modules())
    sdkernels.patch(pipe, **ATTENTION_ONLY)

    # diffusers sets its SlicedAttnProcessor on every layer: still the right output, no longer sdkernels' attention
    pipe.enable_attention_slicing()
    assert processor_types(pipe.unet) == {"SlicedAttnProcessor": n_attention}
    with SdkernelsOpCounter() as counter:
        assert torch.allclose(run_unet(pipe.unet, inputs), expected, rtol=0, atol=1e-5)
    assert counter.counts["attention"] == 0
    report = sdkernels.patch(pipe, **ATTENTION_ONLY)  # ... and the report says so
    sliced = [r for r in report.left_alone if r.kind == "attention" and r.component == "unet"]
    assert len(sliced) == n_attention and all(SlicedAttnProcessor.__name__ in r.reason for r in sliced)

    pipe.disable_attention_slicing()  # back to diffusers' default processor: patching again takes it over
    assert processor_types(pipe.unet) == {"AttnProcessor2_0": n_attention}
    assert sdkernels.patch(pipe, **ATTENTION_ONLY).count("attention", component="unet") == n_attention
    assert processor_types(pipe.unet) == {"SdkernelsAttnProcessor": n_attention}


def test_set_default_attn_processor_after_unpatching_then_patching_takes_over_the_classic_processor() -> None:
    """The working order today: unpatch, set_default_attn_processor, patch (the classic AttnProcessor is replaced
    too, with its attn.scale)."""
    unet = small_unet()
    sdkernels.patch(unet, **ATTENTION_ONLY)
    sdkernels.unpatch(unet)
    unet.set_default_attn_processor()
    inputs = unet_inputs(unet)
    expected, fp64 = run_unet(unet, inputs), in_fp64(unet, lambda *t: run_unet(unet, t), *inputs)
    report = sdkernels.patch(unet, **ATTENTION_ONLY)
    assert all(
        type(m.processor) is SdkernelsAttnProcessor and type(m.processor.replaced) is AttnProcessor
        for m in unet.modules()
        if isinstance(m, Attention)
    )
    assert "classic AttnProcessor" in str(report)
    assert_matches_reference(run_unet(unet, inputs), expected, fp64, what="patched over set_default_attn_processor")


def test_set_default_attn_processor_on_a_patched_unet() -> None:
    """What the README claims: the classic AttnProcessor that set_default_attn_processor() installs is taken over
    again by sdkernels (every layer, its attn.scale numerics), and unpatch leaves the classic processors behind."""
    reference = small_unet()  # the same weights, never patched, with diffusers' classic processors
    reference.set_default_attn_processor()
    inputs = unet_inputs(reference)
    with counting_calls([reference]) as calls:
        expected = run_unet(reference, inputs)
    fp64 = in_fp64(reference, lambda *t: run_unet(reference, t), *inputs)

    unet = small_unet()
    sdkernels.patch(unet, **ATTENTION_ONLY)
    unet.set_default_attn_processor()
    layers = [m for m in unet.modules() if isinstance(m, Attention)]
    assert layers and all(
        type(m.processor) is SdkernelsAttnProcessor and type(m.processor.replaced) is AttnProcessor for m in layers
    ), processor_types(unet)
    with SdkernelsOpCounter() as counter:
        got = run_unet(unet, inputs)
    assert counter.counts["attention"] == calls["attention"] > 0
    assert_matches_reference(got, expected, fp64, what="patched set_default_attn_processor")

    sdkernels.unpatch(unet)
    assert processor_types(unet) == {"AttnProcessor": len(layers)}
    assert torch.equal(run_unet(unet, inputs), expected)


def test_sequential_offload_after_patching() -> None:
    unet = small_unet()
    inputs = unet_inputs(unet)
    expected, fp64 = run_unet(unet, inputs), in_fp64(unet, lambda *t: run_unet(unet, t), *inputs)
    sdkernels.patch(unet)
    cpu_offload(unet, execution_device=torch.device("cpu"))  # what enable_sequential_cpu_offload does, on CPU
    assert_matches_reference(run_unet(unet, inputs), expected, fp64, what="patched, then sequential offload")


def test_unpatch_after_sequential_offload_keeps_the_offload_hooks() -> None:
    unet = small_unet()
    inputs = unet_inputs(unet)
    expected = run_unet(unet, inputs)
    sdkernels.patch(unet, attention=False, geglu=False)
    cpu_offload(unet, execution_device=torch.device("cpu"))
    sdkernels.unpatch(unet)
    assert torch.equal(run_unet(unet, inputs), expected)


def test_sequential_offload_before_patching_leaves_hooked_norms_alone() -> None:
    unet = small_unet()
    inputs = unet_inputs(unet)
    expected, fp64 = run_unet(unet, inputs), in_fp64(unet, lambda *t: run_unet(unet, t), *inputs)
    cpu_offload(unet, execution_device=torch.device("cpu"))
    report = sdkernels.patch(unet)
    assert report.count("group_norm") == 0 and report.count("attention") > 0 and report.count("geglu") > 0
    assert all("hooks" in r.reason for r in report.left_alone)
    with SdkernelsOpCounter() as counter:
        got = run_unet(unet, inputs)
    assert counter.counts["gelu_gate"] > 0 and counter.counts["geglu"] == 0  # hooked proj: called as a module
    assert_matches_reference(got, expected, fp64, what="sequential offload, then patched")


@pytest.mark.gpu
@pytest.mark.parametrize("offload", ["enable_model_cpu_offload", "enable_sequential_cpu_offload"])
def test_cpu_offload_on_cuda(offload: str) -> None:
    """Patch first, then offload (the documented order): the image of the unpatched CUDA pipeline."""
    expected = tiny.run_pipeline(tiny.make_sd_pipeline(device="cuda"), steps=1).images
    reference = tiny.run_pipeline(tiny.make_sd_pipeline(dtype=torch.float64), steps=1, output_type="pt").images
    pipe = tiny.make_sd_pipeline()
    sdkernels.patch(pipe)
    getattr(pipe, offload)()
    with SdkernelsOpCounter() as counter:
        got = tiny.run_pipeline(pipe, steps=1).images
    assert counter.counts["group_norm_silu"] > 0 and counter.counts["attention"] > 0
    assert_matches_reference(
        torch.from_numpy(got),
        torch.from_numpy(expected),
        reference.permute(0, 2, 3, 1).cpu(),
        what=f"patched, then {offload}",
    )
