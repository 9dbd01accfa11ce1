"""The benchmarks' CPU-testable logic (bench/): cases cover every SD shape, the case -> rows -> CSV -> plot pipeline
with made-up timings, the no-CUDA path of every script, and the end-to-end workloads on tiny models."""

from __future__ import annotations

import pytest
import torch

from sdkernels.tools import sd_shapes

# the group_norm_silu bench case runs on the fixed tiles a GPU launches, as in the traffic tests
pytestmark = pytest.mark.usefixtures("group_norm_gpu_tiles")


def test_bench_cases_cover_every_sd_shape() -> None:
    from bench import bench_attention, bench_geglu, bench_group_norm, test_bench

    gn = bench_group_norm.build_cases(list(sd_shapes.MODELS), "fp16", sm_count=132)
    assert len(gn) == 2 * len(sd_shapes.group_norm_shapes()) and len({(c.label, c.layout) for c in gn}) == len(gn)
    geglu = bench_geglu.build_cases(list(sd_shapes.MODELS), "fp16")
    attention = bench_attention.build_cases(list(sd_shapes.MODELS), "fp16")
    assert len(geglu) == len(sd_shapes.geglu_shapes()) and len(attention) == len(sd_shapes.attention_shapes())
    assert all(c.floor_bytes > 0 for c in gn + geglu + attention)
    assert all(c.flops > 0 for c in geglu + attention) and not any(c.flops for c in gn)
    assert {"sdkernels", "eager"} <= set(gn[0].providers) and {"sdkernels", "sdpa"} <= set(attention[0].providers)
    assert len(test_bench.PROVIDERS) == 18  # the pytest-benchmark shapes exist in the tables


