"""sdkernels.warmup fills exactly the Triton cache entries the JIT looks up on a GPU of the target arch, checked
without a GPU (sdkernels/testing/jit_keys.py drives Triton's real JITFunction.run on a fake sm_90 driver), and the
warmup API's own behaviour; the GPU-marked test checks the first real call then compiles nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch


def _without_interpreter() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    return env


def test_warmup_cache_entries_are_the_ones_the_jit_looks_up() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sdkernels.testing.jit_keys"],
        capture_output=True,
        text=True,
        env=_without_interpreter(),
        timeout=600,
        check=True,
    )
    keys = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(keys["warmup"]) >= 3  # gelu_gate, and GroupNorm's long- and short-row fused kernels
    assert keys["jit"] == keys["warmup"]  # same entries, in the same order of first use


def test_warmup_needs_a_gpu_or_an_arch() -> None:
    from sdkernels import warmup
    from sdkernels.testing.tiny.pipelines import make_sd_pipeline

    with pytest.raises(ValueError, match="arch="):
        warmup(make_sd_pipeline(), height=64, width=64)


@pytest.mark.gpu
def test_first_call_after_warmup_compiles_nothing(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import triton

    import sdkernels
    from sdkernels.testing.tiny.pipelines import make_sd_pipeline

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # the compile workers inherit it
    monkeypatch.setattr(triton.knobs.cache, "dir", str(tmp_path))
    pipe = make_sd_pipeline(device="cuda", dtype=torch.float16)
    sdkernels.patch(pipe)
    report = sdkernels.warmup(pipe, height=64, width=64)
    assert report.compiles > 0
    entries = set(os.listdir(tmp_path))
    assert len(entries) >= report.compiles
    with torch.no_grad():
        pipe("a cat", height=64, width=64, num_inference_steps=2, output_type="pt")
    assert set(os.listdir(tmp_path)) == entries  # every compile of the first call was a cache hit
