"""How many CTAs of a compiled kernel fit on one SM at once: the per-SM resources of the architectures the compile
report targets, and the rules of the CUDA occupancy calculator (cuda_occupancy.h) applied to a kernel's measured
registers, shared memory and warps."""

from __future__ import annotations

from dataclasses import dataclass


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