def test_bench_pipeline_with_fake_timings(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """Cases -> providers (the real kernels, interpreted) -> rows -> CSV -> plots, with made-up times."""
    import argparse

    from bench import bench_attention, bench_geglu, bench_group_norm, common, peaks, plot, results_csv

    calls = iter(range(1, 1000))

    def fake_timer(fn) -> tuple[float, float, float]:
        ms = float(next(calls))
        return ms, 0.9 * ms, 1.1 * ms

    cases = [
        bench_group_norm.make_case(
            sd_shapes.GroupNormShape("tiny", "unet", 1, 64, (4, 4), True, True, 1e-5, 3), "fp16", "channels_last", 132
        ),
        bench_geglu.make_case(sd_shapes.GegluShape("tiny", 2, 8, 32, 128, 2), "fp16"),
        bench_attention.make_case(
            sd_shapes.AttentionShape("tiny", "unet", "b", "self", 1, 2, 40, 16, 16, 1), "fp16", "sm80"
        ),
    ]
    args = argparse.Namespace(dtype="fp16", csv=tmp_path / "kernels.csv", no_plot=False)
    measured_peaks = peaks.Peaks(copy_gbps=1000.0, matmul_tflops=100.0)
    assert (
        common.run_benchmark(cases, args, ["x"], timer=fake_timer, device=torch.device("cpu"), peaks=measured_peaks)
        == 0
    )
    assert "sum of p50 x calls" in capsys.readouterr().out
    rows = results_csv.read_rows(args.csv)
    assert len(rows) == sum(len(c.providers) for c in cases)
    by = {(r["kernel"], r["provider"]): r for r in rows}
    ours, eager = by[("group_norm_silu", "sdkernels")], by[("group_norm_silu", "eager")]
    assert float(eager["sdkernels_speedup"]) == float(eager["p50_ms"]) / float(ours["p50_ms"]) > 1
    assert float(ours["gbps"]) == pytest.approx(cases[0].floor_bytes / float(ours["p50_ms"]) / 1e6)
    assert float(ours["peak_fraction"]) == pytest.approx(float(ours["gbps"]) / 1000.0)
    geglu = by[("geglu", "sdkernels")]
    assert geglu["metric"] == "TFLOP/s" and float(geglu["tflops"]) == pytest.approx(
        2 * 16 * 32 * 256 / float(geglu["p50_ms"]) / 1e9
    )
    for r in rows:  # every provider that ran matched the fp32 reference (fp16 rounding); refusals are noted
        assert (r["p50_ms"] == "") == r["note"].startswith("failed"), r
        assert r["p50_ms"] == "" or float(r["max_abs_err_fp32"]) < 2e-2, r
    assert by[("attention", "sdpa-cudnn")]["note"].startswith("failed")  # no cuDNN attention on CPU
    assert all((tmp_path / f"{k}.png").is_file() for k in ("group_norm_silu", "geglu", "attention"))
    results_csv.save_rows(rows[:2], args.csv)  # same keys: replaced, not appended
    assert len(results_csv.read_rows(args.csv)) == len(rows)
    assert plot.main(["--csv", str(args.csv), "--out", str(tmp_path / "replot")]) == 0
    assert (tmp_path / "replot" / "attention.png").is_file()


def test_bench_scripts_without_cuda_say_so_and_run_the_compile_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sdkernels.tools.compile_report
    from bench import bench_attention, bench_e2e, bench_geglu, bench_group_norm
    from bench.common import NO_CUDA_MESSAGE

    seen: list[list[str]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sdkernels.tools.compile_report, "main", lambda argv: seen.append(argv) or 1)
    for script in (bench_group_norm, bench_geglu, bench_attention, bench_e2e):
        assert script.main([]) == 0
        assert NO_CUDA_MESSAGE in capsys.readouterr().out
    assert seen == [
        ["--kernel", "group_norm_silu"],
        ["--kernel", "geglu", "--kernel", "gelu_gate"],
        ["--kernel", "attention"],
        [],
    ]


def test_e2e_measures_default_and_patched_on_tiny_models(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The e2e machinery on CPU: tiny SDXL-topology UNet (added conditioning) and VAE decoder, default vs patched.
    The ops take their PyTorch path here (kernel correctness is tested elsewhere), so outputs agree to fp32."""
    import sdkernels._dispatch
    from bench import bench_e2e, results_csv
    from sdkernels.testing.tiny import components

    monkeypatch.setattr(sdkernels._dispatch, "INTERPRET", False)
    vae_config = {
        "block_out_channels": [32, 32, 64, 64],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "layers_per_block": 1,
        "norm_num_groups": 32,
    }
    unet = bench_e2e.unet_workload("tiny-unet", components.tiny_sdxl_unet_config(), 64, components.TEXT_HIDDEN)
    vae = bench_e2e.vae_decode_workload("tiny-vae", vae_config, 64)
    env = results_csv.environment(torch.device("cpu"))
    rows = []
    for workload in (unet, vae):
        rows += bench_e2e.run_workload(workload, ("default", "patched"), torch.device("cpu"), torch.float32, 1, 2, env)
    assert [(r["workload"], r["variant"]) for r in rows] == [
        ("tiny-unet", "default"),
        ("tiny-unet", "patched"),
        ("tiny-vae", "default"),
        ("tiny-vae", "patched"),
    ]
    for default, patched in (rows[0:2], rows[2:4]):
        assert default["patched_sites"] == 0 < patched["patched_sites"] and patched["fallbacks"] == 0
        assert default["max_abs_diff_vs_default"] == 0 and default["finite"] and patched["finite"]
        assert patched["max_abs_diff_vs_default"] <= 1e-4 * max(1.0, patched["max_abs_default"])
        assert patched["it_per_s"] == pytest.approx(1e3 / patched["median_ms"])
    results_csv.save_rows(rows, tmp_path / "e2e.csv", bench_e2e.E2E_COLUMNS, bench_e2e.E2E_KEY)
    assert len(results_csv.read_rows(tmp_path / "e2e.csv")) == 4
