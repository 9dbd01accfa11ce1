"""The traffic model (sdkernels/tools/traffic_model.py) against the bytes the kernels really load and store, counted
under the Triton interpreter tensor by tensor (tests/byte_counter.py), and the `traffic` table itself."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch

from sdkernels import ops, reference
from sdkernels.kernels import group_norm as gn_kernel
from sdkernels.tools import sd_shapes, traffic, traffic_model
from tests.byte_counter import count_bytes

# NCHW GroupNorm on the fixed tiles a GPU launches (the bytes modelled are a GPU's)
pytestmark = pytest.mark.usefixtures("group_norm_gpu_tiles")


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
