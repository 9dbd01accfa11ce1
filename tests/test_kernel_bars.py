"""Main-loop bars of issue 10, read from the compile report's measured builds (tests/aot_measurements.json, or a
fresh AOT compile when a kernel changed):
- every shipped attention build with a head dim ≤ 80 on sm_80 and sm_90 in fp16/bf16 (every bias kind, full and
  ragged key tiles, every config of its table entry) keeps ≥ 2 CTAs per SM with 0 spills, so one CTA's softmax
  overlaps another's MMAs;
- GEGLU's config the launcher runs (the first of its table, whatever K) keeps ≥ 2 CTAs per SM, and on sm_90 its
  epilogue (everything after the K loop: bias, exact-erf GELU, product, store) is ≤ 50% of the instructions a warp
  issues over the whole program (K loop body × K / BLOCK_K + the rest) at SD1.5's and SDXL's K (320, 640, 1280)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sdkernels.kernels.geglu import ALL_ARCH_CONFIGS, SD_GEGLU_K
from sdkernels.tools.compile_report import main

OCCUPANCY_ARCHS = (80, 90)


def _rows(capsys: pytest.CaptureFixture[str], kernel: str) -> list[dict[str, Any]]:
    arch_args = [arg for arch in OCCUPANCY_ARCHS for arg in ("--arch", str(arch))]
    code = main(["--json", "--kernel", kernel, *arch_args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)["rows"]


def _short(row: dict[str, Any]) -> str:
    return (
        f"{row['variant']} sm_{row['arch']}: {row['registers']} regs, spills {row['spill_stores']}/"
        f"{row['spill_loads']} B, {row['ctas_per_sm']} CTAs/SM ({row['occupancy_limit']})"
    )


def test_attention_head_dims_up_to_80_keep_two_ctas_per_sm_without_spills(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = [
        row
        for row in _rows(capsys, "attention")
        if row["dtype"] in ("fp16", "bf16") and int(row["variant"].split("-")[0][1:]) <= 80
    ]
    # 40, 64, 80 x fp16/bf16 x 3 bias kinds x full/ragged tiles, each with at least one config per arch
    assert len({(row["variant"].rsplit("-", 2)[0], row["arch"]) for row in rows}) == 3 * 2 * 3 * 2 * 2
    bad = [_short(row) for row in rows if row["ctas_per_sm"] < 2 or row["spill_stores"] or row["spill_loads"]]
    assert not bad, "\n".join(bad)


def test_geglu_launch_config_keeps_its_epilogue_under_half_of_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    first = ALL_ARCH_CONFIGS[0]
    tiles = first.kwargs
    name = f"m{tiles['BLOCK_M']}_n{tiles['BLOCK_N']}_k{tiles['BLOCK_K']}_s{first.num_stages}_w{first.num_warps}"
    rows = [row for row in _rows(capsys, "geglu") if row["variant"] in (f"fp16_{name}", f"bf16_{name}")]
    assert len(rows) == 2 * len(OCCUPANCY_ARCHS)
    for row in rows:
        assert row["ctas_per_sm"] >= 2 and row["spill_stores"] == row["spill_loads"] == 0, _short(row)
        if row["arch"] != 90:
            continue
        assert sorted(int(k) for k in row["whole_run"]) == sorted(SD_GEGLU_K)
        for k, run in row["whole_run"].items():
            loop, kernel = row["loop_mix"]["total"], row["kernel_mix"]["total"]
            assert run["trips"] == -(-int(k) // tiles["BLOCK_K"])
            assert run["total"] == loop * run["trips"] + kernel - loop
            assert run["epilogue"] == row["epilogue_mix"]["total"]
            assert run["epilogue_share"] <= 0.5, f"{_short(row)}: K={k} epilogue {run['epilogue']} of {run['total']}"
