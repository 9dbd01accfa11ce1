"""The public ops. Each is a torch custom op `torch.ops.sdkernels.<name>` (so torch.compile traces it without a
graph break and profilers show it) with a fake implementation, input checks that name the problem, and dispatch:
CUDA -> Triton kernel; CPU -> the same kernel under TRITON_INTERPRET=1, else the PyTorch reference
(sdkernels/reference.py). Shapes or dtypes a kernel does not cover take the reference path visibly
(`sdkernels._dispatch.note_fallback`). One module per op; this package re-exports them."""

from sdkernels.ops._common import KERNEL_DTYPES, MAX_HEAD_DIM
from sdkernels.ops.ada_layer_norm import ada_layer_norm
from sdkernels.ops.attention import attention, attention_kernel_problem
from sdkernels.ops.geglu import geglu, gelu_gate
from sdkernels.ops.group_norm import group_norm_silu
from sdkernels.ops.linear_gelu import linear_gelu

__all__ = [
    "KERNEL_DTYPES",
    "MAX_HEAD_DIM",
    "ada_layer_norm",
    "attention",
    "attention_kernel_problem",
    "geglu",
    "gelu_gate",
    "group_norm_silu",
    "linear_gelu",
]
