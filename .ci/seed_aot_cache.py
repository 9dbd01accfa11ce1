"""Copy the ahead-of-time compile measurements of every *currently shipped* kernel configuration from the local
cache into tests/aot_cache (committed), so CI's compile-report gate does not recompile ~900 unchanged configurations
on 2 cores. Entries are keyed by the kernel's source hash, the spec, the arch, the triton version and aot.py's own
source: any change to a kernel makes its entries miss and CI compiles it afresh. Missing entries are compiled here.

Usage: python .ci/seed_aot_cache.py
"""

import os
import shutil
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"
REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "tests" / "aot_cache"

from sdkernels.tools import aot, compile_report  # noqa: E402

specs = [
    s for p in compile_report.DEFAULT_PROVIDERS if isinstance(s_ := compile_report.load_specs(p), list) for s in s_
]
local = aot.cache_dir()
SEED.mkdir(parents=True, exist_ok=True)
wanted = set()
for spec in specs:
    for arch in spec.archs:
        bound = aot.bind_like_jit(spec, aot.GPUTarget("cuda", arch, 32))
        name = f"{aot._cache_key(spec, arch, bound)}.json"
        wanted.add(name)
        if not (SEED / name).exists():
            if not (local / name).exists() and "--copy-only" not in sys.argv:
                aot.compile_spec(spec, arch)
            if (local / name).exists():
                shutil.copy(local / name, SEED / name)
for stale in SEED.glob("*.json"):
    if stale.name not in wanted:
        stale.unlink()
have = sum((SEED / n).exists() for n in wanted)
print(f"{have} of {len(wanted)} measurements in {SEED}", file=sys.stderr)
