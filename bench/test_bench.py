"""pytest-benchmark entry points for a few representative SD shapes per kernel (one per kernel path), next to
their eager baselines. GPU only; not part of the default test run (testpaths = tests):

    python -m pytest bench/test_bench.py --benchmark-group-by=param:case
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from bench import bench_attention, bench_geglu, bench_group_norm
from bench.common import NO_CUDA_MESSAGE, Case
from sdkernels.tools import sd_shapes

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA_MESSAGE),
    pytest.mark.skipif(
        importlib.util.find_spec("pytest_benchmark") is None,
        reason="pytest-benchmark is not installed (pip install -e '.[test]')",
    ),
]


def _representative() -> dict[str, Case]:
    gn = {s.label: s for s in sd_shapes.group_norm_shapes(["sd15", "sdxl"])}
    geglu = {s.label: s for s in sd_shapes.geglu_shapes(["sd15", "sdxl"])}
    attention = {s.label: s for s in sd_shapes.attention_shapes(["sd15", "sdxl"])}
    cases = [
        bench_group_norm.make_case(gn["sd15-unet gn+silu+temb 2x320x64x64"], "fp16", "nchw", 132),
        bench_group_norm.make_case(gn["sd15-unet gn+silu 2x1280x8x8"], "fp16", "channels_last", 132),
        bench_group_norm.make_case(gn["sdxl-vae.decoder gn+silu 1x128x1024x1024"], "fp16", "nchw", 132),
        bench_geglu.make_case(geglu["sd15-unet geglu M8192 K320 N1280"], "fp16"),
        bench_geglu.make_case(geglu["sdxl-unet geglu M2048 K1280 N5120"], "fp16"),
        bench_attention.make_case(attention["sd15-unet self B2 H8 Lq4096 Lk4096 D40"], "fp16", "sm90"),
        bench_attention.make_case(attention["sd15-unet cross B2 H8 Lq4096 Lk77 D40"], "fp16", "sm90"),
        bench_attention.make_case(attention["sdxl-unet self B2 H10 Lq4096 Lk4096 D64"], "fp16", "sm90"),
        bench_attention.make_case(attention["sd15-vae.decoder self B1 H1 Lq4096 Lk4096 D512"], "fp16", "sm90"),
    ]
    return {f"{c.kernel}: {c.label} [{c.layout}]": c for c in cases}


CASES = _representative()
PROVIDERS = [
    (name, provider)
    for name, case in CASES.items()
    for provider in ("sdkernels", "eager", "sdpa")
    if provider in case.providers
]


@pytest.mark.parametrize("case, provider", PROVIDERS, ids=[f"{n} {p}" for n, p in PROVIDERS])
def test_kernel_speed(benchmark, case: str, provider: str) -> None:
    spec = CASES[case]
    inputs = spec.make_inputs(torch.device("cuda"))
    fn = spec.providers[provider]
    fn(inputs)  # compile / autotune outside the measurement
    torch.cuda.synchronize()

    def run() -> None:
        fn(inputs)
        torch.cuda.synchronize()

    benchmark.extra_info.update(
        kernel=spec.kernel, shape=spec.label, layout=spec.layout, provider=provider, gpu=torch.cuda.get_device_name()
    )
    benchmark.pedantic(run, rounds=50, warmup_rounds=5)
