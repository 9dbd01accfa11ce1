"""sdkernels.patch as a drop-in for whole diffusers pipelines: txt2img, img2img, inpaint (9-channel UNet),
ControlNet and SDXL give, patched, the image the unpatched pipeline gives, within the project's tolerance rule
against the same pipeline run in fp64; and every GroupNorm, attention and GEGLU call went through an sdkernels op.

One denoising step at 64 x 64 keeps the interpreter cost down (~5-12 s of CPU per case)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import sdkernels
from sdkernels._dispatch import fallback_counts
from sdkernels.testing import tiny
from tests.dropin import counting_calls, dtype_independent_noise
from tests.op_counter import SdkernelsOpCounter
from tests.tolerance import FLOOR, assert_matches_reference

SIZE = 64
CASES = [
    ("sd", torch.float32, 7.5),  # classifier-free guidance: the UNet runs at batch 2
    ("img2img", torch.float32, 1.0),
    ("inpaint", torch.float32, 1.0),
    ("controlnet", torch.float32, 1.0),
    ("sdxl", torch.float32, 1.0),
    ("sd", torch.bfloat16, 1.0),
    ("sd", torch.float16, 1.0),
]


def _run(pipe, output_type: str, guidance_scale: float, round_to: torch.dtype):
    """One denoising step; the initial latents drawn in fp32 and rounded to `round_to`, so pipelines of every dtype
    start from the same noise."""
    extra = {}
    if "latents" in inspect.signature(pipe.__call__).parameters:
        generator = torch.Generator().manual_seed(7)
        latents = torch.randn(1, 4, SIZE // pipe.vae_scale_factor, SIZE // pipe.vae_scale_factor, generator=generator)
        extra["latents"] = latents.to(round_to).to(pipe.unet.dtype)
    with dtype_independent_noise(round_to):
        return tiny.run_pipeline(
            pipe, steps=1, size=SIZE, output_type=output_type, guidance_scale=guidance_scale, **extra
        ).images


def _fp64_copy(name: str, dtype: torch.dtype):
    """The pipeline built with `dtype` weights (so rounded like the tested one), then computed in fp64."""
    pipe = tiny.BUILDERS[name](dtype=dtype)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            torch.nn.Module.to(component, dtype=torch.float64)
    return pipe


@pytest.mark.parametrize(
    ("name", "dtype", "guidance_scale"), CASES, ids=[f"{n}-{str(d).removeprefix('torch.')}" for n, d, _ in CASES]
)
def test_patched_pipeline_gives_the_unpatched_image(name: str, dtype: torch.dtype, guidance_scale: float) -> None:
    pipe = tiny.BUILDERS[name](dtype=dtype)
    models = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    with counting_calls(models) as calls:
        expected = _run(pipe, "np", guidance_scale, dtype)
    # "pt" keeps the fp64 values ("np" would round them to fp32); NCHW -> NHWC like the "np" images
    reference = _run(_fp64_copy(name, dtype), "pt", guidance_scale, dtype).permute(0, 2, 3, 1)

    report = sdkernels.patch(pipe)
    fallbacks_before = fallback_counts()
    with SdkernelsOpCounter() as counter:
        got = _run(pipe, "np", guidance_scale, dtype)

    assert got.shape == expected.shape == (1, SIZE, SIZE, 3) and got.dtype == np.float32
    assert_matches_reference(
        torch.from_numpy(got), torch.from_numpy(expected), reference, floor=FLOOR[dtype], what=f"{name} {dtype} image"
    )
    assert not report.left_alone, str(report)
    # Every GroupNorm, attention and GEGLU the unpatched pipeline ran went through an sdkernels op, none fell back.
    assert calls["group_norm"] > 0 and calls["attention"] > 0 and calls["geglu"] > 0
    assert counter.counts["group_norm_silu"] == calls["group_norm"]
    assert counter.counts["attention"] == calls["attention"]
    assert counter.counts["geglu"] + counter.counts["gelu_gate"] == calls["geglu"]
    assert counter.counts["geglu"] == calls["geglu"], "plain Linear projections must take the fused GEMM"
    assert fallback_counts() == fallbacks_before, "a kernel fell back to PyTorch"
    if name == "controlnet":
        for kind in ("group_norm", "attention", "geglu"):
            assert report.count(kind, component="controlnet") > 0, f"the ControlNet's {kind} sites were not patched"
    sdkernels.unpatch(pipe)
    assert np.array_equal(_run(pipe, "np", guidance_scale, dtype), expected), "unpatch must restore bit-exactly"
