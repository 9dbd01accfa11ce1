"""Autotuning that also works under the Triton interpreter, and the description of a shipped kernel config
that the ahead-of-time compile report (sdkernels/tools/compile_report.py) compiles for sm_80 and sm_90."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import triton

from sdkernels._dispatch import INTERPRET, recording
from sdkernels._versions import autotuner_skips_single_config
from sdkernels.kernels._launch import clear_signature_caches, launch

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
        configs=list(configs),
        key=key,
        prune_configs_by={"early_config_prune": early_prune},
        cache_results=True,  # opt-in autotuning only: its timings persist on disk
        **kwargs,
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
    `notes["inner_trips"]`: how often a loop nested in the main loop runs per main-loop iteration (for the SASS
    instruction count per iteration).
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
    maxnreg: int | None = None  # the config's register cap per thread (ptx .maxnreg), as triton.Config carries it
    notes: dict[str, Any] = field(default_factory=dict)


def runtime_params(kernel: Any) -> list[str]:
    """The kernel's non-constexpr parameters in order, read from its own definition (jit, heuristics or autotune
    wrapped; interpreted or not), so compile specs never carry a hand-copied signature."""
    import inspect

    fn = jit_fn(kernel)
    python_fn = getattr(fn, "fn", fn)
    return [
        name
        for name, param in inspect.signature(python_fn).parameters.items()
        if "constexpr" not in str(param.annotation)
    ]


def aot_signature(
    kernel: Any, pointer_types: dict[str, str], floats: tuple[str, ...] = (), wide: tuple[str, ...] = ()
) -> dict[str, str]:
    """Triton signature of every runtime parameter of `kernel`: the named pointers get their "*dtype", `floats`
    "fp32", `wide` "i64", every other one "i32". Raises if a named parameter is not one of the kernel's."""
    params = runtime_params(kernel)
    unknown = (set(pointer_types) | set(floats) | set(wide)) - set(params)
    if unknown:
        raise ValueError(f"not runtime parameters of the kernel: {sorted(unknown)}")
    return {
        name: pointer_types.get(name) or ("fp32" if name in floats else "i64" if name in wide else "i32")
        for name in params
    }


def jit_fn(kernel: Any) -> Any:
    """The bare JITFunction under autotune/heuristics wrappers."""
    from triton.runtime.interpreter import InterpretedFunction

    # Under TRITON_INTERPRET=1 `triton.jit` makes an InterpretedFunction, whose `.fn` is the plain Python function.
    while not isinstance(kernel, (triton.runtime.JITFunction, InterpretedFunction)):
        kernel = kernel.fn
    return kernel


# ------------------------------------------------------------------------------------------ one config per class
# By default no config is benchmarked: a launcher takes the first config its kernel's table offers for the
# architecture, dtype and shape class (the tables list the expected winner first; the interpreter has always run
# that one), computes the heuristics on the host and caches the result as a launch plan per input signature.
# Benchmarking stays available as an opt-in (SDKERNELS_AUTOTUNE=1, or patch/warmup(..., autotune=True)); Triton
# then caches its timings on disk, so a second process benchmarks nothing.
_autotune_enabled = os.environ.get("SDKERNELS_AUTOTUNE", "0") == "1"


def autotune_enabled() -> bool:
    return _autotune_enabled and not INTERPRET


def set_autotune(enabled: bool) -> None:
    """Benchmark every candidate config once per shape key (timings persisted on disk by Triton) instead of taking
    the table's first config. Off by default: it multiplies the compiles before the first image."""
    global _autotune_enabled
    _autotune_enabled = bool(enabled)
    clear_signature_caches()  # direct calls were made for the other setting


@dataclass(frozen=True)
class Plan:
    """Everything a launch needs besides the runtime arguments: the bare jit function and its constexprs/options,
    and for opt-in autotuning the autotuner and the constexprs the caller chose (the rest are the config's)."""

    fn: Any
    constexprs: dict[str, Any]
    num_warps: int
    num_stages: int
    tuned: Any = None
    given: dict[str, Any] | None = None


def launch_plan(
    plan: Plan, grid: tuple[int, ...], args: Any, device: Any, tuned_grid: Callable[[dict], tuple] | None = None
) -> Any:
    """Launch (or record) a plan and return the compiled kernel (see `launch`); with opt-in autotuning on a GPU,
    hand the call to Triton's autotuner instead, whose `tuned_grid(config)` gives the grid of each candidate."""
    if tuned_grid is not None and _autotune_enabled and device.type == "cuda" and not recording():
        plan.tuned[tuned_grid](*args, **plan.given)
        return None
    return launch(plan.fn, grid, args, plan.constexprs, plan.num_warps, plan.num_stages, device)


def first_config_plan(tuned: Any, named_args: dict[str, Any], constexprs: dict[str, Any]) -> Plan:
    """The plan the table picks for these arguments: the first config surviving the autotuner's prune, with the
    Heuristics wrappers' values computed from it (what the interpreter has always run)."""
    args = {**named_args, **constexprs}
    prune = tuned.early_config_prune
    config = (prune(list(tuned.configs), args) if prune is not None else list(tuned.configs))[0]
    values = {**constexprs, **config.kwargs}
    inner = tuned.fn
    while not isinstance(inner, (triton.runtime.JITFunction,)) and hasattr(inner, "values"):
        for name, heuristic in inner.values.items():
            values[name] = heuristic({**args, **values})
        inner = inner.fn
    return Plan(jit_fn(tuned), values, config.num_warps, config.num_stages, tuned, dict(constexprs))
