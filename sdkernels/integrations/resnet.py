"""ResnetBlock2D with norm1+SiLU and (temb add)+norm2+SiLU through the fused GroupNorm op.

`forward` is rebound on the instance, not the norms replaced: the block's SiLU module is shared with the temb path
(resnet.py:344), resampling sits between norm1+SiLU and conv1, and the temb bias goes in before norm2's statistics.
The body mirrors diffusers 0.42 `ResnetBlock2D.forward` step by step.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.resnet import ResnetBlock2D

from sdkernels import ops
from sdkernels._dispatch import note_fallback
from sdkernels.rules import PatchRule, bind_forward, has_hooks, restore_attributes


def _group_norm(norm: nn.GroupNorm, x: torch.Tensor, *, silu: bool, add: torch.Tensor | None = None) -> torch.Tensor:
    return ops.group_norm_silu(x, norm.num_groups, norm.weight, norm.bias, norm.eps, silu=silu, add=add)


def fused_resnet_forward(
    self: ResnetBlock2D, input_tensor: torch.Tensor, temb: torch.Tensor | None, *args, **kwargs
) -> torch.Tensor:
    if args or kwargs.get("scale") is not None:  # deprecated `scale` argument: let diffusers warn and handle it
        return type(self).forward(self, input_tensor, temb, *args, **kwargs)
    if has_hooks(self.norm1) or has_hooks(self.norm2):  # hooked after patching (offload): the norms must run as
        note_fallback("group_norm_silu", "ResnetBlock2D norms hooked after patching (offload/casting)")
        return type(self).forward(self, input_tensor, temb)  # modules so their hooks move/cast the weights

    hidden_states = _group_norm(self.norm1, input_tensor, silu=True)

    if self.upsample is not None:
        if hidden_states.shape[0] >= 64:  # upsample_nearest_nhwc fails with large batch sizes (diffusers #984)
            input_tensor = input_tensor.contiguous()
            hidden_states = hidden_states.contiguous()
        input_tensor = self.upsample(input_tensor)
        hidden_states = self.upsample(hidden_states)
    elif self.downsample is not None:
        input_tensor = self.downsample(input_tensor)
        hidden_states = self.downsample(hidden_states)

    hidden_states = self.conv1(hidden_states)

    if self.time_emb_proj is not None:
        if not self.skip_time_act:
            temb = self.nonlinearity(temb)
        temb = self.time_emb_proj(temb)  # (N, C): kept 2-D, the kernel adds it per (n, c) before the statistics

    if self.time_embedding_norm == "default":
        add = None
        if temb is not None:
            if self.time_emb_proj is not None and temb.dim() == 2:  # the per-(N, C) bias the kernel fuses
                add = temb.to(hidden_states.dtype).expand(hidden_states.shape[0], -1).contiguous()
            else:  # anything else is added the way diffusers adds it
                hidden_states = hidden_states + (temb[:, :, None, None] if self.time_emb_proj is not None else temb)
        hidden_states = _group_norm(self.norm2, hidden_states, silu=True, add=add)
    elif self.time_embedding_norm == "scale_shift":
        if temb is None:
            raise ValueError(f" `temb` should not be None when `time_embedding_norm` is {self.time_embedding_norm}")
        time_scale, time_shift = torch.chunk(temb[:, :, None, None], 2, dim=1)
        hidden_states = _group_norm(self.norm2, hidden_states, silu=False)  # modulation sits between norm and SiLU
        hidden_states = F.silu(hidden_states * (1 + time_scale) + time_shift)
    else:  # "group" (the VAE decoder) and any other string: plain norm2, temb unused
        hidden_states = _group_norm(self.norm2, hidden_states, silu=True)

    hidden_states = self.dropout(hidden_states)
    hidden_states = self.conv2(hidden_states)

    if self.conv_shortcut is not None:
        if self.training:
            input_tensor = input_tensor.contiguous()
        input_tensor = self.conv_shortcut(input_tensor)

    return (input_tensor + hidden_states) / self.output_scale_factor


def _why_not(block: ResnetBlock2D) -> str | None:
    if not isinstance(block.nonlinearity, nn.SiLU):
        return f"nonlinearity is {type(block.nonlinearity).__name__}, the fused op applies SiLU"
    for name in ("norm1", "norm2"):
        norm = getattr(block, name)
        if type(norm) is not nn.GroupNorm:
            return f"{name} is {type(norm).__name__}, not nn.GroupNorm"
        if has_hooks(norm):
            return f"{name} has forward hooks (offload/casting); a fused kernel would bypass them"
    if "forward" in block.__dict__:
        return "forward is already replaced on this instance (another library's hook or patch)"
    return None


def _apply(block: ResnetBlock2D) -> str | None:
    reason = _why_not(block)
    if reason is None:
        bind_forward(block, fused_resnet_forward)
    return reason


RESNET_BLOCK_RULE = PatchRule(
    name="resnet_block_2d",
    kind="group_norm",
    site="ResnetBlock2D",
    matches=lambda m: isinstance(m, ResnetBlock2D),
    apply=_apply,
    restore=lambda m: restore_attributes(m, "forward"),
)
