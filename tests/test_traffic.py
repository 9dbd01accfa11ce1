"""The traffic model (sdkernels/tools/traffic_model.py) against the bytes the kernels really load and store, counted
under the Triton interpreter tensor by tensor; the SD shape tables (sdkernels/tools/sd_shapes.py) against a
meta-device forward of the real diffusers models (sdkernels/tools/sd_census.py); and the `traffic` table itself."""

from __future__ import annotations

import collections
import contextlib
import json
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from sdkernels import ops, reference
from sdkernels.kernels import group_norm as gn_kernel
from sdkernels.tools import sd_census, sd_model_configs, sd_shapes, traffic, traffic_model


@pytest.fixture(autouse=True)
def _gpu_geometry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run NCHW on the fixed tiles a GPU launches (not the interpreter-only packed tiles the pipelines tests use)."""
    monkeypatch.setattr(gn_kernel, "PACK_NCHW_WHEN_INTERPRETED", False)


# ---------------------------------------------------------------------------------------------- byte counting
class ByteCounter:
    """Every masked load/store the interpreter executes: (is_store, addresses of the mask-true lanes, itemsize).
    `create_load`/`create_store` (unmasked) delegate to the masked builders, so each access is seen once."""

    def __init__(self) -> None:
        self.events: list[tuple[bool, np.ndarray, int]] = []

    def record(self, is_store: bool, ptrs, mask) -> None:
        addresses = np.asarray(ptrs.data).reshape(-1)
        lanes = np.broadcast_to(np.asarray(mask.data), np.shape(ptrs.data)).reshape(-1)
        self.events.append((is_store, addresses[lanes], ptrs.get_element_ty().primitive_bitwidth // 8))

    def by_tensor(self, tensors: dict[str, torch.Tensor]) -> dict[str, int]:
        """Bytes per named tensor (its whole storage's address range); everything else lands in "other"."""
        ranges = {}
        for name, t in tensors.items():
            storage = t.untyped_storage()
            ranges[name] = (storage.data_ptr(), storage.data_ptr() + storage.nbytes())
        assert len({r for r in ranges.values()}) == len(ranges), "tensors must not share storage"
        totals = collections.Counter({name: 0 for name in [*tensors, "other"]})
        for _, addresses, itemsize in self.events:
            claimed = np.zeros(addresses.shape, dtype=bool)
            for name, (lo, hi) in ranges.items():
                inside = (addresses >= lo) & (addresses < hi)
                totals[name] += int(inside.sum()) * itemsize
                claimed |= inside
            totals["other"] += int((~claimed).sum()) * itemsize
        return dict(totals)


@contextlib.contextmanager
def count_bytes() -> Iterator[ByteCounter]:
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    load, store = builder.create_masked_load, builder.create_masked_store
    counter = ByteCounter()

    def counted_load(self, ptrs, mask, other, cache_policy, is_volatile):
        counter.record(False, ptrs, mask)
        return load(self, ptrs, mask, other, cache_policy, is_volatile)

    def counted_store(self, ptrs, value, mask, cache_policy):
        counter.record(True, ptrs, mask)
        return store(self, ptrs, value, mask, cache_policy)

    builder.create_masked_load, builder.create_masked_store = counted_load, counted_store
    try:
        yield counter
    finally:
        builder.create_masked_load, builder.create_masked_store = load, store


# ------------------------------------------------------------------------------------------ GroupNorm + SiLU
def _group_norm_case(
    shape: tuple[int, ...],
    channels_last: bool,
    sm_count: int,
    expected_path: str,
    monkeypatch: pytest.MonkeyPatch,
    add: bool = True,
    affine: bool = True,
) -> None:
    monkeypatch.setattr(gn_kernel, "DEFAULT_SM_COUNT", sm_count)  # the SM count the launcher assumes off CUDA
    batch, channels = shape[:2]
    spatial = int(np.prod(shape[2:]))
    x = torch.randn(shape, dtype=torch.float16)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(channels, dtype=torch.float16) if affine else None
    bias = torch.randn(channels, dtype=torch.float16) if affine else None
    temb = torch.randn(batch, channels, dtype=torch.float16) if add else None
    with count_bytes() as counter:
        out = ops.group_norm_silu(x, 32, weight, bias, 1e-5, add=temb)
    named = {"x": x, "add": temb, "weight": weight, "bias": bias, "out": out}
    measured = counter.by_tensor({name: t for name, t in named.items() if t is not None})
    expected, path = traffic_model.group_norm_bytes(
        batch, channels, spatial, 32, 2, add=add, affine=affine, sm_count=sm_count, channels_last=channels_last
    )
    assert expected_path in path
    assert measured.pop("other") == expected.pop("partials")  # the split path's fp32 (mean, M2) scratch
    assert measured == {name: value for name, value in expected.items() if named[name] is not None}, path
    assert all(expected[name] == 0 for name, t in named.items() if t is None)
    torch.testing.assert_close(
        out.float(), reference.group_norm_silu(x, 32, weight, bias, 1e-5, True, temb).float(), atol=2e-2, rtol=1e-2
    )  # sanity: the counted run computed GroupNorm + SiLU


def test_group_norm_nchw_loop_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    # NCHW always loops over its fixed tile (one compile for every shape): a stats pass, then the apply pass.
    _group_norm_case((1, 320, 4, 4), False, gn_kernel.DEFAULT_SM_COUNT, "fused loop", monkeypatch)


def test_group_norm_one_tile_bytes_without_add_or_affine(monkeypatch: pytest.MonkeyPatch) -> None:
    _group_norm_case(
        (1, 320, 4, 4), True, gn_kernel.DEFAULT_SM_COUNT, "fused one-tile", monkeypatch, add=False, affine=False
    )


def test_group_norm_loop_bytes_channels_last(monkeypatch: pytest.MonkeyPatch) -> None:
    # C=320 (CPG 10 in 16 lanes), 24x24 = 576 positions in 512-wide tiles: the stats pass, then the apply pass.
    _group_norm_case((1, 320, 24, 24), True, 1, "fused loop", monkeypatch)


def test_group_norm_split_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    # 15x16 = 240 positions in chunks of 128 and 112: the last chunk is ragged.
    monkeypatch.setattr(gn_kernel, "FORCE_SPLIT", 2)
    _group_norm_case(
        (1, 320, 15, 16), False, gn_kernel.DEFAULT_SM_COUNT, "split: 32 groups x 2 chunks of 128", monkeypatch
    )


# ---------------------------------------------------------------------------------------------- GEGLU family
@pytest.mark.parametrize("rows, dim, inner", [(100, 320, 1280), (130, 72, 100)])
def test_geglu_bytes(rows: int, dim: int, inner: int) -> None:
    # (100, 320, 1280): SD1.5's first GEGLU with few tokens (rows wrap inside one 128-row tile).
    # (130, 72, 100): two row tiles, a K tail and wrapped columns.
    x = torch.randn(rows, dim, dtype=torch.float16)
    weight = torch.randn(2 * inner, dim, dtype=torch.float16) / dim**0.5
    bias = torch.randn(2 * inner, dtype=torch.float16)
    with count_bytes() as counter:
        out = ops.geglu(x, weight, bias)
    measured = counter.by_tensor({"x": x, "weight": weight, "bias": bias, "out": out})
    assert measured.pop("other") == 0
    assert measured == traffic_model.geglu_bytes(rows, dim, inner, 2, traffic_model.geglu_config("fp16"))


def test_gelu_gate_bytes() -> None:
    h = torch.randn(37, 2 * 100, dtype=torch.float16)
    with count_bytes() as counter:
        out = ops.gelu_gate(h)
    measured = counter.by_tensor({"h": h, "out": out})
    shape = sd_shapes.GegluShape("test", 1, 37, 25, 100, 1)
    assert measured.pop("other") == 0
    assert measured == traffic_model.gelu_gate_traffic(shape, "fp16").ours


# ------------------------------------------------------------------------------------------------- attention
@pytest.mark.parametrize("heads, lq, lk, head_dim", [(2, 200, 77, 40), (1, 128, 128, 80), (1, 64, 64, 512)])
def test_attention_bytes(heads: int, lq: int, lk: int, head_dim: int) -> None:
    # D=40 cross-attention (32+16 pieces, ragged keys, 2 query tiles), D=80 self (64+16), D=512 (dv-split kernel).
    q = torch.randn(1, lq, heads * head_dim, dtype=torch.float16).view(1, lq, heads, head_dim).transpose(1, 2)
    k = torch.randn(1, lk, heads * head_dim, dtype=torch.float16).view(1, lk, heads, head_dim).transpose(1, 2)
    v = torch.randn(1, lk, heads * head_dim, dtype=torch.float16).view(1, lk, heads, head_dim).transpose(1, 2)
    with count_bytes() as counter:
        out = ops.attention(q, k, v)
    measured = counter.by_tensor({"q": q, "k": k, "v": v, "out": out})
    config = traffic_model.attention_config(head_dim, "fp16", "sm80")  # the interpreter runs the sm80 row
    assert measured.pop("other") == 0
    assert measured == traffic_model.attention_bytes(heads, lq, lk, head_dim, 2, config)


# -------------------------------------------------------------------------------------- SD shapes and the table
@pytest.mark.parametrize("model", sd_shapes.MODELS)
def test_sd_shapes_match_a_meta_forward_of_diffusers(model: str) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    side = sd_shapes.latent_side(model)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**sd_model_configs.UNET_CONFIGS[model])
        sample = torch.empty(2, 4, side, side)
        context = torch.empty(2, sd_shapes.TEXT_LEN, sd_model_configs.UNET_CONFIGS[model]["cross_attention_dim"])
        extra = {}
        if model == "sdxl":
            extra = {
                "added_cond_kwargs": {
                    "text_embeds": torch.empty(2, sd_model_configs.SDXL_TEXT_EMBEDS_DIM),
                    "time_ids": torch.empty(2, sd_model_configs.SDXL_TIME_IDS),
                }
            }
        gn, geglu, attention = sd_census.census(model, unet, lambda: unet(sample, 10, context, **extra), "unet")
        if model == "sd15":  # the VAE is the same network in all three; its table is per level, checked at 512²
            vae = AutoencoderKL(**sd_model_configs.VAE_CONFIGS[model])
            image = torch.empty(1, 3, sd_shapes.IMAGE_SIZE[model], sd_shapes.IMAGE_SIZE[model])
            vae_gn, _, vae_attention = sd_census.census(
                model, vae, lambda: vae.decode(vae.encode(image).latent_dist.mode())
            )
            gn, attention = gn + vae_gn, attention + vae_attention
    parts = ("vae.encoder", "vae.decoder") if model == "sd15" else ()
    assert sorted(gn, key=repr) == sorted(sd_shapes.group_norm_shapes([model], vae_parts=parts), key=repr)
    assert sorted(geglu, key=repr) == sorted(sd_shapes.geglu_shapes([model]), key=repr)
    assert sorted(attention, key=repr) == sorted(sd_shapes.attention_shapes([model], vae_parts=parts), key=repr)


