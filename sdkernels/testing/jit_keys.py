"""Prove, without a GPU, that `sdkernels.warmup` fills exactly the Triton cache entries the JIT looks up.

Run in a process with TRITON_INTERPRET off (tests/test_warmup.py starts one). The same SD-shaped calls go through
(1) the launch recorder, as warmup does: each distinct compile's cache directory name from `cache_hash`, and
(2) Triton's real `JITFunction.run` on a fake sm_90 driver, whose compile step is replaced by one that records the
cache directory `triton.compile` would read for the source, target and options the JIT built.
Prints one JSON line: {"warmup": [...], "jit": [...]}.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.runtime.driver import driver

from sdkernels.kernels import arch
from sdkernels.kernels._launch import LaunchRecorder
from sdkernels.kernels.gelu_gate import gelu_gate
from sdkernels.kernels.group_norm import group_norm_silu
from sdkernels.warmup import cache_hash, compile_source

ARCH = 90


class _FakeDriver:
    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> GPUTarget:
        return GPUTarget("cuda", ARCH, 32)


class _NoLaunch:
    function = None
    packed_metadata = None

    def launch_metadata(self, *args: Any) -> None:
        return None

    def run(self, *args: Any) -> None:
        return None


def _calls() -> None:
    h = torch.empty(2, 77, 2 * 1280, dtype=torch.float16, device="meta")
    x = torch.empty(2, 320, 64, 64, dtype=torch.float16, device="meta")
    w = torch.empty(320, dtype=torch.float16, device="meta")
    add = torch.empty(2, 320, dtype=torch.float16, device="meta")
    gelu_gate(h)
    group_norm_silu(x, 32, w, w, 1e-5, True, add)
    group_norm_silu(x[:, :, :8, :8].contiguous(), 32, w, w, 1e-5, False, None)


def main() -> None:
    with LaunchRecorder(ARCH, keep_compile_args=True) as recorder:
        _calls()
    warm = []
    for launch in recorder.compiles():
        module, qualname = launch.kernel.rsplit(".", 1)
        warm.append(cache_hash(*compile_source(module, qualname, launch.compile_args), ARCH))

    looked_up: list[str] = []

    def capture(src: Any, target: GPUTarget, options: dict) -> _NoLaunch:
        assert target == GPUTarget("cuda", ARCH, 32)
        looked_up.append(cache_hash(src, options, ARCH))
        return _NoLaunch()

    driver.set_active(_FakeDriver())
    previous = arch.set_emulated(ARCH)  # the launchers choose configs for sm_90, but launch for real (no recorder)
    try:
        from sdkernels.kernels import gelu_gate as gg
        from sdkernels.kernels import group_norm_kernels as gnk
        from sdkernels.kernels import group_norm_split_kernels as gns
        from sdkernels.kernels._tuning import jit_fn

        gn_kernels = [getattr(m, n) for m in (gnk, gns) for n in dir(m) if n.startswith("group_norm_")]
        for kernel in (gg._gelu_gate_kernel, *gn_kernels):
            if isinstance(jit_fn(kernel), triton.runtime.JITFunction):
                fn = jit_fn(kernel)
                fn.device_caches[0]  # builds the binder, and sets fn.compile = triton.compile ...
                fn.compile = capture  # ... which is replaced here
        _calls()
    finally:
        arch.set_emulated(previous)
        driver._active = None  # back to lazily creating the real driver
    print(json.dumps({"warmup": warm, "jit": looked_up}))


if __name__ == "__main__":
    main()
