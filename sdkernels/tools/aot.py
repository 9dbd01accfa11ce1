"""Compile one shipped kernel configuration (an `AotSpec`) for sm_80 or sm_90 on a machine with no GPU, and
measure what the GPU would see: registers and spills (`ptxas -v` of the ptxas shipped in the triton wheel),
shared memory (Triton's dynamic + ptxas' static), resident CTAs per SM (the CUDA occupancy calculator's rules,
sdkernels.tools.occupancy) and the tensor-core instruction in the SASS (`nvdisasm`). The spec is bound as the JIT
would bind it (sdkernels.tools.jit_binding). Measurements are reused from the committed file or the local cache
(sdkernels.tools.aot_cache, which also defines the portable key).

The kernels must be real JITFunctions, so this runs where TRITON_INTERPRET is off; `sdkernels.tools.compile_report`
starts such worker processes for you.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sdkernels.kernels._tuning import AotSpec
from sdkernels.tools import aot_cache
from sdkernels.tools.jit_binding import bind_like_jit, specialised
from sdkernels.tools.occupancy import LIMITS, resident_ctas
from sdkernels.tools.sass import main_loop_report, per_iteration


@dataclass
class AotResult:
    kernel: str
    variant: str
    arch: int
    dtype: str
    num_warps: int
    num_stages: int
    uses_dot: bool
    registers: int | None = None  # per thread
    spill_stores: int | None = None  # bytes per thread
    spill_loads: int | None = None
    shared_bytes: int | None = None  # per CTA: Triton's dynamic + ptxas' static shared memory
    shared_static: int | None = None
    shared_limit: int = 0
    ctas_per_sm: int | None = None
    occupancy_limit: str = ""  # which resource caps ctas_per_sm
    tensor_core: str = ""  # "HGMMA", "HMMA" or "none"
    maxnreg: int | None = None
    # SASS instruction mix per warp (sdkernels.tools.sass): one main-loop iteration (a key tile, a K step; a nested
    # loop counted `inner_trips` times), the whole kernel, and the nested loop's own body.
    loop_mix: dict[str, int] = field(default_factory=dict)
    loop_body: dict[str, int] = field(default_factory=dict)  # the main loop's body as it stands in the SASS
    kernel_mix: dict[str, int] = field(default_factory=dict)
    inner_mix: dict[str, int] = field(default_factory=dict)
    epilogue_mix: dict[str, int] = field(default_factory=dict)  # everything after the main loop
    specialised: dict[str, list[str]] = field(default_factory=dict)  # what the JIT's binder specialised
    cached: bool = False
    cache_source: str = ""  # "committed" (tests/aot_measurements.json), "local" (the user cache) or "" (compiled)
    cache_key: str = ""  # sdkernels.tools.aot_cache.cache_key: what the measurement is filed under
    seconds: float = 0.0
    error: str = ""


def spec_dtype(spec: AotSpec) -> str:
    """The data type a configuration is built for: the first fp16/bf16 pointer, else the first pointer."""
    if "dtype" in spec.notes:
        return str(spec.notes["dtype"])
    pointees = [ty[1:] for ty in spec.signature.values() if ty.startswith("*")]
    half = [ty for ty in pointees if ty in ("fp16", "bf16")]
    return (half or pointees or ["-"])[0]


def _tool(name: str) -> str:
    return getattr(triton.knobs.nvidia, name).path


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return done.stdout + done.stderr


def compile_with_ptxas_log(src: ASTSource, target: GPUTarget, options: Any) -> tuple[Any, str]:
    """triton.compile, keeping the `ptxas -v` log of Triton's own ptxas run (empty on a Triton cache hit)."""
    previous = triton.knobs.nvidia.dump_ptxas_log
    triton.knobs.nvidia.dump_ptxas_log = True  # Triton then prints the log of the ptxas call that made the cubin
    try:
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            ck = triton.compile(src, target=target, options=options.__dict__)
    finally:
        triton.knobs.nvidia.dump_ptxas_log = previous
    return ck, printed.getvalue()