def test_traffic_table_prints_every_kernel_and_the_census(capsys: pytest.CaptureFixture[str]) -> None:
    assert traffic.main(["--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    calls = collections.Counter()
    for row in table["rows"]:
        calls[(row["kernel"], row["model"], row["component"])] += row["calls"]
        assert row["ours_total"] == sum(row["ours"].values()) > 0 and row["floor"] > 0
        assert row["ours_total"] >= row["floor"] - 64, row["label"]  # nothing moves less than its inputs + outputs
    # GroupNorm calls per UNet step and VAE pass, GEGLU and attention modules (diffusers 0.42.1 census).
    assert calls[("group_norm_silu", "sd15", "unet")] == calls[("group_norm_silu", "sd21", "unet")] == 61
    assert calls[("group_norm_silu", "sdxl", "unet")] == 46
    assert calls[("group_norm_silu", "sdxl", "vae.encoder")] + calls[("group_norm_silu", "sdxl", "vae.decoder")] == 52
    assert calls[("geglu", "sd15", "unet")] == 16 and calls[("geglu", "sdxl", "unet")] == 70
    assert calls[("attention", "sd15", "unet")] == 32 and calls[("attention", "sdxl", "unet")] == 140
    fused = [r for r in table["rows"] if r["kernel"] == "group_norm_silu" and "+silu" in r["label"]]
    assert all(r["baselines"]["eager"] > r["ours_total"] for r in fused)  # fusion always saves SiLU's round trip
    assert traffic.main(["--models", "sd15", "--kernel", "attention", "--arch", "sm80"]) == 0
    text = capsys.readouterr().out
    assert "== attention" in text and "sd15-unet self B2 H8 Lq4096 Lk4096 D40" in text and "== geglu" not in text


# ------------------------------------------------------------------------------ benchmarks' CPU-testable logic
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
