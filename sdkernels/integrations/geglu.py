"""diffusers GEGLU through one fused GEMM (`ops.geglu`) when `proj` is a plain, unhooked nn.Linear, else through
`proj(x)` called as a module (LoRA/PEFT, offload hooks, quantised layers keep working) followed by the one-pass
`ops.gelu_gate`. The choice is made per call, so an adapter added after patching is honoured."""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.models.activations import GEGLU

from sdkernels import ops
from sdkernels.rules import PatchRule, bind_forward, has_hooks, restore_attributes


def fused_gemm_applies(proj: nn.Module, x: torch.Tensor) -> bool:
    return (
        type(proj) is nn.Linear
        and not has_hooks(proj)
        and proj.weight.dtype == x.dtype
        and not (x.device.type != "meta" and torch.is_autocast_enabled(x.device.type))  # meta: no autocast
    )


def fused_geglu_forward(self: GEGLU, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    if args or kwargs.get("scale") is not None:  # deprecated `scale` argument: let diffusers warn and handle it
        return type(self).forward(self, hidden_states, *args, **kwargs)
    if fused_gemm_applies(self.proj, hidden_states):
        return ops.geglu(hidden_states, self.proj.weight, self.proj.bias)
    return ops.gelu_gate(self.proj(hidden_states))


def _apply(module: GEGLU) -> str | None:
    if "forward" in module.__dict__:
        return "forward is already replaced on this instance"
    bind_forward(module, fused_geglu_forward)
    return None


def _detail(module: GEGLU) -> str:
    if type(module.proj) is nn.Linear and not has_hooks(module.proj):
        return ""
    return f"proj is {type(module.proj).__name__}: runs proj(x) as a module, then the fused gelu_gate"


GEGLU_RULE = PatchRule(
    name="geglu",
    kind="geglu",
    site="GEGLU",
    matches=lambda m: isinstance(m, GEGLU),
    apply=_apply,
    restore=lambda m: restore_attributes(m, "forward"),
    detail=_detail,
)
