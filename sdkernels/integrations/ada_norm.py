"""SD3 / SD3.5's adaptive LayerNorms through `ops.ada_layer_norm`: `AdaLayerNormZero`, `SD35AdaLayerNormZeroX` and
`AdaLayerNormContinuous` run their forward as diffusers 0.42 writes it (`normalization.py` 96-170, 307-351), the emb
`linear` called as a module (LoRA-safe), except that `norm(x) · (1 + scale) + shift` is one fused op.

The choice is made per call: the fused op runs when `norm` is a plain, unhooked, non-affine nn.LayerNorm, x is
(B, L, dim), scale/shift are (B, dim) in x's dtype and autocast is off; otherwise the diffusers expression runs
unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.models import normalization
from diffusers.models.normalization import AdaLayerNormContinuous, AdaLayerNormZero

from sdkernels import ops
from sdkernels.rules import PatchRule, bind_forward, has_hooks, restore_attributes

Tensor = torch.Tensor


def norm_problem(norm: nn.Module) -> str | None:
    """Why the fused op cannot stand in for `norm` (None when it can)."""
    if type(norm) is not nn.LayerNorm:
        return f"norm is {type(norm).__name__}, not a plain nn.LayerNorm: the diffusers expression runs"
    if norm.weight is not None or norm.bias is not None:
        return "norm has an elementwise affine: the diffusers expression runs"
    if has_hooks(norm):
        return "norm has forward hooks: the diffusers expression runs"
    return None


def modulate(norm: nn.Module, x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """norm(x) · (1 + scale[:, None]) + shift[:, None], fused when it can be, else exactly as diffusers does it."""
    fused = (
        norm_problem(norm) is None
        and x.dim() == 3
        and scale.shape == shift.shape == (x.shape[0], x.shape[2])  # else diffusers' broadcasting decides
        and scale.dtype == shift.dtype == x.dtype
        and not (x.device.type != "meta" and torch.is_autocast_enabled(x.device.type))  # meta: no autocast
    )
    if fused:
        return ops.ada_layer_norm(x, scale, shift, norm.eps)
    return norm(x) * (1 + scale[:, None]) + shift[:, None]


def ada_layer_norm_zero_forward(
    self: AdaLayerNormZero,
    x: Tensor,
    timestep: Tensor | None = None,
    class_labels: torch.LongTensor | None = None,
    hidden_dtype: torch.dtype | None = None,
    emb: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    if self.emb is not None:
        emb = self.emb(timestep, class_labels, hidden_dtype=hidden_dtype)
    emb = self.linear(self.silu(emb))
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = emb.chunk(6, dim=1)
    x = modulate(self.norm, x, scale_msa, shift_msa)
    return x, gate_msa, shift_mlp, scale_mlp, gate_mlp


def sd35_ada_layer_norm_zero_x_forward(
    self: nn.Module, hidden_states: Tensor, emb: Tensor | None = None
) -> tuple[Tensor, ...]:
    emb = self.linear(self.silu(emb))
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, shift_msa2, scale_msa2, gate_msa2 = emb.chunk(
        9, dim=1
    )
    # Two modulations of one normalised x: two fused passes over x (each recomputes the row statistics, which is
    # cheaper than writing and re-reading the normalised tensor as diffusers does).
    if norm_problem(self.norm) is None:
        norm_hidden_states = modulate(self.norm, hidden_states, scale_msa, shift_msa)
        norm_hidden_states2 = modulate(self.norm, hidden_states, scale_msa2, shift_msa2)
    else:
        normed = self.norm(hidden_states)
        norm_hidden_states = normed * (1 + scale_msa[:, None]) + shift_msa[:, None]
        norm_hidden_states2 = normed * (1 + scale_msa2[:, None]) + shift_msa2[:, None]
    return norm_hidden_states, gate_msa, shift_mlp, scale_mlp, gate_mlp, norm_hidden_states2, gate_msa2


def ada_layer_norm_continuous_forward(
    self: AdaLayerNormContinuous, x: Tensor, conditioning_embedding: Tensor
) -> Tensor:
    emb = self.linear(self.silu(conditioning_embedding).to(x.dtype))
    scale, shift = torch.chunk(emb, 2, dim=1)
    return modulate(self.norm, x, scale, shift)


_FORWARDS = {
    AdaLayerNormZero: ada_layer_norm_zero_forward,
    AdaLayerNormContinuous: ada_layer_norm_continuous_forward,
}
# SD3.5's dual-attention norm exists from diffusers 0.31 on; older releases have no SD3.5 blocks to patch.
if hasattr(normalization, "SD35AdaLayerNormZeroX"):
    _FORWARDS[normalization.SD35AdaLayerNormZeroX] = sd35_ada_layer_norm_zero_x_forward


def _apply(module: nn.Module) -> str | None:
    if "forward" in module.__dict__:
        return "forward is already replaced on this instance"
    problem = norm_problem(module.norm)
    if problem is not None:
        return problem.removesuffix(": the diffusers expression runs")
    bind_forward(module, _FORWARDS[type(module)])
    return None


ADA_LAYER_NORM_RULE = PatchRule(
    name="ada_layer_norm",
    kind="ada_layer_norm",
    site="AdaLayerNorm (SD3)",
    matches=lambda m: type(m) in _FORWARDS,
    apply=_apply,
    restore=restore_attributes,
)
