"""GroupNorm(+add)(+SiLU) Triton kernel under the interpreter: SD's channel/group configurations at reduced spatial
sizes, fp32/fp16/bf16, NCHW and channels_last, odd and 1-D/3-D spatial shapes, large offsets, several small groups
per program (with a partial last set), the split path and their determinism, and the custom op's registration.

Every output is compared with PyTorch in fp64 under the project's rule (tests/tolerance.py): our error may be at
most twice PyTorch's own same-dtype error plus a tiny floor. Shapes keep SD's channel counts and 32 groups at batch
1-2 and spatial sizes up to 16x16 (the interpreter costs ~10-20 ms per program; off CUDA it packs small groups, so
most cases run that path, and FORCE_GROUPS_PER_PROGRAM = 1 gives the one-group path a GPU takes at SD batch sizes).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from sdkernels import ops
from sdkernels.kernels import group_norm as gn_kernels
from sdkernels.kernels import group_norm_kernels as gn_jit
from sdkernels.kernels import group_norm_tiles as gn_tiles
from sdkernels.tools import traffic
from tests.tolerance import assert_matches_reference


@pytest.fixture(autouse=True)
def _gpu_geometry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run NCHW on the fixed tiles a GPU launches (not the interpreter-only packed tiles the pipelines tests use)."""
    monkeypatch.setattr(gn_kernels, "PACK_NCHW_WHEN_INTERPRETED", False)


Tensor = torch.Tensor


def channels_last(x: Tensor) -> Tensor:
    """Channels-innermost copy for any number of spatial dims (channels_last / channels_last_3d for 4-D / 5-D)."""
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


def torch_group_norm(
    x: Tensor,
    groups: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    silu: bool,
    add: Tensor | None,
    dtype: torch.dtype,
) -> Tensor:
    """PyTorch's F.silu(F.group_norm(x + add)) computed entirely in `dtype`."""
    h = x.to(dtype)
    if add is not None:
        h = h + add.to(dtype).reshape(*add.shape, *([1] * (x.dim() - 2)))
    cast = (lambda p: None if p is None else p.to(dtype)) if dtype == torch.float64 else (lambda p: p)
    y = F.group_norm(h, groups, cast(weight), cast(bias), eps)
    return F.silu(y) if silu else y


def run_and_check(
    x: Tensor,
    groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    add: Tensor | None = None,
    eps: float = 1e-5,
    silu: bool = True,
    via_torch_ops: bool = False,
    what: str = "",
) -> Tensor:
    if via_torch_ops:
        out = torch.ops.sdkernels.group_norm_silu(x, groups, weight, bias, eps, silu, add)
    else:
        out = ops.group_norm_silu(x, groups, weight, bias, eps, silu=silu, add=add)
    assert out.dtype == x.dtype and out.shape == x.shape, what
    assert out.stride() == torch.empty_like(x).stride(), f"{what}: output strides {out.stride()} lost x's layout"
    same = torch_group_norm(x, groups, weight, bias, eps, silu, add, x.dtype)
    ref = torch_group_norm(x, groups, weight, bias, eps, silu, add, torch.float64)
    assert_matches_reference(out, same, ref, what=what)
    return out


def sd_inputs(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    *,
    nhwc: bool = False,
    with_add: bool = True,
    offset: float = 0.0,
    std: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """x ~ offset + std * N(0, 1) in `dtype`; weight ~ 1 + N(0, 0.1²) and bias ~ N(0, 0.1²) in `dtype` like a
    trained GroupNorm; add ~ N(0, 1) of shape (N, C) like ResnetBlock2D's projected temb."""
    batch, channels = shape[:2]
    x = (offset + std * torch.randn(shape)).to(dtype)
    weight = (1 + 0.1 * torch.randn(channels)).to(dtype)
    bias = (0.1 * torch.randn(channels)).to(dtype)
    add = torch.randn(batch, channels).to(dtype) if with_add else None
    return channels_last(x) if nhwc else x, weight, bias, add


# ----------------------------------------------------------------------------------------- SD configurations
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# (channels, spatial) from the SD1.5/SDXL UNet (32 groups, eps 1e-5); dtype and layout rotate so each case is cheap.
UNET_CASES = [(320, (16, 16)), (640, (16, 16)), (1280, (8, 8)), (1920, (8, 8)), (2560, (8, 8))]


@pytest.mark.parametrize("index", range(len(UNET_CASES)), ids=[f"C{c}" for c, _ in UNET_CASES])
def test_unet_channels(index: int) -> None:
    channels, spatial = UNET_CASES[index]
    dtype, nhwc = DTYPES[index % 3], index % 2 == 1
    x, weight, bias, add = sd_inputs((1, channels, *spatial), dtype, nhwc=nhwc, with_add=index != 2)
    out = run_and_check(x, 32, weight, bias, add, via_torch_ops=index % 2 == 0, what=f"unet C={channels} {dtype}")
    assert out.is_contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)


