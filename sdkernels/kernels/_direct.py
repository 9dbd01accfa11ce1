"""Direct launches: a call whose signature was seen before reuses the compiled kernel Triton chose for it, without
Triton's per-call argument binder, specialisation and cache-key work (≈ 10 µs of Python per launch in Triton 3.9).

A `LaunchSite` belongs to one call signature of one launcher (shapes, strides, dtypes and options fixed), so every
argument the JIT specialises on is fixed too - except the pointers' 16-byte alignment, which is part of the site's
key. The first launch of each (device, alignment) goes through `fn[grid](...)` as usual; the compiled kernel it
returns is kept, and later launches call its launcher exactly as `JITFunction.run` does:
`kernel.run(grid, stream, function, packed_metadata, launch_metadata, enter_hook, exit_hook, *all_arguments)`.
Anything unusual (launch hooks set by a profiler, another current device, opt-in autotuning, a launch recorder
that records) takes the ordinary path - as does every launch on triton 3.6, whose launch hooks are always set
(empty hook chains). Under a stub recorder (bench/bench_host.py) the same code runs against a
stand-in kernel; with `verify_direct` every direct launch is checked against Triton's own binder.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import triton
from triton import knobs

from sdkernels import _dispatch
from sdkernels.kernels import _tuning
from sdkernels.kernels._launch import _state
from sdkernels.kernels._tuning import Plan, autotune_enabled, launch_plan

# SDKERNELS_DIRECT_LAUNCH=0 turns direct launches off: every launch then goes through `fn[grid](...)` (an escape
# hatch should a Triton release change its launcher's calling convention; tests and bench_host compare both).
enabled: bool = os.environ.get("SDKERNELS_DIRECT_LAUNCH", "1") != "0"


class LaunchSite:
    """Launches of one plan with one grid and fixed non-pointer arguments (one call signature)."""

    __slots__ = ("plan", "grid", "tuned_grid", "pointers", "tail", "kernels")

    def __init__(
        self,
        plan: Plan,
        grid: tuple[int, ...],
        args: Sequence[Any],
        tuned_grid: Callable[[dict], tuple[int, ...]] | None = None,
    ) -> None:
        """`args`: one call's runtime arguments (tensors where pointers go); `tuned_grid(config)`: the grid of
        each candidate config when opt-in autotuning hands the launch to Triton's autotuner."""
        self.plan = plan
        self.grid = (*grid, 1, 1)[:3]
        self.tuned_grid = tuned_grid
        self.pointers = tuple(i for i, a in enumerate(args) if isinstance(a, torch.Tensor))
        self.tail = _constexpr_tail(plan, len(args))
        self.kernels: dict[Any, tuple] = {}  # (device index[, alignments]) -> (launcher, function, metadata)

    def __call__(self, args: Sequence[Any], device: torch.device) -> None:
        recorder = getattr(_state, "recorder", None)
        if recorder is None:
            runtime = knobs.runtime
            if (
                device.type != "cuda"
                or self.tail is None
                or not enabled
                or _tuning._autotune_enabled
                or runtime.launch_enter_hook is not None
                or runtime.launch_exit_hook is not None
                or getattr(runtime, "add_stages_inspection_hook", None) is not None  # triton ≥ 3.5
                or device.index != _current_device()
            ):
                self._launch(args, device)
                return
            kernels = self.kernels
        elif recorder.stub and self.tail is not None and enabled:
            kernels = None
        else:
            self._launch(args, device)
            return
        key = self.key(args, device.index)
        if kernels is None:  # stubbed: the recorder holds the stand-in kernels, never the site
            kernels, key = recorder.direct_kernels, (self, key)
        entry = kernels.get(key)
        if entry is None:
            kernel = self._launch(args, device)
            if kernel is not None and getattr(kernel, "_run", None) is not None:
                kernels[key] = (kernel._run, kernel.function, kernel.packed_metadata, kernel)
            return
        stream = 0 if recorder is not None else _current_stream(device.index)
        if recorder is not None:
            recorder.calls += 1
            recorder.direct_launches += 1
            if recorder.verify_direct:
                entry[3].verify(self.plan.fn, recorder.arch, args, self.plan.constexprs, (*args, *self.tail))
        entry[0](*self.grid, stream, entry[1], entry[2], None, None, None, *args, *self.tail)

    def key(self, args: Sequence[Any], index: int | None) -> Any:
        """Which compiled kernel these arguments need on device `index`: everything else the JIT specialises on is
        fixed for the site, so only the pointers' 16-byte alignment."""
        aligned = 0
        for i in self.pointers:
            aligned |= args[i].data_ptr()
        if aligned & 15:  # some pointer is not 16-byte aligned: the JIT specialises each one separately
            return (index, *(args[i].data_ptr() % 16 == 0 for i in self.pointers))
        return index

    def _launch(self, args: Sequence[Any], device: torch.device) -> Any:
        return launch_plan(self.plan, self.grid, args, device, self.tuned_grid)


_MISSING: Any = object()


def cached(cache: dict, key: Any, make: Callable[[], Any]) -> Any:
    """`cache[key]`, made by `make()` the first time. A None made is kept too: a signature that has no call object
    (its inputs need a copy first) is not examined again."""
    value = cache.get(key, _MISSING)
    if value is _MISSING:
        value = cache[key] = make()
    return value


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """The strides of a contiguous tensor of `shape`."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def empty_output(shape: tuple[int, ...], strides: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A kernel's output from torch's allocator (CUDA-graph safe), NaN-poisoned when tests ask for it."""
    out = torch.empty_strided(shape, strides, dtype=like.dtype, device=like.device)
    if _dispatch.POISON_OUTPUTS:
        out.fill_(float("nan"))
    return out


def _constexpr_tail(plan: Plan, runtime_count: int) -> tuple | None:
    """The constexpr arguments in parameter order, as the JIT's bound arguments end - or None when the kernel's
    parameters do not list every runtime argument first, or it has pre-run hooks (then no direct launches)."""
    fn = plan.fn
    if getattr(fn, "pre_run_hooks", None):
        return None
    if isinstance(fn, triton.runtime.JITFunction):
        params = [(p.name, p.is_constexpr, p.default) for p in fn.params]
    else:  # TRITON_INTERPRET=1: an InterpretedFunction around the plain Python function
        params = [
            (p.name, "constexpr" in str(p.annotation), p.default) for p in inspect.signature(fn.fn).parameters.values()
        ]
    if any(is_constexpr for _, is_constexpr, _ in params[:runtime_count]):
        return None
    if not all(is_constexpr for _, is_constexpr, _ in params[runtime_count:]):
        return None
    tail = []
    for name, _, default in params[runtime_count:]:
        if name in plan.constexprs:
            tail.append(plan.constexprs[name])
        elif default is not inspect.Parameter.empty:
            tail.append(default)
        else:
            return None
    return tuple(tail)


def direct_allowed(device: torch.device) -> bool:
    """May a call on `device` be remembered as a direct call: on a GPU with the default (untuned) configs and no
    recorder, or while a stub recorder times the host path."""
    if not enabled:
        return False
    recorder = getattr(_state, "recorder", None)
    if recorder is None:
        return device.type == "cuda" and not autotune_enabled()
    return recorder.stub


# The device and stream Triton's CUDA driver launches on (triton/backends/driver.py GPUDriver), the same functions.
_current_device = torch.cuda.current_device
try:
    from torch._C import _cuda_getCurrentRawStream as _current_stream
except ImportError:  # a CPU-only torch: no CUDA tensor can reach the direct path

    def _current_stream(index: int) -> int:
        return torch.cuda.current_stream(index).cuda_stream
