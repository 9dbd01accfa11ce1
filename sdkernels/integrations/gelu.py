"""diffusers `GELU` (the first layer of `FeedForward(activation_fn="gelu" | "gelu-approximate")`: SD3's feed-forwards
use the tanh form) through one fused GEMM (`ops.linear_gelu`) when `proj` is a plain, unhooked nn.Linear, else
`proj(x)` called as a module (LoRA/PEFT, offload hooks, quantised layers keep working) followed by diffusers' own
`self.gelu` — PyTorch's GELU is already one elementwise pass, so there is nothing left to fuse there. The choice is
made per call, as for GEGLU, so an adapter added after patching is honoured."""

from __future__ import annotations

import torch
from diffusers.models.activations import GELU

from sdkernels import ops
from sdkernels.integrations.geglu import fused_gemm_applies
from sdkernels.ops.linear_gelu import APPROXIMATIONS
from sdkernels.rules import PatchRule, bind_forward, has_hooks, restore_attributes


def fused_gelu_forward(self: GELU, hidden_states: torch.Tensor) -> torch.Tensor:
    if fused_gemm_applies(self.proj, hidden_states) and self.approximate in APPROXIMATIONS:
        return ops.linear_gelu(hidden_states, self.proj.weight, self.proj.bias, self.approximate)
    return self.gelu(self.proj(hidden_states))


def _apply(module: GELU) -> str | None:
    if "forward" in module.__dict__:
        return "forward is already replaced on this instance"
    if module.approximate not in APPROXIMATIONS:
        return f"approximate={module.approximate!r} is not one of {APPROXIMATIONS}"
    bind_forward(module, fused_gelu_forward)
    return None


def _detail(module: GELU) -> str:
    if type(module.proj) is torch.nn.Linear and not has_hooks(module.proj):
        return ""
    return f"proj is {type(module.proj).__name__}: runs proj(x) as a module, then F.gelu"


GELU_RULE = PatchRule(
    name="linear_gelu",
    kind="linear_gelu",
    site="GELU (feed-forward)",
    matches=lambda m: isinstance(m, GELU),
    apply=_apply,
    restore=restore_attributes,
    detail=_detail,
)
