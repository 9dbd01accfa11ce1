"""Compile one shipped kernel configuration (an `AotSpec`) for sm_80 or sm_90 on a machine with no GPU, and
measure what the GPU would see: registers and spills (`ptxas -v` of the ptxas shipped in the triton wheel),
shared memory (Triton's dynamic + ptxas' static), resident CTAs per SM (the CUDA occupancy calculator's rules)
and the tensor-core instruction in the SASS (`nvdisasm`). Results are cached on disk.

The kernels must be real JITFunctions, so this runs where TRITON_INTERPRET is off; `sdkernels.tools.compile_report`
starts such worker processes for you.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler.compiler import make_backend
from triton.runtime.jit import create_function_from_signature

from sdkernels.kernels._tuning import AotSpec


@dataclass(frozen=True)
class GpuLimits:
    """Per-SM resources of one architecture, as cuda_occupancy.h models them."""

    shared_per_block: int  # opt-in maximum of static + dynamic shared memory for one CTA
    shared_per_sm: int  # with the carveout at maximum shared memory
    reserved_shared_per_cta: int = 1024  # the driver's own share of every CTA (sm_80 and later)
    shared_granularity: int = 128
    registers_per_sm: int = 65536
    registers_per_block: int = 65536
    register_unit: int = 256  # registers are allocated per warp, in units of 256
    sub_partitions: int = 4  # the register file is split over 4 schedulers; a warp lives in one
    max_registers_per_thread: int = 255
    threads_per_sm: int = 2048
    threads_per_block: int = 1024
    ctas_per_sm: int = 32


# A100 / H100 (the report's default targets), and the GA10x / Ada parts some configurations are tuned for.
LIMITS: dict[int, GpuLimits] = {
    80: GpuLimits(166_912, 167_936),
    86: GpuLimits(101_376, 102_400, threads_per_sm=1536, ctas_per_sm=16),
    89: GpuLimits(101_376, 102_400, threads_per_sm=1536, ctas_per_sm=24),
    90: GpuLimits(232_448, 233_472),
}


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
    specialised: dict[str, list[str]] = field(default_factory=dict)  # what the JIT's binder specialised
    cached: bool = False
    seconds: float = 0.0
    error: str = ""


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def resident_ctas(arch: int, registers: int, shared_bytes: int, num_warps: int) -> tuple[int, str]:
    """CTAs of this kernel that fit on one SM at once, and the resources that limit them, "+"-joined (the rules of
    cudaOccMaxActiveBlocksPerMultiprocessor in cuda_occupancy.h, default carveout, no partitioned caching)."""
    gpu = LIMITS[arch]
    regs_per_warp = _round_up(registers * 32, gpu.register_unit)
    # The hardware check assumes a CTA's warps are spread over all 4 sub-partitions at once.
    regs_assumed = regs_per_warp * _round_up(num_warps, gpu.sub_partitions)
    if registers > gpu.max_registers_per_thread or regs_assumed > gpu.registers_per_block:
        by_registers = 0
    else:
        warps_per_partition = (gpu.registers_per_sm // gpu.sub_partitions) // max(regs_per_warp, 1)
        by_registers = warps_per_partition * gpu.sub_partitions // num_warps
    shared_allocated = _round_up(shared_bytes + gpu.reserved_shared_per_cta, gpu.shared_granularity)
    by_shared = 0 if shared_bytes > gpu.shared_per_block else gpu.shared_per_sm // shared_allocated
    threads = num_warps * 32
    by_threads = 0 if threads > gpu.threads_per_block else gpu.threads_per_sm // threads
    limits = {"registers": by_registers, "shared memory": by_shared, "threads": by_threads, "CTA cap": gpu.ctas_per_sm}
    fewest = min(limits.values())
    return fewest, "+".join(name for name, ctas in limits.items() if ctas == fewest)


def spec_dtype(spec: AotSpec) -> str:
    """The data type a configuration is built for: the first fp16/bf16 pointer, else the first pointer."""
    if "dtype" in spec.notes:
        return str(spec.notes["dtype"])
    pointees = [ty[1:] for ty in spec.signature.values() if ty.startswith("*")]
    half = [ty for ty in pointees if ty in ("fp16", "bf16")]
    return (half or pointees or ["-"])[0]


class _FakePointer:
    """What the JIT's binder reads from a tensor argument: its dtype and address alignment."""

    def __init__(self, dtype: tl.dtype, address: int) -> None:
        self.dtype = dtype
        self.address = address

    def data_ptr(self) -> int:
        return self.address


_INT_NAMES = {"i1": "int1", "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64", "u8": "uint8"}
_INT_BASES = {"i32": 0, "i64": 1 << 33}  # a value whose width makes the binder pick this type


def _fake_argument(name: str, ty: str, divisible: bool, one: bool) -> Any:
    """An argument the binder specialises exactly as the spec says: 16-aligned or not, or the integer 1."""
    if ty.startswith("*"):
        if one:
            raise ValueError(f"{name}: a pointer cannot be equal_to_1")
        return _FakePointer(tl.dtype(_INT_NAMES.get(ty[1:], ty[1:])), 256 if divisible else 8)
    if ty in _INT_BASES:
        return 1 if one else _INT_BASES[ty] + (16 if divisible else 17)
    if divisible or one:
        raise ValueError(f"{name}: only pointers and i32/i64 integers take divisible_by_16 / equal_to_1")
    if ty == "fp32":
        return 1.5
    if ty == "i1":
        return True
    raise ValueError(f"{name}: unsupported argument type {ty!r}")


