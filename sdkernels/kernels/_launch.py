"""Every kernel launch goes through `launch`, so a `LaunchRecorder` can record launches instead of running them.

A launcher (sdkernels/kernels/*.py) decides everything on the host - the bare jit function, the grid, every
constexpr including the config's tiles, num_warps and num_stages - and calls `launch`. Normally that is
`fn[grid](...)`. Inside `with LaunchRecorder(arch=90):` it is recorded instead, together with the specialisation
Triton's own argument binder would give the call on that GPU (dtypes, 16-byte divisibility, ints equal to 1): the
JIT compiles once per distinct (kernel, specialisation, options), so the recorder counts exactly the compiles a GPU
run would trigger. While recording, ops take their kernel path on any device (meta tensors included) and choose
configs for the recorded architecture, so a whole patched pipeline can be replayed on the meta device.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import triton
from triton.runtime.jit import compute_cache_key

from sdkernels.kernels import arch as arch_mod

Grid = tuple[int, ...]


@dataclass
class Launch:
    """One recorded launch. `key` identifies the compile it needs: two launches with equal keys share one binary."""

    kernel: str  # module.qualname of the jit function
    grid: tuple[int, int, int]
    constexprs: dict[str, Any]
    num_warps: int
    num_stages: int
    signature: dict[str, str]  # non-constexpr argument -> Triton type ("*fp16", "i32", "constexpr" when == 1)
    divisible_by_16: tuple[str, ...]
    equal_to_1: tuple[str, ...]
    key: str
    fn: Any = field(repr=False, default=None)
    compile_args: tuple[dict, dict, dict, dict] | None = field(repr=False, default=None)  # for triton.compile


_state = threading.local()


def active_recorder() -> LaunchRecorder | None:
    return getattr(_state, "recorder", None)


def launch(
    fn: Any,
    grid: Grid,
    args: Sequence[Any],
    constexprs: dict[str, Any],
    num_warps: int,
    num_stages: int,
    device: torch.device,
) -> Any:
    """Run (or record) `fn[grid](*args, **constexprs)` with the given launch options on `device`; return the
    compiled kernel the JIT launched (a stand-in while a stub recorder runs; None when nothing was compiled).

    Triton launches on the *current* CUDA device; when the tensors live on another one, the launch is wrapped in a
    device guard (only then: the check is one cheap query)."""
    recorder = getattr(_state, "recorder", None)
    if recorder is not None:
        entry = recorder.record(fn, grid, args, constexprs, num_warps, num_stages)
        if not recorder.execute:
            return entry if recorder.stub else None
    if device.type == "cuda" and device.index is not None and device.index != torch.cuda.current_device():
        with torch.cuda.device(device.index):
            return fn[grid](*args, **constexprs, num_warps=num_warps, num_stages=num_stages)
    return fn[grid](*args, **constexprs, num_warps=num_warps, num_stages=num_stages)


# Caches that map a call's signature to a prepared direct call (sdkernels/kernels/_direct.py). They are only valid
# for the conditions they were made under - no recorder or the same stub recorder, the same autotune setting - so
# they are emptied whenever those change.
_signature_caches: list[dict] = []


def signature_cache() -> dict:
    """A new dict registered to be emptied when a recorder starts or stops or autotuning is switched."""
    cache: dict = {}
    _signature_caches.append(cache)
    return cache


def clear_signature_caches() -> None:
    for cache in _signature_caches:
        cache.clear()


_arg_names: dict[str, list[str]] = {}


def runtime_arg_names(fn: Any) -> list[str]:
    """The non-constexpr parameters of a jit (or interpreted) function, in order."""
    name = kernel_name(fn)
    names = _arg_names.get(name)
    if names is None:
        if isinstance(fn, triton.runtime.JITFunction):
            names = [p.name for p in fn.params if not p.is_constexpr]
        else:
            parameters = inspect.signature(fn.fn).parameters.values()
            names = [p.name for p in parameters if "constexpr" not in str(p.annotation)]
        _arg_names[name] = names
    return names


# --------------------------------------------------------------------------------------------------- binder
def kernel_name(fn: Any) -> str:
    py = getattr(fn, "fn", fn)
    return f"{py.__module__}.{py.__qualname__}"


_binders: dict[tuple[str, int], tuple[Callable, Any, list]] = {}


def _binder(fn: Any, arch: int) -> tuple[Callable, Any, list]:
    """Triton's own argument binder for `fn` with a backend of `arch` (works for interpreted functions too)."""
    cache_key = (kernel_name(fn), arch)
    hit = _binders.get(cache_key)
    if hit is not None:
        return hit
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import KernelParam, create_function_from_signature

    backend = make_backend(GPUTarget("cuda", arch, 32))
    if isinstance(fn, triton.runtime.JITFunction):
        signature, params = fn.signature, fn.params
    else:  # TRITON_INTERPRET=1: an InterpretedFunction around the plain Python function
        signature = inspect.signature(fn.fn)
        plain = set(getattr(fn, "kwargs", {}).get("do_not_specialize", None) or ())  # triton.jit(do_not_specialize=)
        params = [KernelParam(i, p, p.name in plain, False) for i, p in enumerate(signature.parameters.values())]
    binder = create_function_from_signature(signature, params, backend)
    _binders[cache_key] = hit = (binder, backend, params)
    return hit


