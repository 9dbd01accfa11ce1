"""The compile budget of a first image (issue 9), computed without a GPU: an SD1.5 512² and an SDXL 1024²
generation replayed on the meta device with launches recorded and specialised for sm_90 (CI's budget check), plus
what a new resolution or batch size adds, and the recorder's own bookkeeping."""

from __future__ import annotations

import pytest
import torch

from sdkernels import ops
from sdkernels.kernels._launch import LaunchRecorder
from sdkernels.tools import coldstart


def _keys(model: str, height: int, width: int, batch: int = 1) -> set[str]:
    return {c.key for c in coldstart.generation_compiles(model, height, width, batch, arch=90)}


def test_sd15_budget_and_new_shapes_add_at_most_two() -> None:
    base = _keys("sd15", 512, 512)
    assert len(base) <= coldstart.BUDGETS[("sd15", 512, 512)], len(base)
    for height, width, batch in ((768, 768, 1), (512, 512, 2), (512, 512, 4)):
        added = _keys("sd15", height, width, batch) - base
        assert len(added) <= 2, (height, width, batch, len(added))


def test_sdxl_budget() -> None:
    base = _keys("sdxl", 1024, 1024)
    assert len(base) <= coldstart.BUDGETS[("sdxl", 1024, 1024)], len(base)
    assert not _keys("sdxl", 1024, 1024, 2) - base  # a batch size change compiles nothing new


def test_coldstart_cli_fails_above_budget(capsys: pytest.CaptureFixture[str]) -> None:
    assert coldstart.main(["--model", "sd15", "--arch", "90", "--max-compiles", "24"]) == 0
    assert coldstart.main(["--model", "sd15", "--arch", "90", "--max-compiles", "3"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_recorder_records_instead_of_running_and_specialises_like_the_jit() -> None:
    # Meta tensors: nothing can run, so every launch must be recorded (and the output is just allocated).
    x = torch.empty(2, 640, 16, 16, dtype=torch.float16, device="meta")
    weight = torch.empty(640, dtype=torch.float16, device="meta")
    h = torch.empty(2, 77, 2 * 1280, dtype=torch.float16, device="meta")
    with LaunchRecorder(arch=90) as recorder:
        out = ops.group_norm_silu(x, 32, weight, weight)
        ops.group_norm_silu(x, 32, weight, weight)  # same class: same compile
        ops.gelu_gate(h)
        ops.gelu_gate(h[:, 1:])  # 76 rows: still the same compile (rows are not specialised on)
    assert out.shape == x.shape and out.device.type == "meta"
    assert len(recorder.launches) == 4
    assert len(recorder.compiles()) == 2
    gn, gate = recorder.compiles()
    assert gn.kernel.endswith("group_norm_fused_kernel")
    assert gn.signature["x_ptr"] == "*fp16" and "x_ptr" in gn.divisible_by_16
    assert "stride_xs" in gn.equal_to_1  # NCHW: unit spatial stride is a compile-time 1
    assert "CPG" in gn.signature and "CPG" not in gn.constexprs  # channels per group: a runtime int
    assert gate.grid[0] * gate.constexprs["BLOCK_M"] >= 2 * 77
    # Offsets that break 16-byte alignment change the specialisation, exactly as on a GPU.
    odd = torch.empty(2 * 77 * 2 * 1280 + 1, dtype=torch.float16, device="meta")[1:].view(2, 77, 2 * 1280)
    with LaunchRecorder(arch=90) as again:
        ops.gelu_gate(odd)
    assert "h_ptr" not in again.launches[0].divisible_by_16


def test_recorder_nests_no_further_and_restores_arch() -> None:
    from sdkernels.kernels import arch

    with LaunchRecorder(arch=86):
        assert arch.recorded_arch() == 86
        with pytest.raises(RuntimeError), LaunchRecorder(arch=90):
            pass
    assert arch.recorded_arch() is None


def test_one_place_knows_the_architectures() -> None:
    # attention's table rows and GEGLU's sm_90-only configs read sdkernels.kernels.arch; the AOT tools' limits agree.
    from sdkernels.kernels import arch, attention_configs
    from sdkernels.tools.occupancy import LIMITS

    assert {a: LIMITS[a].shared_per_block for a in LIMITS} == arch.SHARED_PER_BLOCK
    assert [arch.kind(a) for a in (80, 86, 89, 90, 120)] == ["sm80", "small", "small", "sm90", "small"]
    with LaunchRecorder(arch=86):
        assert attention_configs.arch_kind(torch.device("cuda")) == "small"


def test_sd35_medium_budget() -> None:
    """SD3.5 medium 1024² (joint attention, AdaLN, feed-forward GEMM, 16-channel VAE) within the SDXL-sized budget;
    a batch size change compiles nothing new."""
    base = _keys("sd35m", 1024, 1024)
    assert len(base) <= coldstart.BUDGETS[("sd35m", 1024, 1024)], len(base)
    assert not _keys("sd35m", 1024, 1024, 2) - base
