"""The compile report's worker processes: each loads kernel spec providers and compiles specs for an architecture
with TRITON_INTERPRET off (so the report also runs from a process under the interpreter, such as the test suite),
answering JSON requests on stdin; `WorkerPool` hands requests to a few of them in parallel."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import itertools
import json
import os
import queue
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sdkernels.kernels._tuning import AotSpec
from sdkernels.tools.aot import AotResult, compile_spec, identity
from sdkernels.tools.occupancy import LIMITS
from sdkernels.tools.sass import whole_run
from sdkernels.tools.triton_compat import accept_newer_launch_knobs

accept_newer_launch_knobs()  # triton 3.6-3.8: see triton_compat.py (a no-op on 3.9)


def load_specs(provider: str) -> list[AotSpec] | str:
    """The specs of a provider "module:function" or "path/to/file.py:function", or a note (a str) when the
    module does not exist (yet) or does not define the function."""
    target, _, func_name = provider.rpartition(":")
    if target.endswith(".py"):
        name = f"_sdkernels_aot_{Path(target).stem}"
        loader = importlib.util.spec_from_file_location(name, target)
        module = importlib.util.module_from_spec(loader)
        sys.modules[name] = module  # dataclasses and triton look their module up by name
        loader.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (target == exc.name or target.startswith(exc.name + ".")):
                raise  # the module exists but one of its own imports is missing: that is a real error
            return f"{target}: no such module yet, skipped"
    if not hasattr(module, func_name):
        return f"{target}: defines no {func_name}() yet, skipped"
    return list(getattr(module, func_name)())


def _row(spec: AotSpec, arch: int, use_cache: bool, cache_only: bool) -> dict[str, Any] | None:
    try:
        result = compile_spec(spec, arch, use_cache, cache_only)
    except Exception as exc:  # a configuration that fails to build is a row of the report, not a crash
        limit = LIMITS[arch].shared_per_block if arch in LIMITS else 0
        result = AotResult(**identity(spec, arch), shared_limit=limit, error=f"{type(exc).__name__}: {exc}"[:2000])
    if result is None:
        return None
    row = dataclasses.asdict(result)
    if "run_k" in spec.notes and row["loop_mix"]:  # GEGLU: a whole program at SD's K (the loop runs K / BLOCK_K times)
        row["whole_run"] = {
            str(k): whole_run(row["loop_mix"], row["kernel_mix"], row["epilogue_mix"], -(-k // spec.notes["k_step"]))
            for k in spec.notes["run_k"]
        }
    return row


def _handle(request: dict[str, Any], specs_by_provider: dict[str, list[AotSpec] | str]) -> dict[str, Any]:
    provider = request["provider"]
    if provider not in specs_by_provider:
        specs_by_provider[provider] = load_specs(provider)
    specs = specs_by_provider[provider]
    if isinstance(specs, str):
        return {"note": specs}
    if request["op"] == "compile":
        return {"result": _row(specs[request["index"]], request["arch"], request["cache"], cache_only=False)}
    # "plan": the (spec, arch) jobs that pass the filters, with the result already filled in on a cache hit.
    unknown = sorted({arch for spec in specs for arch in spec.archs} - set(LIMITS))
    jobs = [
        {
            "index": index,
            "kernel": spec.kernel,
            "variant": spec.variant,
            "arch": arch,
            "result": _row(spec, arch, request["cache"], cache_only=True) if request["cache"] else None,
        }
        for index, spec in enumerate(specs)
        if not request["kernels"] or spec.kernel in request["kernels"]
        for arch in spec.archs
        if arch in request["archs"]
    ]
    return {"unknown_archs": unknown, "jobs": jobs}


def serve() -> None:
    """Answer JSON-lines requests on stdin, one JSON line each on stdout: {"op": "plan", "provider", "kernels",
    "archs", "cache"} lists a provider's jobs (with cached results), {"op": "compile", "provider", "index",
    "arch", "cache"} compiles one. Anything else that prints (ptxas errors, warnings) goes to stderr."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    specs_by_provider: dict[str, list[AotSpec] | str] = {}
    for line in sys.stdin:
        try:
            reply = _handle(json.loads(line), specs_by_provider)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


class _Worker:
    """One compile worker process (`serve()`), started on first use and restarted if it dies."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()  # the worker's stderr: warnings, and the reason if it dies

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.proc is None:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from sdkernels.tools.compile_workers import serve; serve()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.log,
                text=True,
                env=self.env,
            )
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if line:
            return json.loads(line)
        code, self.proc = self.proc.wait(), None
        self.log.seek(0)
        tail = self.log.read().decode(errors="replace")[-1500:]
        return {"error": f"compile worker died (exit {code}): {tail}"}

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


class WorkerPool:
    """`jobs` compile workers answering requests in parallel (the GPU-free compiles are CPU-bound)."""

    def __init__(self, jobs: int) -> None:
        env = dict(os.environ)
        env["TRITON_INTERPRET"] = "0"  # the kernels must be real JITFunctions, even when our caller interprets
        env["OMP_NUM_THREADS"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(path or os.getcwd() for path in sys.path)  # what we can import
        self.workers = [_Worker(env) for _ in range(max(jobs, 1))]
        self.idle: queue.Queue[_Worker] = queue.Queue()
        for worker in self.workers:
            self.idle.put(worker)

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        worker = self.idle.get()
        try:
            return worker.ask(request)
        finally:
            self.idle.put(worker)

    def map(
        self, requests: Sequence[dict[str, Any]], on_answer: Callable[[int], None] | None = None
    ) -> list[dict[str, Any]]:
        """The answers, in request order; `on_answer(n)` is called as the n-th answer arrives."""
        answered = itertools.count(1)  # next() on a count is atomic under the GIL

        def ask(request: dict[str, Any]) -> dict[str, Any]:
            answer = self._ask(request)
            if on_answer is not None:
                on_answer(next(answered))
            return answer

        with ThreadPoolExecutor(len(self.workers)) as pool:
            return list(pool.map(ask, requests))

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for worker in self.workers:
            worker.close()
