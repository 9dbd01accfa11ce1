"""The AOT measurement cache: its key is portable (the same in a clone elsewhere with libdevice elsewhere, different
when what is compiled changes), the committed file is found before anything is compiled, it is well formed, and the
tests never write into the checkout. Keys are computed in a subprocess without TRITON_INTERPRET (the kernels must be
real JITFunctions there), on the stand-in kernels of test_compile_report.py: binding only, nothing is compiled."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

from sdkernels.tools import aot_cache
from sdkernels.tools.occupancy import resident_ctas

REPO = Path(__file__).resolve().parents[1]

# argv: [[test_compile_report.py path, libdevice path or null], ...]. Prints, per pair, {dtype/variant@arch: key} for
# its good_specs(); then, with a committed file holding a made-up measurement under the first key, what
# compile_spec(..., cache_only=True) returns for that build.
_KEYS_SCRIPT = """
import json, os, sys, triton
from sdkernels.tools import aot, aot_cache, compile_workers, jit_binding
runs = []
for source, libdevice in json.loads(sys.argv[1]):
    triton.knobs.nvidia.libdevice_path = libdevice
    specs = compile_workers.load_specs(source + ":good_specs")
    keys = {}
    for spec in specs:
        for arch in spec.archs:
            bound = jit_binding.bind_like_jit(spec, jit_binding.GPUTarget("cuda", arch, 32))
            keys[f"{aot.spec_dtype(spec)}/{spec.variant}@{arch}"] = aot_cache.cache_key(spec, arch, bound)
    runs.append(keys)
first = specs[0]
row = {**aot.identity(first, first.archs[0]), "registers": 123, "spill_stores": 0, "spill_loads": 0,
       "shared_static": 0, "shared_bytes": 4096, "tensor_core": "HMMA", "ctas_per_sm": 1, "occupancy_limit": "x",
       "loop_body": {}, "kernel_mix": {}, "inner_mix": {}, "epilogue_mix": {},
       "specialised": {}, "error": "", "cache_key": keys[f"{aot.spec_dtype(first)}/{first.variant}@{first.archs[0]}"]}
aot_cache.write_committed(aot_cache.Path(os.environ["SDKERNELS_AOT_MEASUREMENTS"]), [row])
hit = aot.compile_spec(first, first.archs[0], cache_only=True)
print(json.dumps({"runs": runs, "hit": [hit.registers, hit.cache_source]}))
"""


def _keys(tmp_path: Path, root: Path, runs: list[tuple[Path, Path | None]]) -> dict:
    environment = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(root)}
    environment["SDKERNELS_AOT_MEASUREMENTS"] = str(tmp_path / f"{root.name}.json")
    environment["SDKERNELS_AOT_CACHE"] = str(tmp_path / f"{root.name}-cache")
    argument = json.dumps([[str(source), None if lib is None else str(lib)] for source, lib in runs])
    done = subprocess.run(
        [sys.executable, "-c", _KEYS_SCRIPT, argument], env=environment, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_key_is_portable_and_changes_with_what_is_compiled(tmp_path: Path) -> None:
    here = _keys(tmp_path, REPO, [(REPO / "tests" / "test_compile_report.py", None)])
    assert here["hit"] == [123, "committed"], "compile_spec must take a committed measurement before compiling"
    assert not (tmp_path / f"{REPO.name}-cache").exists(), "a committed hit writes nothing"
    [keys] = here["runs"]
    assert len(set(keys.values())) == len(keys), "each build has its own key"

    # A clone in another directory with libdevice at another path (CI's venv lives under a random temp directory),
    # the same libdevice with one byte more, and the clone's kernel source edited (same module name, so only the
    # source differs).
    clone = tmp_path / "somewhere" / "else"
    shutil.copytree(REPO / "sdkernels", clone / "sdkernels", ignore=shutil.ignore_patterns("__pycache__"))
    import triton

    libdevice = Path(triton.__file__).parent / "backends" / "nvidia" / "lib" / "libdevice.10.bc"
    moved, modified = tmp_path / "venv-elsewhere" / "libdevice.10.bc", tmp_path / "modified" / "libdevice.10.bc"
    for path, extra in ((moved, b""), (modified, b"\0")):
        path.parent.mkdir()
        path.write_bytes(libdevice.read_bytes() + extra)
    source = (REPO / "tests" / "test_compile_report.py").read_text()
    (clone / "tests").mkdir()
    (clone / "tests" / "test_compile_report.py").write_text(source)
    (clone / "edited").mkdir()
    edited_source = source.replace("acc += tl.dot(a, b)", "acc += tl.dot(a, b) * 1.0")
    assert edited_source != source
    (clone / "edited" / "test_compile_report.py").write_text(edited_source)
    runs = [(clone / "tests" / "test_compile_report.py", moved), (clone / "tests" / "test_compile_report.py", modified)]
    elsewhere, other_libdevice, edited = _keys(
        tmp_path, clone, [*runs, (clone / "edited" / "test_compile_report.py", moved)]
    )["runs"]
    assert elsewhere == keys
    assert all(other_libdevice[build] != key for build, key in keys.items())
    for build, key in keys.items():  # the matmul's builds miss, the other kernel's still hit
        assert (edited[build] != key) == ("64x64x32" in build), build


def test_committed_measurements_are_well_formed() -> None:
    path = aot_cache.committed_path()
    assert path is not None and path.is_file()
    document = json.loads(path.read_text())
    assert document["format"] == aot_cache.MEASUREMENT_FORMAT and document["measurements"]
    for key, entry in document["measurements"].items():
        assert len(key) == 64 and set(aot_cache.MEASURED_FIELDS) <= set(entry), key
        expected = resident_ctas(entry["arch"], entry["registers"], entry["shared_bytes"], entry["num_warps"])
        assert (entry["ctas_per_sm"], entry["occupancy_limit"]) == expected, key
    # one build per line, so a reseed shows in a diff as the lines of the builds that changed
    assert len(path.read_text().splitlines()) == len(document["measurements"]) + 7


def test_tests_never_write_the_aot_cache_into_the_checkout() -> None:
    assert not aot_cache.cache_dir().resolve().is_relative_to(REPO)
    assert not (REPO / "tests" / "aot_cache").exists()
    assert not Path(os.environ["HYPOTHESIS_STORAGE_DIRECTORY"]).resolve().is_relative_to(REPO)


def test_options_go_into_the_key_by_value_and_libdevice_by_content() -> None:
    options = types.SimpleNamespace(extern_libs=(("libdevice", aot_cache.__file__),), num_warps=4)
    values = aot_cache.portable_options(options)
    assert values["num_warps"] == "4" and "sha256:" in values["extern_libs"] and "/" not in values["extern_libs"]
