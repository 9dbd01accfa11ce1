"""The ahead-of-time resource report (CI's GPU resource gate, run with no GPU): it passes over the shipped kernels,
its JSON is well formed, and it really fails a spilling, a shared-memory-overflowing and a tensor-core-less
configuration. The kernels below are small stand-ins of our own; the compile workers load this file by path and
call the `*_specs` functions (in a process without TRITON_INTERPRET, where the kernels are real JITFunctions)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import triton
import triton.language as tl

from sdkernels.kernels._tuning import AotSpec
from sdkernels.tools.compile_report import DEFAULT_PROVIDERS, main
from sdkernels.tools.occupancy import resident_ctas


@triton.jit
def _matmul_kernel(
    A,
    B,
    C,
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_cm,
    stride_cn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # C = A @ B: each program owns one BLOCK_M x BLOCK_N tile of C,
    # walks K in BLOCK_K steps accumulating tl.dot in fp32 (tensor cores),
    # and stores the tile in C's dtype.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        a = tl.load(
            A + rows[:, None] * stride_am + (k + ks)[None, :] * stride_ak,
            mask=(rows[:, None] < M) & ((k + ks)[None, :] < K),
            other=0.0,
        )
        b = tl.load(
            B + (k + ks)[:, None] * stride_bk + cols[None, :] * stride_bn,
            mask=((k + ks)[:, None] < K) & (cols[None, :] < N),
            other=0.0,
        )
        acc += tl.dot(a, b)
    tl.store(
        C + rows[:, None] * stride_cm + cols[None, :] * stride_cn,
        acc.to(C.dtype.element_ty),
        mask=(rows[:, None] < M) & (cols[None, :] < N),
    )


@triton.jit
def _silu_row_sum_kernel(X, Y, n_rows, n_cols, stride_row, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    # Y[r] = sum_c silu(X[r, c]): each program owns BLOCK_ROWS rows and keeps a whole
    # BLOCK_ROWS x BLOCK_COLS fp32 accumulator tile live across the column loop
    # (so a big tile on few warps must spill), reducing it to one value per row at the end.
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    acc = tl.zeros((BLOCK_ROWS, BLOCK_COLS), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_COLS):
        cols = start + tl.arange(0, BLOCK_COLS)
        x = tl.load(
            X + rows[:, None] * stride_row + cols[None, :],
            mask=(rows[:, None] < n_rows) & (cols[None, :] < n_cols),
            other=0.0,
        ).to(tl.float32)
        acc += x * tl.sigmoid(x)
    tl.store(Y + rows, tl.sum(acc, axis=1).to(Y.dtype.element_ty), mask=rows < n_rows)


# As the JIT would see SD's shapes: aligned pointers, and N, K and row strides multiples of 16 (so the K loop's
# loads vectorise and can be pipelined with async copies); M, the token count, is left unspecialised.
_MATMUL_ALIGNED = ("A", "B", "C", "N", "K", "stride_am", "stride_bk", "stride_cm")
_MATMUL_UNIT = ("stride_ak", "stride_bn", "stride_cn")


def _matmul(
    variant: str, dtype: str, tiles: tuple[int, int, int], num_warps: int, num_stages: int, archs: tuple[int, ...]
) -> AotSpec:
    signature = {"A": f"*{dtype}", "B": f"*{dtype}", "C": f"*{dtype}"}
    signature |= {name: "i32" for name in ("M", "N", "K", "stride_am", "stride_bk", "stride_cm")}
    signature |= {name: "i32" for name in _MATMUL_UNIT}
    return AotSpec(
        kernel="test_matmul",
        variant=variant,
        fn=_matmul_kernel,
        signature=signature,
        constexprs=dict(zip(("BLOCK_M", "BLOCK_N", "BLOCK_K"), tiles, strict=True)),
        num_warps=num_warps,
        num_stages=num_stages,
        uses_dot=True,
        divisible_by_16=_MATMUL_ALIGNED,
        equal_to_1=_MATMUL_UNIT,
        archs=archs,
    )


def _row_sum(variant: str, rows: int, cols: int, num_warps: int, archs: tuple[int, ...]) -> AotSpec:
    return AotSpec(
        kernel="test_silu_row_sum",
        variant=variant,
        fn=_silu_row_sum_kernel,
        signature={"X": "*fp16", "Y": "*fp16", "n_rows": "i32", "n_cols": "i32", "stride_row": "i32"},
        constexprs={"BLOCK_ROWS": rows, "BLOCK_COLS": cols},
        num_warps=num_warps,
        num_stages=1,
        uses_dot=False,
        divisible_by_16=("X", "Y", "stride_row"),
        archs=archs,
    )


def good_specs() -> list[AotSpec]:
    return [
        _matmul("64x64x32", "fp16", (64, 64, 32), 4, 3, (80, 90)),
        _matmul("64x64x32", "bf16", (64, 64, 32), 4, 3, (80, 90)),
        _row_sum("16x64", 16, 64, 4, (80, 90)),
    ]


def spilling_specs() -> list[AotSpec]:
    # 128 x 64 fp32 accumulators on one warp: 256 live values per thread, over the 255-register cap.
    return [_row_sum("128x64-1warp", 128, 64, 1, (80,))]


def smem_overflow_specs() -> list[AotSpec]:
    # sm_80 keeps num_stages - 1 tiles of A and B in flight: 6 x 32 KiB = 192 KiB > 163 KiB per block.
    return [_matmul("128x128x64-7stages", "fp16", (128, 128, 64), 8, 7, (80,))]


def no_hgmma_specs() -> list[AotSpec]:
    # A warpgroup MMA needs 64 rows; a 16-row tile makes sm_90 fall back to HMMA.
    return [_matmul("16x64x32", "fp16", (16, 64, 32), 4, 3, (90,))]


def misspelt_hint_specs() -> list[AotSpec]:
    spec = _row_sum("16x64", 16, 64, 4, (80,))
    return [AotSpec(**{**spec.__dict__, "divisible_by_16": ("X", "Y", "stride_rows")})]


def broken_specs() -> list[AotSpec]:
    raise RuntimeError("this provider is broken on purpose")


def _report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code = main(["--json", *args])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def _provider(name: str) -> str:
    return f"{__file__}:{name}"


def test_shipped_kernels_pass_the_resource_gate(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, err = _report(capsys)
    assert code == 0, "\n".join(line for line in err.splitlines() if line.startswith(("FAIL", "ERROR")))
    skipped = [note for note in report["notes"] if note.endswith("skipped")]
    assert report["rows"] or len(skipped) == len(DEFAULT_PROVIDERS), "a kernel module shipped no configuration"


def test_json_rows_are_complete_and_measured(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, err = _report(capsys, "--specs", _provider("good_specs"))
    assert code == 0, err
    assert report["ok"] is True and report["errors"] == []
    rows = {(row["kernel"], row["dtype"], row["arch"]): row for row in report["rows"]}
    assert set(rows) == {("test_matmul", dtype, arch) for dtype in ("fp16", "bf16") for arch in (80, 90)} | {
        ("test_silu_row_sum", "fp16", 80),
        ("test_silu_row_sum", "fp16", 90),
    }
    columns = {
        "kernel",
        "variant",
        "arch",
        "dtype",
        "num_warps",
        "num_stages",
        "registers",
        "spill_stores",
        "spill_loads",
        "shared_bytes",
        "shared_limit",
        "ctas_per_sm",
        "occupancy_limit",
        "tensor_core",
        "uses_dot",
        "specialised",
        "error",
        "problems",
        "loop_mix",
        "kernel_mix",
        "inner_mix",
        "epilogue_mix",
        "maxnreg",
    }
    for row in report["rows"]:
        assert columns <= set(row), columns - set(row)
        assert 0 < row["registers"] <= 255 and row["spill_stores"] == row["spill_loads"] == 0
        assert 0 < row["ctas_per_sm"] <= 32 and row["problems"] == [] and row["error"] == ""
        assert row["shared_limit"] == {80: 166_912, 90: 232_448}[row["arch"]]
        expected = resident_ctas(row["arch"], row["registers"], row["shared_bytes"], row["num_warps"])
        assert (row["ctas_per_sm"], row["occupancy_limit"]) == expected
    for dtype in ("fp16", "bf16"):
        assert rows["test_matmul", dtype, 90]["tensor_core"] == "HGMMA"
        assert rows["test_matmul", dtype, 80]["tensor_core"] == "HMMA"
        assert rows["test_matmul", dtype, 80]["shared_bytes"] > 0  # the cp.async pipeline buffers
    assert rows["test_silu_row_sum", "fp16", 90]["tensor_core"] == "none"
    # The SASS instruction mix: the K loop holds the MMAs (with their shape) and is a part of the kernel.
    for arch, mma in ((90, "HGMMA.64x"), (80, "HMMA.16816")):
        row = rows["test_matmul", "fp16", arch]
        loop, kernel = row["loop_mix"], row["kernel_mix"]
        assert loop["mma"] > 0 and any(name.startswith(f"mma:{mma}") for name in loop), loop
        assert loop["mma"] == kernel["mma"] and 0 < loop["total"] < kernel["total"]
        assert loop.get("ldgsts", 0) + loop.get("ldg", 0) > 0 and loop.get("mufu", 0) == 0
    # The JIT's binder gave the spec's pointers/strides the 16-divisibility hint and made unit strides constants.
    specialised = rows["test_matmul", "fp16", 90]["specialised"]
    assert specialised == {"divisible_by_16": list(_MATMUL_ALIGNED), "equal_to_1": list(_MATMUL_UNIT)}


@pytest.mark.parametrize(
    ("provider", "arch", "reason"),
    [
        ("spilling_specs", 80, "spills registers"),
        ("smem_overflow_specs", 80, "shared memory"),
        ("no_hgmma_specs", 90, "without HGMMA"),
    ],
)
def test_unshippable_configuration_fails_the_report(
    capsys: pytest.CaptureFixture[str], provider: str, arch: int, reason: str
) -> None:
    code, report, err = _report(capsys, "--specs", _provider(provider))
    assert code != 0
    [row] = report["rows"]
    assert row["arch"] == arch and row["error"] == ""
    assert any(reason in problem for problem in row["problems"]), row["problems"]
    assert f"FAIL {row['kernel']}/{row['variant']} sm_{arch}" in err and reason in err


def test_filters_by_kernel_and_arch(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, _ = _report(
        capsys, "--specs", _provider("good_specs"), "--kernel", "test_silu_row_sum", "--arch", "90"
    )
    assert code == 0
    assert [(row["kernel"], row["arch"]) for row in report["rows"]] == [("test_silu_row_sum", 90)]
    code, report, err = _report(capsys, "--specs", _provider("good_specs"), "--kernel", "no_such_kernel")
    assert code != 0 and report["rows"] == [] and "no_such_kernel" in err


def test_missing_module_is_a_note_but_broken_specs_fail(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, _ = _report(capsys, "--specs", "sdkernels.kernels.not_written_yet:aot_specs")
    assert code == 0 and report["rows"] == [] and "not_written_yet" in report["notes"][0]
    code, report, err = _report(
        capsys, "--specs", _provider("broken_specs"), "--specs", _provider("misspelt_hint_specs")
    )
    assert code != 0 and "broken on purpose" in report["errors"][0]
    [row] = report["rows"]
    assert "'stride_rows' is not a non-constexpr argument" in row["error"] and row["problems"]


@pytest.mark.parametrize(
    ("arch", "registers", "shared", "warps", "expected"),
    [
        (80, 16, 0, 8, (8, "threads")),  # 2048 threads / 256 (registers would allow 16)
        (80, 32, 0, 8, (8, "registers+threads")),  # 1024 regs per warp: 16 warps per sub-partition, 64 per SM
        (80, 64, 0, 8, (4, "registers")),  # 2048 regs per warp: 8 warps per sub-partition, 32 per SM
        (80, 184, 65_536, 8, (1, "registers")),  # 5888 regs per warp: 2 warps per sub-partition
        (90, 110, 99_328, 8, (2, "registers+shared memory")),  # 3584 regs per warp: 4 per sub-partition
        (80, 40, 80_000, 4, (2, "shared memory")),  # 80000 + 1 KiB reserved -> 81024 B allocated, 167936 // 81024
        (80, 255, 0, 16, (0, "registers")),  # 8192 regs per warp x 16 warps > 65536 per block: cannot launch
        (90, 16, 0, 1, (32, "CTA cap")),
        (90, 32, 232_449, 4, (0, "shared memory")),  # one byte over the per-block opt-in limit
    ],
)
def test_resident_ctas_follow_the_cuda_occupancy_rules(
    arch: int, registers: int, shared: int, warps: int, expected: tuple[int, str]
) -> None:
    assert resident_ctas(arch, registers, shared, warps) == expected
