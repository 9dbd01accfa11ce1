"""Compile-report spec provider for CI's floor stage (.ci/floor): the first shipped configuration of each kernel
(a matrix kernel's first fp16 one, so the tensor-core check applies), enough to show the oldest supported Triton
still compiles every kernel without building all ~800 configurations."""

from __future__ import annotations

from sdkernels.kernels._tuning import AotSpec
from sdkernels.tools.compile_report import DEFAULT_PROVIDERS
from sdkernels.tools.compile_workers import load_specs


def one_per_kernel() -> list[AotSpec]:
    chosen = []
    for provider in DEFAULT_PROVIDERS:
        specs = load_specs(provider)
        if isinstance(specs, str):
            continue
        half = [s for s in specs if "fp16" in s.signature.values() or "*fp16" in s.signature.values()]
        chosen.append((half or specs)[0])
    return chosen
