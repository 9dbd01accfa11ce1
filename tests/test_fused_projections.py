"""`pipe.fuse_qkv_projections()` / `unfuse_qkv_projections()` before and after patching (UNet and VAE): outputs keep
matching the unpatched model (tolerance rule against fp64), the report shows the fused processors were taken over,
and the fused `to_qkv` / `to_kv` projections are really the ones called.

Only attention is patched here (`group_norm=False, geglu=False`): fusion touches nothing else, and interpreting the
other kernels would only add time."""

from __future__ import annotations

import collections
from collections.abc import Iterator

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

import sdkernels
from sdkernels.integrations.attention_processor import SdkernelsAttnProcessor
from tests.dropin import small_sd_pipeline, unet_inputs
from tests.op_counter import SdkernelsOpCounter
from tests.tolerance import assert_matches_reference

ATTENTION_ONLY = {"group_norm": False, "geglu": False}


def outputs(pipe, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(UNet output, VAE decoder output) on fixed random inputs in the pipeline's current state."""
    inputs = tuple(t.to(dtype) if t.is_floating_point() else t for t in unet_inputs(pipe.unet))
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)).to(dtype)
    with torch.no_grad():
        return pipe.unet(*inputs).sample, pipe.vae.decode(latents).sample


def expected_outputs(pipe) -> tuple[tuple, tuple]:
    """Outputs of an unpatched pipeline in fp32 and fp64 (then back in fp32, exactly)."""
    fp32 = outputs(pipe)
    pipe.unet.double(), pipe.vae.double()
    try:
        return fp32, outputs(pipe, torch.float64)
    finally:
        pipe.unet.float(), pipe.vae.float()


def attentions(pipe) -> Iterator[Attention]:
    for model in (pipe.unet, pipe.vae):
        yield from (m for m in model.modules() if isinstance(m, Attention))


def processor_types(pipe) -> collections.Counter[str]:
    return collections.Counter(type(a.processor).__name__ for a in attentions(pipe))


def assert_matches(got: tuple, expected: tuple[tuple, tuple], what: str) -> None:
    for name, ours, theirs, fp64 in zip(("unet", "vae.decode"), got, *expected, strict=True):
        assert_matches_reference(ours, theirs, fp64, what=f"{what}: {name}")


def run_counting_projections(pipe) -> tuple[tuple, collections.Counter[str]]:
    """Outputs, with the sdkernels op calls and the calls of each projection kind (to_q, to_qkv, to_kv)."""
    calls: collections.Counter[str] = collections.Counter()
    handles = [
        getattr(a, name).register_forward_hook(lambda *_, name=name: calls.update([name]))
        for a in attentions(pipe)
        for name in ("to_q", "to_qkv", "to_kv")
        if getattr(a, name, None) is not None
    ]
    try:
        with SdkernelsOpCounter() as counter:
            got = outputs(pipe)
    finally:
        for handle in handles:
            handle.remove()
    calls.update({f"op:{k}": v for k, v in counter.counts.items()})
    return got, calls


@pytest.mark.parametrize("order", ["fuse-then-patch", "patch-then-fuse"])
def test_fused_projections_around_patching(order: str) -> None:
    reference = small_sd_pipeline()  # the same weights, never patched
    reference.fuse_qkv_projections()
    expected_fused = expected_outputs(reference)
    reference.unfuse_qkv_projections()
    expected_unfused = expected_outputs(reference)

    pipe = small_sd_pipeline()
    n_attention = sum(1 for _ in attentions(pipe))
    running = [a for model in (pipe.unet, pipe.vae.decoder) for a in model.modules() if isinstance(a, Attention)]
    n_run, n_self = len(running), sum(not a.is_cross_attention for a in running)  # the VAE encoder does not run
    if order == "patch-then-fuse":
        sdkernels.patch(pipe, **ATTENTION_ONLY)
        pipe.fuse_qkv_projections()
        # diffusers installs its own FusedAttnProcessor2_0 everywhere: sdkernels' attention is out until patched again
        assert processor_types(pipe) == {"FusedAttnProcessor2_0": n_attention}
    else:
        pipe.fuse_qkv_projections()
    report = sdkernels.patch(pipe, **ATTENTION_ONLY)
    taken_over = [r for r in report.results if r.kind == "attention" and r.status == "patched"]
    assert len(taken_over) == n_attention and all("FusedAttnProcessor2_0" in r.reason for r in taken_over)
    assert "fused QKV (replaces FusedAttnProcessor2_0)" in str(report)

    fused, calls = run_counting_projections(pipe)
    assert calls["op:attention"] == n_run
    assert calls["to_qkv"] == n_self and calls["to_kv"] == n_run - n_self
    assert calls["to_q"] == n_run - n_self  # cross-attention: to_q + to_kv
    assert_matches(fused, expected_fused, f"{order}, fused")

    pipe.unfuse_qkv_projections()
    unfused, calls = run_counting_projections(pipe)
    if order == "fuse-then-patch":
        # diffusers restores the processors it saved when fusing: the stock ones, so sdkernels' attention is out
        assert processor_types(pipe) == {"AttnProcessor2_0": n_attention} and calls["op:attention"] == 0
        assert sdkernels.patch(pipe, **ATTENTION_ONLY).count("attention") == n_attention  # patch takes over again
        unfused, calls = run_counting_projections(pipe)
    assert all(
        type(a.processor) is SdkernelsAttnProcessor and type(a.processor.replaced) is AttnProcessor2_0
        for a in attentions(pipe)
    )
    # to_qkv / to_kv stay attached after unfusing (and fused_projections stays True): they must not be used
    assert calls["op:attention"] == n_run and calls["to_qkv"] == calls["to_kv"] == 0
    assert calls["to_q"] == n_run
    assert_matches(unfused, expected_unfused, f"{order}, unfused")

    assert sdkernels.unpatch(pipe) == n_attention
    assert processor_types(pipe) == {"AttnProcessor2_0": n_attention}
