"""Autotuning that also works under the Triton interpreter, and the description of a shipped kernel config
that the ahead-of-time compile report (sdkernels/tools/compile_report.py) compiles for sm_80 and sm_90."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import triton

from sdkernels._dispatch import INTERPRET
from sdkernels._versions import autotuner_skips_single_config

ConfigFilter = Callable[[list[triton.Config], dict[str, Any]], list[triton.Config]]


def autotune(configs: Sequence[triton.Config], key: list[str], prune: ConfigFilter | None = None, **kwargs: Any):
    """`triton.autotune` whose candidates are first filtered by `prune(configs, named_args)` (e.g. per head dim
    and architecture). Under the interpreter, where benchmarking needs a GPU, only the first survivor is kept."""

    def early_prune(configs_: list[triton.Config], named_args: dict[str, Any], **kw: Any) -> list[triton.Config]:
        kept = prune(list(configs_), {**named_args, **kw}) if prune is not None else list(configs_)
        if not kept:
            raise ValueError("sdkernels: no autotune config fits these arguments")
        return kept[:1] if INTERPRET else kept

    if INTERPRET and not autotuner_skips_single_config():
        # One candidate survives, so there is nothing to compare; triton < 3.7 would still time it, which needs a
        # GPU driver. Report a zero timing without running it (the launch that follows runs the kernel once).
        kwargs.setdefault("do_bench", _no_benchmark)
    return triton.autotune(
        configs=list(configs), key=key, prune_configs_by={"early_config_prune": early_prune}, **kwargs
    )


def _no_benchmark(kernel_call: Callable[[], Any], quantiles: Sequence[float]) -> list[float]:
    return [0.0] * len(quantiles)


@dataclass(frozen=True)
class AotSpec:
    """One shipped (kernel, constexprs, launch config) to compile ahead of time for a GPU architecture.

    `signature` maps every non-constexpr argument to a Triton type ("*fp16", "i32", "fp32", ...); pointer and
    integer arguments listed in `divisible_by_16` get the divisibility hint the JIT would give them on a GPU;
    `equal_to_1` lists integer arguments the JIT would specialise as 1 (unit strides).
    `uses_dot` says the kernel is a matrix kernel that must use tensor cores (HMMA on sm_80, HGMMA on sm_90).
    """

    kernel: str
    variant: str
    fn: Any  # a triton.JITFunction (the bare jit function, not the autotuner)
    signature: dict[str, str]
    constexprs: dict[str, Any]
    num_warps: int
    num_stages: int
    uses_dot: bool
    divisible_by_16: tuple[str, ...] = ()
    equal_to_1: tuple[str, ...] = ()
    archs: tuple[int, ...] = (80, 90)
    notes: dict[str, Any] = field(default_factory=dict)


def jit_fn(kernel: Any) -> Any:
    """The bare JITFunction under autotune/heuristics wrappers."""
    from triton.runtime.interpreter import InterpretedFunction

    # Under TRITON_INTERPRET=1 `triton.jit` makes an InterpretedFunction, whose `.fn` is the plain Python function.
    while not isinstance(kernel, (triton.runtime.JITFunction, InterpretedFunction)):
        kernel = kernel.fn
    return kernel
