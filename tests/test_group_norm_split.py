"""GroupNorm(+SiLU)'s split path (statistics over chunks of a group, then the apply kernel) under the interpreter:
against PyTorch in fp64 (tests/group_norm_cases.py), against the fused path, deterministic, and the policy that
chooses it to fill the GPU."""

from __future__ import annotations

import pytest
import torch

from sdkernels import ops
from sdkernels.kernels import group_norm as gn_kernels
from tests.group_norm_cases import channels_last, run_and_check, sd_inputs

# NCHW runs on the fixed tiles a GPU launches (not the interpreter-only packed tiles the pipelines tests use)
pytestmark = pytest.mark.usefixtures("group_norm_gpu_tiles")


SPLIT_CASES = [
    (torch.float32, False, (1, 32, 8, 15)),
    (torch.float16, True, (2, 16, 9, 13)),
    (torch.bfloat16, False, (1, 16, 4, 5, 6)),
]


@pytest.mark.parametrize("dtype, nhwc, shape", SPLIT_CASES, ids=["fp32", "fp16_channels_last", "bf16_3d"])
def test_split_matches_fused_and_is_deterministic(
    dtype: torch.dtype, nhwc: bool, shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    x, weight, bias, add = sd_inputs(shape, dtype)
    x = x + torch.linspace(-3, 3, x[0, 0].numel()).reshape(shape[2:]).to(dtype)  # chunk means differ
    x = channels_last(x) if nhwc else x
    groups = shape[1] // 4
    fused = run_and_check(x, groups, weight, bias, add, what="fused")
    spatial = x[0, 0].numel()
    monkeypatch.setattr(gn_kernels, "FORCE_SPLIT", 4)
    chunk = gn_kernels.split_chunk(shape[0] * groups, 4, spatial, gn_kernels.DEFAULT_SM_COUNT)
    assert chunk is not None and -(-spatial // chunk) >= 3, "the test must exercise several chunks"
    split = run_and_check(x, groups, weight, bias, add, what="split")
    again = ops.group_norm_silu(x, groups, weight, bias, add=add)
    assert torch.equal(split, again), "split path is not deterministic"
    # Different reduction trees, the same statistics up to fp32 rounding (observed: fp16/bf16 identical, fp32 within
    # 1e-6); a lost or double-counted chunk would move outputs by ~1e-2.
    difference = (split.double() - fused.double()).abs().max().item()
    assert difference <= 16 * torch.finfo(dtype).eps * fused.double().abs().max().item(), difference


def test_split_policy_fills_the_gpu() -> None:
    # SDXL VAE decoder (1, 128, 1024, 1024), 32 groups of 4.2 M elements: >= 4 programs per SM on A100 and H100.
    for sm_count in (108, 132):
        chunk = gn_kernels.split_chunk(32, 4, 1024 * 1024, sm_count)
        assert chunk is not None and chunk % gn_kernels.CHUNK_ALIGN == 0
        programs = 32 * -(-1024 * 1024 // chunk)
        assert programs >= gn_kernels.PROGRAMS_PER_SM * sm_count, (sm_count, chunk, programs)
    # UNet-sized groups keep the single fused kernel.
    assert gn_kernels.split_chunk(2 * 32, 40, 8 * 8, 132) is None
    assert gn_kernels.split_chunk(2 * 32, 10, 16 * 16, 132) is None


def test_split_policy_path_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # The production policy (not FORCE_SPLIT) with its thresholds scaled down to an interpreter-sized input.
    monkeypatch.setattr(gn_kernels, "MIN_ELEMENTS_PER_PROGRAM", 256)
    monkeypatch.setattr(gn_kernels, "CHUNK_ALIGN", 32)
    assert gn_kernels.split_chunk(8, 4, 16 * 16, 132) == 64
    x, weight, bias, add = sd_inputs((1, 32, 16, 16), torch.float16, nhwc=True)
    run_and_check(x, 8, weight, bias, add, what="policy split")
