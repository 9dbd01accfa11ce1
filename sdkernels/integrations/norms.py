"""GroupNorm sites outside ResnetBlock2D: `conv_norm_out` + `conv_act` of the UNet and of the VAE Encoder/Decoder
(GroupNorm -> SiLU, fused), and `Transformer2DModel.norm` (GroupNorm alone).

For conv_norm_out the fused op does GroupNorm+SiLU and conv_act becomes an identity on this instance: both are
used only at that one site in these classes (diffusers internals §1.3 trap 13), and the modules themselves stay in
place, so state_dict, truthiness (`if self.conv_norm_out:`) and isinstance checks are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.models.autoencoders.vae import Decoder, Encoder
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.unets.unet_2d import UNet2DModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

from sdkernels import ops
from sdkernels.rules import PatchRule, bind_forward, has_hooks, restore_attributes

_NORM_OUT_OWNERS = (UNet2DConditionModel, UNet2DModel, Encoder, Decoder)


def group_norm_silu_forward(self: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    return ops.group_norm_silu(x, self.num_groups, self.weight, self.bias, self.eps, silu=True)


def group_norm_forward(self: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    return ops.group_norm_silu(x, self.num_groups, self.weight, self.bias, self.eps, silu=False)


def identity_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x


def _plain_group_norm_problem(name: str, norm: object) -> str | None:
    if type(norm) is not nn.GroupNorm:
        return f"{name} is {type(norm).__name__}, not nn.GroupNorm"
    if has_hooks(norm):
        return f"{name} has forward hooks (offload/casting); a fused kernel would bypass them"
    if "forward" in norm.__dict__:
        return f"{name}.forward is already replaced on this instance"
    return None


def _apply_norm_out(owner: nn.Module) -> str | None:
    norm, act = owner.conv_norm_out, owner.conv_act
    problem = _plain_group_norm_problem("conv_norm_out", norm)
    if problem is None and type(act) is not nn.SiLU:
        problem = f"conv_act is {type(act).__name__}, the fused op applies SiLU"
    if problem is None and ("forward" in act.__dict__ or has_hooks(act)):
        problem = "conv_act is hooked or already replaced"
    if problem is None and shared_activation(act):
        bind_forward(norm, group_norm_forward)  # SiLU stays in the shared conv_act, which is left untouched
    elif problem is None:
        bind_forward(norm, group_norm_silu_forward)
        bind_forward(act, identity_forward)
    return problem


def shared_activation(act: nn.Module) -> bool:
    """Older diffusers (0.30 does, 0.42 does not) return one process-wide module per name from `get_activation`
    (`ACTIVATION_FUNCTIONS`), so conv_act can be the very SiLU every ResnetBlock2D and time embedding calls; making
    it an identity would drop all of those. Such a conv_act keeps its SiLU and only the GroupNorm is fused."""
    from diffusers.models import activations

    return any(act is instance for instance in getattr(activations, "ACTIVATION_FUNCTIONS", {}).values())


def _restore_norm_out(owner: nn.Module) -> None:
    restore_attributes(owner.conv_norm_out, "forward")
    restore_attributes(owner.conv_act, "forward")


def _apply_transformer_norm(model: Transformer2DModel) -> str | None:
    problem = _plain_group_norm_problem("norm", model.norm)
    if problem is None:
        bind_forward(model.norm, group_norm_forward)
    return problem


CONV_NORM_OUT_RULE = PatchRule(
    name="conv_norm_out",
    kind="group_norm",
    site="conv_norm_out+conv_act",
    matches=lambda m: isinstance(m, _NORM_OUT_OWNERS) and getattr(m, "conv_norm_out", None) is not None,
    apply=_apply_norm_out,
    restore=_restore_norm_out,
)

TRANSFORMER_2D_NORM_RULE = PatchRule(
    name="transformer_2d_norm",
    kind="group_norm",
    site="Transformer2DModel.norm",
    matches=lambda m: isinstance(m, Transformer2DModel) and isinstance(getattr(m, "norm", None), nn.GroupNorm),
    apply=_apply_transformer_norm,
    restore=lambda m: restore_attributes(m.norm, "forward"),
)
