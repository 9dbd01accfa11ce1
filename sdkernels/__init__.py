"""sdkernels: Triton kernels for Stable Diffusion, patched into diffusers pipelines with one call."""

from sdkernels import ops
from sdkernels.patch import patch, patched, unpatch
from sdkernels.report import PatchReport
from sdkernels.warmup import warmup

__all__ = ["ops", "patch", "patched", "unpatch", "warmup", "PatchReport"]
__version__ = "0.1.0"
