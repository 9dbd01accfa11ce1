"""Test set-up: run the real Triton kernels on CPU through the interpreter, offline, poisoned outputs."""

import os

# Triton reads TRITON_INTERPRET when it is imported, so this must come before anything imports triton.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("SDKERNELS_POISON_OUTPUTS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# AOT compile measurements of the shipped kernel configs (.ci/seed_aot_cache.py): keyed by kernel source, spec,
# arch and triton version, so only configs whose kernel changed are compiled again by the resource-gate test.
os.environ.setdefault("SDKERNELS_AOT_CACHE", os.path.join(os.path.dirname(__file__), "aot_cache"))

import pytest  # noqa: E402
import torch  # noqa: E402

from sdkernels.testing.interpreter import apply_interpreter_fixes  # noqa: E402

apply_interpreter_fixes()  # bf16 right under the interpreter (and faster helper calls)

# One thread: the interpreter's timings swing 2 s -> 15 s with default threading on 2 cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
