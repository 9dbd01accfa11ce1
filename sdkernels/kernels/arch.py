"""The one place that knows GPU architectures: which compute capability a launch targets, how many SMs it has, and
which config-table row ("sm80", "sm90", "small") an architecture reads. Attention, GEGLU and the AOT tools use it.

The launch recorder (sdkernels/kernels/_launch.py) can pretend to be a given architecture, so config choices,
launch grids and the compile list of a GPU can be computed on a machine without one.
"""

from __future__ import annotations

import torch

# Compute capability (major * 10 + minor) -> SM count of the part a table row is made for.
SM_COUNT = {80: 108, 86: 84, 89: 128, 90: 132}
# Opt-in shared memory per CTA (bytes): what a config's stages and tiles must fit in.
SHARED_PER_BLOCK = {80: 166_912, 86: 101_376, 89: 101_376, 90: 232_448}
DEFAULT_ARCH = 80  # what the interpreter (CPU) picks configs for: the first entry of the A100 rows
KINDS = ("sm80", "sm90", "small")

# Set by the launch recorder while it emulates an architecture; None otherwise.
_emulated: int | None = None


def kind(arch: int) -> str:
    """Config-table row of an architecture: "sm90" (H100-class, 227 KiB shared memory, warpgroup MMA), "sm80"
    (A100, 163 KiB) or "small" (sm_86/89/120: 99 KiB)."""
    if arch // 10 == 9:
        return "sm90"
    return "sm80" if arch == 80 else "small"


def kind_of(device: torch.device) -> str:
    return kind(arch_of(device))


def arch_of(device: torch.device) -> int:
    """Compute capability a launch on `device` targets (cached per device index: the query costs microseconds)."""
    if _emulated is not None:
        return _emulated
    if device.type != "cuda":
        return DEFAULT_ARCH
    index = device.index if device.index is not None else torch.cuda.current_device()
    arch = _arch_cache.get(index)
    if arch is None:
        major, minor = torch.cuda.get_device_capability(index)
        arch = _arch_cache[index] = major * 10 + minor
    return arch


def sm_count(device: torch.device) -> int | None:
    """SMs of the GPU behind `device`; under emulation the table's count; None off GPU (the interpreter)."""
    if _emulated is not None:
        return SM_COUNT.get(_emulated, SM_COUNT[90])
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    count = _sm_cache.get(index)
    if count is None:
        count = _sm_cache[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return count


_arch_cache: dict[int, int] = {}
_sm_cache: dict[int, int] = {}


def set_emulated(arch: int | None) -> int | None:
    """Pretend every launch targets `arch` (None: the real device); returns the previous setting."""
    global _emulated
    previous, _emulated = _emulated, arch
    return previous


def recorded_arch() -> int | None:
    """The architecture the launch recorder emulates, or None."""
    return _emulated
