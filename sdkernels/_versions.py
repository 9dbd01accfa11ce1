"""The supported version range of torch / triton / diffusers, and the version-dependent paths the code takes.

Declared floors (pyproject.toml) are the oldest versions CI's floor stage (.ci/floor) installs and tests. Where a
newer release changed an API we use, the code asks here instead of comparing version strings itself, and
`version_paths()` says which path runs, so the patch report and the GPU check can print it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re

# Oldest versions tested (keep in sync with pyproject.toml and .ci/constraints-floor.txt).
FLOORS: dict[str, tuple[int, ...]] = {"torch": (2, 11), "triton": (3, 6), "diffusers": (0, 30), "transformers": (4, 44)}


def parse(version: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string such as "2.11.0+cu130" or "3.6.0.dev0"."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


@functools.cache
def installed(package: str) -> str | None:
    """The installed version of `package`, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def at_least(package: str, *version: int) -> bool:
    found = installed(package)
    return found is not None and parse(found) >= version


def autotuner_skips_single_config() -> bool:
    """Triton >= 3.7's autotuner launches a lone surviving config without benchmarking it; 3.6's benchmarks it,
    which under the interpreter needs a GPU driver, so there we hand it a benchmark that does not run anything."""
    return at_least("triton", 3, 7)


def out_of_range() -> list[str]:
    """Installed packages older than the supported floor, as readable lines (empty when all are in range)."""
    lines = []
    for package, floor in FLOORS.items():
        found = installed(package)
        if found is not None and parse(found) < floor:
            lines.append(f"{package} {found} is older than the supported {'.'.join(map(str, floor))}")
    return lines


def conv_act_path() -> str:
    """How conv_norm_out + conv_act is fused with the installed diffusers (see integrations/norms.py)."""
    try:
        from diffusers.models import activations
    except ImportError:
        return "diffusers not installed"
    if getattr(activations, "ACTIVATION_FUNCTIONS", None):
        return "GroupNorm fused, SiLU kept (this diffusers shares one SiLU module process-wide)"
    return "GroupNorm+SiLU fused, conv_act an identity"


def version_paths() -> dict[str, str]:
    """Installed versions and the version-dependent path each one selects (for the patch report / GPU check)."""
    paths = {
        "versions": ", ".join(f"{p} {installed(p) or 'not installed'}" for p in ("torch", "triton", "diffusers")),
        "interpreter autotune": "lone config launched directly"
        if autotuner_skips_single_config()
        else "lone config via a no-op benchmark (triton < 3.7)",
        "conv_norm_out": conv_act_path(),
    }
    problems = out_of_range()
    if problems:
        paths["unsupported"] = "; ".join(problems)
    return paths


def main(argv: list[str] | None = None) -> int:
    """`python -m sdkernels versions`: what is installed, the supported floors, and the paths they select."""
    import sys

    print(f"python {sys.version.split()[0]}")
    for package in ("torch", "triton", "diffusers", "transformers", "huggingface_hub", "numpy"):
        floor = FLOORS.get(package)
        supported = f" (supported >= {'.'.join(map(str, floor))})" if floor else ""
        print(f"{package} {installed(package) or 'not installed'}{supported}")
    for name, path in version_paths().items():
        if name != "versions":
            print(f"{name}: {path}")
    return 0
