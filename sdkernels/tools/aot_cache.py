"""Where ahead-of-time compile measurements are kept, and the key that says when one may be reused.

Two stores, looked up in this order:

- the committed measurements: one readable JSON file, one line per build (kernel, variant, arch, registers, spills,
  shared memory, tensor-core instruction, resident CTAs), read-only. In a checkout it is tests/aot_measurements.json
  ($SDKERNELS_AOT_MEASUREMENTS overrides the path); `python .ci/seed_aot_cache.py` regenerates it.
- the local cache: one small JSON file per key, written atomically by the compile workers, in
  $SDKERNELS_AOT_CACHE, else $XDG_CACHE_HOME/sdkernels/aot, else ~/.cache/sdkernels/aot. Never in the checkout.

The key hashes only what changes the generated code and how it is measured: the kernel's source (Triton's
`JITFunction.cache_key`: its source, the jit functions it calls and the constexpr globals it reads), the bound
signature, constexprs and specialisation attributes, the compile options by value (libdevice by content, not by its
path), the arch, the Triton and ptxas versions, and MEASUREMENT_FORMAT. No absolute path goes in, so a clone in any
directory with its venv anywhere finds the committed measurements.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import triton

from sdkernels.kernels._tuning import AotSpec

MEASUREMENT_FORMAT = 3  # bump when sdkernels.tools.aot.measure changes what it records or how it reads it
MEASURED_FIELDS = (
    "registers",
    "spill_stores",
    "spill_loads",
    "shared_static",
    "shared_bytes",
    "tensor_core",
    # SASS instruction mixes per warp (sdkernels.tools.sass): the main loop's body, the whole kernel, a nested loop's
    # body and everything after the main loop
    "loop_body",
    "kernel_mix",
    "inner_mix",
    "epilogue_mix",
)
COMMITTED_NAME = "aot_measurements.json"
_REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------------ the key
@functools.cache
def _file_digest(path: str) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


@functools.cache
def _ptxas_version(arch: int) -> str:
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(arch).version


def portable_options(options: Any) -> dict[str, str]:
    """The compile options by value: extern libraries (libdevice) by the hash of their content, not their path."""
    values = dict(vars(options))
    values["extern_libs"] = tuple((name, _file_digest(path)) for name, path in values.get("extern_libs") or ())
    return {name: repr(value) for name, value in sorted(values.items())}


def cache_key(spec: AotSpec, arch: int, bound: tuple[dict, dict, dict, Any]) -> str:
    signature, constexprs, attrs, options = bound
    material = {
        "format": MEASUREMENT_FORMAT,
        "kernel_source": spec.fn.cache_key,
        "signature": signature,
        "constexprs": repr(sorted(constexprs.items())),
        "specialisation": repr(sorted(attrs.items())),
        "options": portable_options(options),
        "arch": arch,
        "triton": triton.__version__,
        "ptxas": _ptxas_version(arch),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------------------------------ stores
def committed_path() -> Path | None:
    override = os.environ.get("SDKERNELS_AOT_MEASUREMENTS")
    if override:
        return Path(override)
    path = _REPO / "tests" / COMMITTED_NAME  # present in a checkout, not in an installed wheel
    return path if path.is_file() else None


@functools.cache
def _read_committed(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    document = json.loads(path.read_text())
    if document.get("format") != MEASUREMENT_FORMAT:
        return {}  # written by another measuring scheme: nothing in it can be trusted as ours
    return document["measurements"]


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("SDKERNELS_AOT_CACHE") or os.path.join(root, "sdkernels", "aot"))


def lookup(key: str) -> tuple[dict[str, Any] | None, str]:
    """(measured fields, "committed" | "local"), or (None, "") when neither store has the key."""
    path = committed_path()
    entry = _read_committed(path).get(key) if path is not None else None
    if entry is not None:
        return {name: entry[name] for name in (*MEASURED_FIELDS, "specialised")}, "committed"
    local = cache_dir() / f"{key}.json"
    if local.is_file():
        return json.loads(local.read_text()), "local"
    return None, ""


def store(key: str, measured: dict[str, Any]) -> None:
    """Write one measurement to the local cache (atomic: a concurrent reader sees no file or the whole file)."""
    path = cache_dir() / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(measured))
    tmp.replace(path)


def write_committed(path: Path, rows: list[dict[str, Any]]) -> int:
    """Write the committed file from compile-report rows (those with a `cache_key` and no error): a header, then
    one line per build sorted by kernel, variant and arch, so a diff shows which builds changed. Returns the count."""
    keep = ("kernel", "variant", "arch", "dtype", "num_warps", "num_stages", *MEASURED_FIELDS)
    keep += ("ctas_per_sm", "occupancy_limit", "specialised")
    good = sorted(
        (row for row in rows if row.get("cache_key") and not row["error"]),
        key=lambda row: (row["kernel"], row["variant"], row["arch"]),
    )
    lines = [f"  {json.dumps(row['cache_key'])}: {json.dumps({name: row[name] for name in keep})}" for row in good]
    header = {
        "format": MEASUREMENT_FORMAT,
        "triton": triton.__version__,
        "about": "AOT compile measurements of every shipped kernel build (sdkernels/tools/aot_cache.py); "
        "regenerate with: python .ci/seed_aot_cache.py",
    }
    head = ",\n".join(f" {json.dumps(name)}: {json.dumps(value)}" for name, value in header.items())
    path.write_text("{\n" + head + ',\n "measurements": {\n' + ",\n".join(lines) + "\n }\n}\n")
    return len(good)
