"""`sdkernels.warmup(pipe, height=..., width=..., batch_size=...)`: compile every kernel a generation needs before
it runs, in parallel worker processes, into Triton's on-disk cache, so the first real call compiles nothing.

The compile list comes from replaying the generation on the meta device with launches recorded
(sdkernels.replay); each entry carries the (signature, constexprs, attrs, options) Triton's JIT would hand to
`triton.compile` for that launch on this GPU, so `triton.compile` ahead of time writes the very cache entry
(same key: source, target, options, environment) the JIT looks up on the first call.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import importlib
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from sdkernels.kernels import arch as arch_info
from sdkernels.kernels._launch import Launch


@dataclass
class WarmupReport:
    compiles: int  # distinct kernels the generation needs
    seconds: float  # wall time of the whole warmup (replay + compiles)
    arch: int
    kernels: list[str]

    def __str__(self) -> str:
        return f"sdkernels.warmup: {self.compiles} kernels compiled for sm_{self.arch} in {self.seconds:.1f} s"


# ------------------------------------------------------------------------------------------- compile one entry
def _jit_function(module: str, qualname: str) -> Any:
    from sdkernels.kernels._tuning import jit_fn

    return jit_fn(getattr(importlib.import_module(module), qualname))


def compile_source(module: str, qualname: str, compile_args: tuple[dict, dict, dict, dict]) -> tuple[Any, Any]:
    """(ASTSource, options dict) of one recorded compile, rebuilt in this process."""
    from triton.compiler import ASTSource

    signature, constexprs, attrs, options = compile_args
    return ASTSource(_jit_function(module, qualname), signature, constexprs, attrs), options


def cache_hash(src: Any, options: dict, arch: int) -> str:
    """The directory name under Triton's cache dir that `triton.compile(src, target, options)` reads and writes."""
    from triton._C.libtriton import get_cache_invalidating_env_vars
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.cache import get_cache_key

    backend = make_backend(GPUTarget("cuda", arch, 32))
    parsed = backend.parse_options(dict(options, **src.parse_options()))
    key = get_cache_key(src, backend, parsed, env_vars=get_cache_invalidating_env_vars())
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _compile_one(module: str, qualname: str, compile_args: tuple, arch: int) -> tuple[str, float]:
    import triton
    from triton.backends.compiler import GPUTarget

    start = time.perf_counter()
    src, options = compile_source(module, qualname, compile_args)
    triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    return cache_hash(src, options, arch), time.perf_counter() - start


@contextlib.contextmanager
def _real_jit_in_workers() -> Iterator[None]:
    # Workers start with this process's environment: they must build real jit functions, not interpreted ones.
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = previous


def compile_ahead(compiles: Sequence[Launch], arch: int, *, workers: int | None = None) -> float:
    """triton.compile every recorded compile (recorded with keep_compile_args) for `arch` in worker processes;
    returns the wall seconds."""
    jobs = []
    for launch in compiles:
        if launch.compile_args is None:
            raise ValueError("record with keep_compile_args=True and TRITON_INTERPRET off to compile ahead of time")
        module, qualname = launch.kernel.rsplit(".", 1)
        jobs.append((module, qualname, launch.compile_args, arch))
    start = time.perf_counter()
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    context = multiprocessing.get_context("spawn")
    with _real_jit_in_workers(), concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        for future in [pool.submit(_compile_one, *job) for job in jobs]:
            future.result()
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------------------- the API
def _model(pipe: Any, name: str) -> nn.Module | None:
    module = getattr(pipe, name, None)
    return module if isinstance(module, nn.Module) else None


def warmup(
    pipe: Any,
    *,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 1,
    guidance: bool = True,
    arch: int | None = None,
    workers: int | None = None,
    autotune: bool = False,
    verbose: bool = True,
) -> WarmupReport:
    """Compile, in parallel worker processes, every kernel one `height` x `width` generation of `batch_size` images
    needs (UNet at 2 x batch_size with classifier-free guidance, then the VAE decode), for the GPU the pipeline is
    on (or `arch`, e.g. 90, to fill a cache for another machine). Call it after `sdkernels.patch(pipe)`.
    `autotune=True` turns on opt-in autotuning (benchmarks on first use, timings persisted on disk)."""
    from sdkernels.kernels._tuning import set_autotune
    from sdkernels.replay import record_generation

    start = time.perf_counter()
    if autotune:
        set_autotune(True)
    unet, vae = _model(pipe, "unet"), _model(pipe, "vae")
    reference = unet if unet is not None else vae
    if reference is None:
        raise TypeError("sdkernels.warmup expects a diffusers pipeline with a unet and/or vae")
    parameter = next(reference.parameters())
    if arch is None:
        if parameter.device.type != "cuda":
            raise ValueError("sdkernels.warmup: the pipeline is not on a GPU; pass arch= (80, 86, 89, 90) to compile")
        arch = arch_info.arch_of(parameter.device)
    scale = getattr(pipe, "vae_scale_factor", 8)
    native = unet.config.sample_size * scale if unet is not None else 512
    recorder = record_generation(
        unet,
        vae,
        height=height or native,
        width=width or native,
        batch_size=batch_size,
        guidance=guidance,
        dtype=parameter.dtype,
        arch=arch,
        upcast_vae=hasattr(pipe, "upcast_vae"),  # SDXL pipelines decode a force_upcast VAE in fp32
        keep_compile_args=True,
    )
    compiles = recorder.compiles()
    if parameter.device.type == "cuda":
        with torch.cuda.device(parameter.device):
            compile_ahead(compiles, arch, workers=workers)
    else:
        compile_ahead(compiles, arch, workers=workers)
    report = WarmupReport(len(compiles), time.perf_counter() - start, arch, [c.kernel for c in compiles])
    if verbose:
        print(report)
    return report
