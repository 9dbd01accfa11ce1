"""GroupNorm(+SiLU) with several small groups per program under the interpreter: the policy that packs them (the
fused kernel's constexprs for a shape, as every launch computes them), and packed runs against PyTorch in fp64
(tests/group_norm_cases.py) and against one group per program, with partial last sets and large offsets."""

from __future__ import annotations

import pytest
import torch

from sdkernels import ops
from sdkernels.kernels import group_norm as gn_kernels
from sdkernels.kernels import group_norm_kernels as gn_jit
from sdkernels.kernels import group_norm_tiles as gn_tiles
from sdkernels.tools import traffic_model
from tests.group_norm_cases import DTYPES, run_and_check, sd_inputs

# NCHW runs on the fixed tiles a GPU launches (not the interpreter-only packed tiles the pipelines tests use)
pytestmark = pytest.mark.usefixtures("group_norm_gpu_tiles")


def fused_config(batch: int, channels: int, spatial: int, groups: int, sm_count: int | None, nhwc: bool = True) -> dict:
    """The fused kernel's constexprs for this shape (the plan's prune + heuristics, as every launch runs it)."""
    args = {
        "CPG": channels // groups,
        "S": spatial,
        "stride_xs": channels if nhwc else 1,
        "HAS_ADD": True,
        "SILU": True,
        "MAX_GROUPS_PER_PROGRAM": gn_kernels.max_groups_per_program(batch, groups, sm_count),
    }
    return traffic_model.kernel_config(gn_jit.group_norm_fused_kernel, args)


def test_groups_per_program_policy() -> None:
    # A GPU keeps >= 2 programs per SM: SD batch 2 (64 groups) gets one group per program on A100 and H100, batch 64
    # (2048 groups) 4 on H100; off CUDA (no SM count) only the group count bounds it.
    assert gn_kernels.max_groups_per_program(2, 32, 132) == gn_kernels.max_groups_per_program(2, 32, 108) == 1
    assert gn_kernels.max_groups_per_program(64, 32, 132) == 4 and gn_kernels.max_groups_per_program(1, 6, None) == 8
    # As many whole groups as the tile holds: (2, 320, 8, 8) is CPG 10 (16 lanes) x 64 positions, 8 per 8192-element
    # tile; (2, 1280, 8, 8) 2 of 64 x 64; the tiny UNet's (2, 128, 1, 1) all 32. A group over a tile stays alone.
    for channels, spatial, expected in ((320, 64, 8), (1280, 64, 2), (128, 1, 32), (32, 1023, 1)):
        config = fused_config(2, channels, spatial, 32 if expected > 1 else 1, None)
        assert config["GROUPS_PER_PROGRAM"] == expected and config["ONE_TILE"] == (expected > 1), config
        assert config["GROUPS_PER_PROGRAM"] * config["BLOCK_C"] * config["BLOCK_S"] <= config["TILE"]
        assert fused_config(2, channels, spatial, 32, 132)["GROUPS_PER_PROGRAM"] == 1
    # NCHW (SD's layout) loops over one fixed tile whatever CPG, S and the batch are: one compile serves all shapes.
    for channels, spatial in ((320, 64), (1280, 64), (128, 1), (640, 1024), (1920, 4096), (128, 262144)):
        config = fused_config(2, channels, spatial, 32, None, nhwc=False)
        long_rows = spatial >= gn_tiles.LONG_ROWS
        expected = (8192 // gn_tiles.LONG_BLOCK_S, gn_tiles.LONG_BLOCK_S) if long_rows else (32, gn_tiles.SHORT_BLOCK_S)
        assert (config["BLOCK_C"], config["BLOCK_S"], config["TILE"]) == (*expected, 8192), config
        assert not config["ONE_TILE"] and config["GROUPS_PER_PROGRAM"] == 1


# (shape, groups, dtype, channels_last, bound on groups per program): SD channel counts at small spatial sizes, and
# group counts that the per-program count does not divide (the last set of groups is partly masked).
# Packing applies to channels_last (NCHW takes the fixed-tile loop).
GROUPED_CASES = [
    ((2, 320, 8, 8), 32, torch.float32, True, None),
    ((2, 1280, 4, 4), 32, torch.float16, True, None),
    ((2, 640, 2, 2), 32, torch.bfloat16, True, None),
    ((2, 96, 5, 3), 12, torch.float32, True, 8),
    ((3, 48, 7), 6, torch.float16, True, 4),
    ((2, 80, 3, 3), 10, torch.bfloat16, True, 4),
]


@pytest.mark.parametrize(
    "shape, groups, dtype, nhwc, bound",
    GROUPED_CASES,
    ids=[
        "C320_fp32_channels_last",
        "C1280_fp16_channels_last",
        "C640_bf16_channels_last",
        "G12_by8_fp32_channels_last",
        "G6_by4_fp16_1d_channels_last",
        "G10_by4_bf16_channels_last",
    ],
)
def test_several_groups_per_program(
    shape: tuple[int, ...],
    groups: int,
    dtype: torch.dtype,
    nhwc: bool,
    bound: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, weight, bias, add = sd_inputs(shape, dtype, nhwc=nhwc)
    monkeypatch.setattr(gn_kernels, "FORCE_GROUPS_PER_PROGRAM", bound)
    config = fused_config(shape[0], shape[1], x[0, 0].numel(), groups, None)
    assert config["ONE_TILE"] and config["GROUPS_PER_PROGRAM"] > 1, "the test must pack several groups"
    assert bound is None or groups % config["GROUPS_PER_PROGRAM"] != 0, "the test must mask a partial set"
    packed = run_and_check(x, groups, weight, bias, add, what=f"{shape} packed")
    assert torch.equal(packed, ops.group_norm_silu(x, groups, weight, bias, add=add)), "not deterministic"
    monkeypatch.setattr(gn_kernels, "FORCE_GROUPS_PER_PROGRAM", 1)
    alone = run_and_check(x, groups, weight, bias, add, what=f"{shape} one group per program")
    # The same per-group arithmetic in a different reduction tree: equal up to fp32 rounding (a group mixed with its
    # neighbour, or a masked lane counted, would move outputs by ~1e-1).
    difference = (packed.double() - alone.double()).abs().max().item()
    assert difference <= 16 * torch.finfo(dtype).eps * alone.double().abs().max().item(), difference


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_several_groups_large_offsets_and_options(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    # |mean| >> std in every group of packed programs with a partial last set (10 groups, 4 per program), channels
    # last; fp32 also without add and weight, fp16 with a broadcast add, bf16 without SiLU.
    offset, std = {torch.float16: (300.0, 1.0), torch.bfloat16: (100.0, 1.0)}.get(dtype, (1000.0, 0.01))
    monkeypatch.setattr(gn_kernels, "FORCE_GROUPS_PER_PROGRAM", 4)
    x, weight, bias, add = sd_inputs((2, 40, 6, 5), dtype, nhwc=True, offset=offset, std=std)
    weight = None if dtype == torch.float32 else weight
    add = None if dtype == torch.float32 else add[:1].expand(2, -1) if dtype == torch.float16 else add
    run_and_check(x, 10, weight, bias, add, silu=dtype != torch.bfloat16, what=f"offset {offset} {dtype}")
