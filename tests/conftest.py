"""Test set-up: run the real Triton kernels on CPU through the interpreter, offline, poisoned outputs."""

import os

# Triton reads TRITON_INTERPRET when it is imported, so this must come before anything imports triton.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("SDKERNELS_POISON_OUTPUTS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The committed AOT compile measurements (read only; .ci/seed_aot_cache.py writes them): the resource-gate test
# compiles only the builds whose kernel changed since. Those go to the user's cache (~/.cache/sdkernels/aot or
# $SDKERNELS_AOT_CACHE), never into the checkout.
os.environ.setdefault("SDKERNELS_AOT_MEASUREMENTS", os.path.join(os.path.dirname(__file__), "aot_measurements.json"))
# hypothesis keeps its example database and source-constant cache in ./.hypothesis by default: not in the checkout.
_USER_CACHE = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(_USER_CACHE, "sdkernels", "hypothesis"))

import pytest  # noqa: E402
import torch  # noqa: E402

from sdkernels.testing.interpreter import apply_interpreter_fixes  # noqa: E402

apply_interpreter_fixes()  # bf16 right under the interpreter (and faster helper calls)

# One thread: the interpreter's timings swing 2 s -> 15 s with default threading on 2 cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def group_norm_gpu_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run NCHW GroupNorm on the fixed tiles a GPU launches (not the interpreter-only packed tiles the pipelines tests
    use), for the tests of the kernel's GPU geometry and of the bytes it moves: `pytest.mark.usefixtures(...)`."""
    from sdkernels.kernels import group_norm  # here, not above: conftest's imports stay what every test needs

    monkeypatch.setattr(group_norm, "PACK_NCHW_WHEN_INTERPRETED", False)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
