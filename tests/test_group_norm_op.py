"""GroupNorm(+add)(+SiLU) Triton kernel under the interpreter: SD's channel/group configurations at reduced spatial
sizes, fp32/fp16/bf16, NCHW and channels_last, odd and 1-D/3-D spatial shapes, large offsets, and the custom op's
registration (the split path: test_group_norm_split.py; several groups per program: test_group_norm_packing.py).

Every output is compared with PyTorch in fp64 under the project's rule (tests/tolerance.py): our error may be at
most twice PyTorch's own same-dtype error plus a tiny floor. Shapes keep SD's channel counts and 32 groups at batch
1-2 and spatial sizes up to 16x16 (the interpreter costs ~10-20 ms per program; off CUDA it packs small groups, so
most cases run that path, and FORCE_GROUPS_PER_PROGRAM = 1 gives the one-group path a GPU takes at SD batch sizes).
"""

from __future__ import annotations

import json

import pytest
import torch

from sdkernels.kernels import group_norm as gn_kernels
from tests.group_norm_cases import DTYPES, run_and_check, sd_inputs
from tests.uninterpreted import run_without_interpreter

# NCHW runs on the fixed tiles a GPU launches (not the interpreter-only packed tiles the pipelines tests use)
pytestmark = pytest.mark.usefixtures("group_norm_gpu_tiles")


# ----------------------------------------------------------------------------------------- SD configurations

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
    result = run_without_interpreter(AOT_CHECK)
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