# VAE encoder/decoder: 32 groups, eps 1e-6, no add; 4, 8 and 16 channels per group.
VAE_CASES = [(128, (16, 16)), (256, (8, 8)), (512, (8, 8))]


@pytest.mark.parametrize("index", range(len(VAE_CASES)), ids=[f"C{c}" for c, _ in VAE_CASES])
def test_vae_channels(index: int) -> None:
    channels, spatial = VAE_CASES[index]
    dtype, nhwc = DTYPES[(index + 1) % 3], index % 2 == 0
    x, weight, bias, _ = sd_inputs((1, channels, *spatial), dtype, nhwc=nhwc)
    out = run_and_check(x, 32, weight, bias, eps=1e-6, via_torch_ops=index == 1, what=f"vae C={channels} {dtype}")
    assert out.is_contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)


@pytest.mark.parametrize("nhwc", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_and_layout(dtype: torch.dtype, nhwc: bool) -> None:
    # Batch 2, odd spatial 7x9, 4/8/16 channels per group depending on the dtype.
    groups = {torch.float32: 16, torch.float16: 8, torch.bfloat16: 4}[dtype]
    x, weight, bias, add = sd_inputs((2, 64, 7, 9), dtype, nhwc=nhwc)
    out = run_and_check(x, groups, weight, bias, add, what=f"{dtype} nhwc={nhwc}")
    assert out.is_contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_interpreted_nchw_packs_small_groups(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interpreter-only NCHW geometry (several small groups per program, what the pipelines tests run) against
    fp64, and it really packs: fewer programs than groups."""
    monkeypatch.setattr(gn_kernels, "PACK_NCHW_WHEN_INTERPRETED", True)
    x, weight, bias, add = sd_inputs((2, 64, 8, 8), dtype)
    run_and_check(x, 16, weight, bias, add, what=f"packed nchw {dtype}")
    launches = gn_kernels._prepare(x, 16, weight, bias, 1e-5, True, add)
    ((plan, grid, _),) = launches.steps
    assert plan.constexprs["GROUPS_PER_PROGRAM"] > 1 and grid[0] < 2 * 16


# ---------------------------------------------------------------------------------------------- shapes, options
@pytest.mark.parametrize("shape", [(1, 16, 1, 1), (2, 16, 5, 3), (1, 16, 2, 3, 5), (2, 16, 11), (3, 16)], ids=str)
@pytest.mark.parametrize("nhwc", [False, True], ids=["nchw", "channels_last"])
def test_spatial_shapes(shape: tuple[int, ...], nhwc: bool) -> None:
    x, weight, bias, add = sd_inputs(shape, torch.float16, nhwc=nhwc)
    run_and_check(x, 4, weight, bias, add, what=f"{shape}")


@pytest.mark.parametrize("layout", ["transposed_hw", "sliced_w"])
def test_strided_input_is_copied_once_and_keeps_output_layout(layout: str) -> None:
    # Spatial dims that cannot be flattened in place: the launcher copies x once (and, for the transposed case,
    # writes through a contiguous buffer into empty_like(x)'s strides).
    base = torch.randn(1, 16, 6, 10)
    x = base.transpose(2, 3) if layout == "transposed_hw" else base[:, :, :, ::2]
    weight, bias = torch.randn(16), torch.randn(16)
    run_and_check(x, 4, weight, bias, torch.randn(1, 16), what=layout)


@pytest.mark.parametrize("options", ["no_weight", "no_bias", "no_affine", "no_silu", "fp32_params", "broadcast_add"])
def test_affine_activation_and_add_options(options: str) -> None:
    x, weight, bias, add = sd_inputs((2, 32, 6, 6), torch.float16, nhwc=options == "no_silu")
    weight = None if options in ("no_weight", "no_affine") else weight
    bias = None if options in ("no_bias", "no_affine") else bias
    if options == "fp32_params":  # fp16 activations with fp32 GroupNorm parameters: loaded and used as fp32
        weight, bias = weight.float(), bias.float()
    if options == "broadcast_add":  # the same temb row for the whole batch, stride 0 along N
        add = add[:1].expand(2, -1)
    run_and_check(x, 8, weight, bias, add, silu=options != "no_silu", via_torch_ops=options == "no_bias", what=options)


# A naive E[x²] - E[x]² in fp32 has nothing left of a variance of 1e-4 next to a mean² of 1e6.
@pytest.mark.parametrize("case", ["fp32_one_tile", "fp32_loop", "fp32_split", "fp32_no_add", "fp16", "bf16"])
def test_large_offsets(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(case, torch.float32)
    offset, std = {"fp16": (300.0, 1.0), "bf16": (100.0, 1.0)}.get(case, (1000.0, 0.01))
    # fp32_loop: one group of 32 x 1023 positions, 4 tiles of 32 x 256 with a partial last one.
    shape, groups = ((1, 32, 31, 33), 1) if case == "fp32_loop" else ((1, 32, 8, 12), 8)
    if case == "fp32_split":
        monkeypatch.setattr(gn_kernels, "FORCE_SPLIT", 3)
    x, weight, bias, add = sd_inputs(shape, dtype, offset=offset, std=std, with_add=case != "fp32_no_add")
    run_and_check(x, groups, weight, bias, add, what=case)


def test_channel_blocks_beyond_one_tile() -> None:
    # GroupNorm(1, 16384) over (N, C): more channels per group than one tile holds, so the kernel loops channels.
    x, weight, bias, add = sd_inputs((1, 16384), torch.float32)
    run_and_check(x, 1, weight, bias, add, what="C=16384, one group")


# ------------------------------------------------------------------------------------------------- split path
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


# -------------------------------------------------------------------------------- several groups per program
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
    return traffic.kernel_config(gn_jit.group_norm_fused_kernel, args)


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


# --------------------------------------------------------------------------------------------- registration
def test_opcheck() -> None:
    x, weight, bias, add = sd_inputs((2, 8, 3, 5), torch.float32, nhwc=True)
    torch.library.opcheck(torch.ops.sdkernels.group_norm_silu.default, (x, 2, weight, bias, 1e-5, True, add))


AOT_CHECK = """
import json
from sdkernels.kernels.group_norm_aot import aot_specs
print(json.dumps([dict(variant=s.variant, signature=s.signature, constexprs=sorted(s.constexprs),
                       arg_names=list(s.fn.arg_names), divisible_by_16=list(s.divisible_by_16),
                       equal_to_1=list(s.equal_to_1), uses_dot=s.uses_dot) for s in aot_specs()]))
"""


def test_aot_specs_bind_every_argument() -> None:
    # aot_specs() feeds the sm_80/sm_90 compile report (python -m sdkernels compile-report), which runs without the
    # interpreter (the report compiles real JITFunctions), so it is checked in a subprocess with TRITON_INTERPRET=0.
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    result = subprocess.run(
        [sys.executable, "-c", AOT_CHECK],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=pathlib.Path(__file__).parents[1],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    specs = json.loads(result.stdout.splitlines()[-1])
    assert len({spec["variant"] for spec in specs}) == len(specs)
    for spec in specs:
        signature, variant = spec["signature"], spec["variant"]
        assert set(signature) | set(spec["constexprs"]) == set(spec["arg_names"]), variant
        assert not set(signature) & set(spec["constexprs"]) and not spec["uses_dot"], variant
        hinted = spec["divisible_by_16"] + spec["equal_to_1"]
        assert all(signature[name][0] == "*" or signature[name] in ("i32", "i64") for name in hinted), variant
        assert not set(spec["divisible_by_16"]) & set(spec["equal_to_1"]), variant
    # What a default run launches (recorded at SD shapes): NCHW's fixed long-row and short-row tiles and the split
    # kernels; channels_last's one-tile and loop forms and the split kernels; in every dtype.
    forms = [
        ("group_norm_fused_kernel", "nchw", "4x2048"),
        ("group_norm_fused_kernel", "nchw", "32x256"),
        ("group_norm_partials_kernel", "nchw", ""),
        ("group_norm_apply_kernel", "nchw", ""),
        ("group_norm_fused_kernel", "channels_last", "one-tile"),
        ("group_norm_partials_kernel", "channels_last", ""),
        ("group_norm_apply_kernel", "channels_last", ""),
    ]
    for kernel, layout, detail in forms:
        for dtype in ("float16", "bfloat16", "float32"):
            assert any(
                s["variant"].startswith(f"{kernel} {layout} {dtype} ") and detail in s["variant"] for s in specs
            ), (kernel, layout, dtype, detail)