def bind_like_jit(spec: AotSpec, target: GPUTarget) -> tuple[dict, dict, dict, Any]:
    """(signature, constexprs, attrs, options) exactly as `kernel[grid](...)` would build them on a GPU, from
    Triton's own argument binder fed with fake arguments that carry the spec's alignment and unit values."""
    fn = spec.fn
    if not isinstance(fn, triton.runtime.JITFunction):
        raise TypeError(f"spec.fn is a {type(fn).__name__}, not a JITFunction (is TRITON_INTERPRET=1 set here?)")
    hinted = set(spec.divisible_by_16) | set(spec.equal_to_1)
    for unknown in sorted((hinted - set(spec.signature)) | (set(spec.signature) - set(fn.arg_names))):
        raise ValueError(f"{unknown!r} is not a non-constexpr argument of {fn.__name__}")
    args = {
        name: _fake_argument(name, ty, name in spec.divisible_by_16, name in spec.equal_to_1)
        for name, ty in spec.signature.items()
    }
    # The launch options JITFunction.run passes, so the compile options match a real launch's.
    launch = {
        "num_warps": spec.num_warps,
        "num_stages": spec.num_stages,
        "debug": bool(fn.debug or triton.knobs.runtime.debug),
        "instrumentation_mode": triton.knobs.compilation.instrumentation_mode,
        "fpsan_homomorphic_casts": triton.knobs.compilation.fpsan_homomorphic_casts,
    }
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(**args, **spec.constexprs, **launch)
    options, signature, constexprs, attrs = fn._pack_args(backend, launch, bound, specialization, options)
    for name, ty in spec.signature.items():
        expected = "constexpr" if name in spec.equal_to_1 else ty
        if signature[name] != expected:
            raise ValueError(f"{name}: the spec says {expected} but the JIT would type it {signature[name]}")
    return signature, constexprs, attrs, options


def _specialised(fn: Any, signature: dict, attrs: dict, spec: AotSpec) -> dict[str, list[str]]:
    names = fn.arg_names
    return {
        "divisible_by_16": [
            names[key[0]] for key, hints in attrs.items() if len(key) == 1 and ["tt.divisibility", 16] in hints
        ],
        "equal_to_1": [n for n in spec.signature if signature[n] == "constexpr"],
    }


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
        # Disassembly is slow for big kernels; PTX without any mma instruction cannot give tensor-core SASS.
        sass = _run([_tool("nvdisasm"), "-c", str(cubin)]) if "mma" in ck.asm["ptx"] else ""
    registers = int(re.search(r"Used (\d+) registers", ptxas_log).group(1))
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", ptxas_log)
    cubin_registers, static_shared = (int(v) for v in re.search(r"REG:(\d+).*?SHARED:(\d+)", usage).groups())
    if cubin_registers != registers:
        raise RuntimeError(f"ptxas -v says {registers} registers but the cubin uses {cubin_registers}")
    tensor_core = next((op for op in ("HGMMA", "HMMA") if re.search(rf"\b{op}\b", sass)), "none")
    return {
        "registers": registers,
        "spill_stores": int(spills.group(1)),
        "spill_loads": int(spills.group(2)),
        "shared_static": static_shared,
        "shared_bytes": ck.metadata.shared + static_shared,
        "tensor_core": tensor_core,
    }


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("SDKERNELS_AOT_CACHE") or os.path.join(root, "sdkernels", "aot"))


# Part of every cache key, so a change to how this module measures invalidates the cached measurements.
_THIS_SOURCE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _cache_key(spec: AotSpec, arch: int, bound: tuple[dict, dict, dict, Any]) -> str:
    signature, constexprs, attrs, options = bound
    material = [
        spec.fn.cache_key,
        signature,
        repr(sorted(constexprs.items())),
        repr(sorted(attrs.items())),
        repr(sorted(options.__dict__.items())),
        arch,
        triton.__version__,
        _THIS_SOURCE,
    ]
    return hashlib.sha256(json.dumps(material, default=str).encode()).hexdigest()


def compile_spec(spec: AotSpec, arch: int, use_cache: bool = True, cache_only: bool = False) -> AotResult | None:
    """Compile `spec` for sm_`arch` (80 or 90) the way the JIT would on that GPU and measure it. With
    `cache_only`, return the cached result or None instead of compiling."""
    start = time.perf_counter()
    target = GPUTarget("cuda", arch, 32)
    bound = bind_like_jit(spec, target)
    signature, constexprs, attrs, options = bound
    path = cache_dir() / f"{_cache_key(spec, arch, bound)}.json"
    measured = json.loads(path.read_text()) if use_cache and path.is_file() else None
    cached = measured is not None
    if measured is None:
        if cache_only:
            return None
        ck, ptxas_log = compile_with_ptxas_log(ASTSource(spec.fn, signature, constexprs, attrs), target, options)
        measured = measure(ck, arch, options, ptxas_log)
        measured["specialised"] = _specialised(spec.fn, signature, attrs, spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(measured))
        tmp.replace(path)  # atomic: a concurrent reader sees the old file or the whole new one
    ctas, limiter = resident_ctas(arch, measured["registers"], measured["shared_bytes"], spec.num_warps)
    return AotResult(
        **identity(spec, arch),
        **measured,
        shared_limit=LIMITS[arch].shared_per_block,
        ctas_per_sm=ctas,
        occupancy_limit=limiter,
        cached=cached,
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