def _rerun_ptxas(ptx: str, arch: int, options: Any, tmp: str) -> str:
    """`ptxas -v` with the flags of Triton's make_cubin, so the counts are those of the cubin it produced."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    source = Path(tmp, "kernel.ptx")
    source.write_text(ptx)
    fmad = [] if options.enable_fp_fusion else ["--fmad=false"]
    return _run(
        [
            get_ptxas(arch).path,
            "-lineinfo",
            *fmad,
            "-v",
            "--regAllocOptLevel=2",
            f"--gpu-name={sm_arch_from_capability(arch)}",
            str(source),
            "-o",
            str(Path(tmp, "kernel.o")),
        ]
    )


def measure(ck: Any, arch: int, options: Any, ptxas_log: str = "") -> dict[str, Any]:
    """Registers, spills, static shared memory and tensor-core instruction of a compiled kernel."""
    with tempfile.TemporaryDirectory(prefix="sdkernels-aot-") as tmp:
        if "Used" not in ptxas_log:
            ptxas_log = _rerun_ptxas(ck.asm["ptx"], arch, options, tmp)
        cubin = Path(tmp, "kernel.cubin")
        cubin.write_bytes(ck.asm["cubin"])
        usage = _run([_tool("cuobjdump"), "--dump-resource-usage", str(cubin)])
        sass = _run([_tool("nvdisasm"), "-c", str(cubin)])
    registers = int(re.search(r"Used (\d+) registers", ptxas_log).group(1))
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", ptxas_log)
    cubin_registers, static_shared = (int(v) for v in re.search(r"REG:(\d+).*?SHARED:(\d+)", usage).groups())
    if cubin_registers != registers:
        raise RuntimeError(f"ptxas -v says {registers} registers but the cubin uses {cubin_registers}")
    tensor_core = next((op for op in ("HGMMA", "HMMA") if re.search(rf"\b{op}\b", sass)), "none")
    loops = main_loop_report(sass)
    return {
        "loop_body": loops["loop"],
        "kernel_mix": loops["kernel"],
        "inner_mix": loops["inner"],
        "epilogue_mix": loops["after"],
        "registers": registers,
        "spill_stores": int(spills.group(1)),
        "spill_loads": int(spills.group(2)),
        "shared_static": static_shared,
        "shared_bytes": ck.metadata.shared + static_shared,
        "tensor_core": tensor_core,
    }


def compile_spec(spec: AotSpec, arch: int, use_cache: bool = True, cache_only: bool = False) -> AotResult | None:
    """Compile `spec` for sm_`arch` (80 or 90) the way the JIT would on that GPU and measure it. With
    `cache_only`, return the cached result or None instead of compiling."""
    start = time.perf_counter()
    target = GPUTarget("cuda", arch, 32)
    bound = bind_like_jit(spec, target)
    signature, constexprs, attrs, options = bound
    key = aot_cache.cache_key(spec, arch, bound)
    measured, source = aot_cache.lookup(key) if use_cache else (None, "")
    if measured is None:
        if cache_only:
            return None
        ck, ptxas_log = compile_with_ptxas_log(ASTSource(spec.fn, signature, constexprs, attrs), target, options)
        measured = measure(ck, arch, options, ptxas_log)
        measured["specialised"] = specialised(spec.fn, signature, attrs, spec)
        aot_cache.store(key, measured)
    ctas, limiter = resident_ctas(arch, measured["registers"], measured["shared_bytes"], spec.num_warps)
    return AotResult(
        **identity(spec, arch),
        **measured,
        maxnreg=spec.maxnreg,
        loop_mix=per_iteration(
            {"loop": measured["loop_body"], "inner": measured["inner_mix"]}, spec.notes.get("inner_trips", 1)
        ),
        shared_limit=LIMITS[arch].shared_per_block,
        ctas_per_sm=ctas,
        occupancy_limit=limiter,
        cached=bool(source),
        cache_source=source,
        cache_key=key,
        seconds=round(time.perf_counter() - start, 2),
    )


def identity(spec: AotSpec, arch: int) -> dict[str, Any]:
    return {
        "kernel": spec.kernel,
        "variant": spec.variant,
        "arch": arch,
        "dtype": spec_dtype(spec),
        "num_warps": spec.num_warps,
        "num_stages": spec.num_stages,
        "uses_dot": spec.uses_dot,
    }