# The compilation knobs JITFunction.run adds to every launch's options: instrumentation_mode since triton 3.6,
# fpsan_homomorphic_casts since 3.9 (a knob the installed release lacks is one its JIT does not pass).
_RUN_KNOBS = tuple(
    name for name in ("instrumentation_mode", "fpsan_homomorphic_casts") if hasattr(triton.knobs.compilation, name)
)


def launch_options(num_warps: int, num_stages: int) -> dict[str, Any]:
    """The options JITFunction.run adds to a launch, so a recorded compile's options equal a real launch's."""
    options = {"num_warps": num_warps, "num_stages": num_stages, "debug": bool(triton.knobs.runtime.debug)}
    for name in _RUN_KNOBS:
        options[name] = getattr(triton.knobs.compilation, name)
    return options


class LaunchRecorder:
    """Context manager: record every sdkernels launch (and, with execute=True, still run it) as `Launch` entries,
    specialised as the JIT would for GPU architecture `arch` (80, 86, 89, 90).

    `launches` lists every launch in order; `compiles()` the distinct compiles, first launch of each.
    """

    def __init__(
        self,
        arch: int = 90,
        *,
        execute: bool = False,
        keep_compile_args: bool = False,
        stub: bool = False,
        verify_direct: bool = False,
    ) -> None:
        self.arch = arch
        self.execute = execute
        self.keep_compile_args = keep_compile_args
        # stub=True: the host work of a launch runs but not the driver call, counted in `calls`; for timing the
        # host path (bench/bench_host.py). The first launch of a site binds and specialises the arguments as
        # JITFunction.run does and hands back a stand-in kernel; later ones take the direct path a GPU takes
        # (sdkernels/kernels/_direct.py) and call the stand-in's launcher, which does nothing.
        self.stub = stub
        # verify_direct=True (tests): every direct launch is checked against Triton's binder - same compiled
        # kernel (specialisation key) and the same argument list JITFunction.run would pass to the launcher.
        self.verify_direct = verify_direct
        self.calls = 0
        self.direct_launches = 0
        self.launches: list[Launch] = []
        self.direct_kernels: dict[tuple, tuple] = {}  # the direct path's kernels while stubbed, per (site, key)
        self._seen: set[str] = set()
        self._kernels: dict[tuple[Any, str], StubKernel] = {}
        self._key_cache: dict = {}  # compute_cache_key's memo, as each JIT function keeps one

    def __enter__(self) -> LaunchRecorder:
        if active_recorder() is not None:
            raise RuntimeError("sdkernels: a LaunchRecorder is already active in this thread")
        clear_signature_caches()
        _state.recorder = self
        self._previous_arch = arch_mod.set_emulated(self.arch)
        return self

    def __exit__(self, *exc: object) -> None:
        _state.recorder = None
        arch_mod.set_emulated(self._previous_arch)
        clear_signature_caches()

    def record(
        self, fn: Any, grid: Grid, args: Sequence[Any], constexprs: dict[str, Any], num_warps: int, num_stages: int
    ) -> Launch:
        binder, backend, params = _binder(fn, self.arch)
        options = launch_options(num_warps, num_stages)
        bound, specialization, binder_options = binder(*args, **constexprs, **options)
        if self.stub:
            self.calls += 1
            key = compute_cache_key(self._key_cache, specialization, binder_options)
            kernel = self._kernels.get((fn, key))  # the JIT keeps one kernel cache per function
            if kernel is None:
                kernel = self._kernels[(fn, key)] = StubKernel(key, (num_warps, num_stages))
            return kernel  # type: ignore[return-value]
        key = kernel_name(fn) + str(specialization) + str(binder_options)  # what JITFunction.run keys its cache by
        names = [p.name for p in params]
        signature, divisible, ones = {}, [], []
        for param, (ty, attr) in zip(params, specialization, strict=True):
            if param.is_constexpr:
                continue
            signature[param.name] = ty
            if ty == "constexpr":
                ones.append(param.name)
            elif attr == "D":
                divisible.append(param.name)
        compile_args = None
        if key not in self._seen and self.keep_compile_args and isinstance(fn, triton.runtime.JITFunction):
            compile_args = _pack(fn, backend, options, bound, specialization, binder_options)
        padded = (tuple(grid) + (1, 1))[:3]
        entry = Launch(
            kernel=kernel_name(fn),
            grid=padded,  # type: ignore[arg-type]
            constexprs={n: bound[n] for n, p in zip(names, params, strict=True) if p.is_constexpr},
            num_warps=num_warps,
            num_stages=num_stages,
            signature=signature,
            divisible_by_16=tuple(divisible),
            equal_to_1=tuple(ones),
            key=key,
            fn=fn,
            compile_args=compile_args,
        )
        self._seen.add(key)
        self.launches.append(entry)
        return entry

    def compiles(self) -> list[Launch]:
        """The first launch of every distinct compile, in order of first use."""
        seen: set[str] = set()
        firsts = []
        for entry in self.launches:
            if entry.key not in seen:
                seen.add(entry.key)
                firsts.append(entry)
        return firsts


