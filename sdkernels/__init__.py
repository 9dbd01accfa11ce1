"""sdkernels: Triton kernels for Stable Diffusion, patched into diffusers pipelines with one call."""

from sdkernels import ops
from sdkernels.report import PatchReport
from sdkernels.warmup import warmup

try:
    from sdkernels.patch import patch, patched, unpatch
except ModuleNotFoundError as _missing:  # the ops need only torch + triton; patching pipelines needs diffusers
    if not (_missing.name or "").startswith("diffusers"):
        raise
    _why = f"sdkernels.patch/patched/unpatch need diffusers, which is not installed ({_missing})"

    def patch(*args, **kwargs):  # type: ignore[no-redef]
        raise ModuleNotFoundError(_why)

    patched = unpatch = patch

__all__ = ["ops", "patch", "patched", "unpatch", "warmup", "PatchReport"]
__version__ = "0.1.0"