class StubKernel:
    """Stands in for a compiled kernel while a stub recorder runs: its launcher takes the arguments and does nothing.
    `key` is the JIT's cache key it was made for, `options` the launch's (num_warps, num_stages)."""

    def __init__(self, key: str, options: tuple[int, int]) -> None:
        self.key = key
        self.options = options
        self.function = None
        self.packed_metadata = None

    @staticmethod
    def _run(*launch_args: Any) -> None:
        return None

    def verify(self, fn: Any, arch: int, args: Sequence[Any], constexprs: dict[str, Any], full: tuple) -> None:
        """Raise unless Triton's binder gives these arguments this kernel and the launcher argument list `full`."""
        binder, _, _ = _binder(fn, arch)
        bound, specialization, options = binder(*args, **constexprs, **launch_options(*self.options))
        key = compute_cache_key({}, specialization, options)
        if key != self.key:
            raise AssertionError(f"direct launch reused kernel {self.key} for arguments the JIT keys as {key}")
        expected = tuple(bound.values())
        if len(expected) != len(full) or any(a is not b and a != b for a, b in zip(expected, full, strict=True)):
            raise AssertionError(f"direct launch passed {full} where the JIT passes {expected}")


def _pack(fn: Any, backend: Any, options: dict, bound: dict, specialization: list, binder_options: dict) -> tuple:
    """(signature, constexprs, attrs, options) exactly as JITFunction.run hands them to triton.compile."""
    parsed, signature, constexprs, attrs = fn._pack_args(backend, options, bound, specialization, binder_options)
    return signature, constexprs, attrs, dict(parsed.__dict__)
