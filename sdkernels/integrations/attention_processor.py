"""diffusers `Attention` through `sdkernels.attention`: `SdkernelsAttnProcessor` takes over from the three processors
SD/SDXL UNets, ControlNets and the VAE use — `AttnProcessor2_0` (the default), `FusedAttnProcessor2_0` (after
`fuse_qkv_projections()`) and the classic `AttnProcessor` (after `set_default_attn_processor()`) — and does every
step they do, in their order (diffusers 0.42 `attention_processor.py:1103-1172, 2696-2787, 3668-3767`). Only the
softmax(q kᵀ) v core changes: one fp32-accumulating flash-attention op on the (B, H, L, D) views, no copies.

Every projection and norm is called as a module, so LoRA/PEFT layers and offload hooks keep working. Where the
kernel does not cover a case, the processor computes that core with `F.scaled_dot_product_attention` (or hands the
whole call to the processor it replaced) and records why: `note_fallback("attention_processor", reason)` and
`processor.fallbacks`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0, FusedAttnProcessor2_0
from diffusers.utils import deprecate

from sdkernels import ops
from sdkernels.integrations.joint_attention import is_joint_attention
from sdkernels.integrations.processor_swap import ProcessorSwap, ReplacingProcessor
from sdkernels.rules import PatchRule, has_hooks

ReplacedProcessor = AttnProcessor | AttnProcessor2_0 | FusedAttnProcessor2_0
REPLACED_PROCESSORS: tuple[type, ...] = (AttnProcessor, AttnProcessor2_0, FusedAttnProcessor2_0)
# attn.__dict__ entry: (the SdkernelsAttnProcessor set by the patch rule, the processor object it replaced)
_ORIGINAL = "_sdkernels_replaced_processor"
# The message every diffusers processor gives for the deprecated positional args / `scale` keyword.
_SCALE_DEPRECATION = (
    "The `scale` argument is deprecated and will be ignored. Please remove it, as passing it will raise an error in "
    "the future. `scale` should directly be passed while calling the underlying pipeline component i.e., via "
    "`cross_attention_kwargs`."
)


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _additive_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """The additive form of an SDPA `attn_mask`: float masks are added as they are; a bool mask keeps True
    (0) and drops False (-inf), which is how `F.scaled_dot_product_attention` reads it."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


class SdkernelsAttnProcessor(ReplacingProcessor):
    """A diffusers attention processor running the core of `replaced` (an AttnProcessor2_0, FusedAttnProcessor2_0
    or AttnProcessor; AttnProcessor2_0 when omitted) through `sdkernels.ops.attention`.

    It keeps the replaced behaviour exactly: the fused `to_qkv` / `to_kv` projections only when it replaced a
    FusedAttnProcessor2_0 (`unfuse_qkv_projections()` leaves `to_qkv` and `fused_projections=True` behind while
    going back to the unfused processor, so the flag alone would mislead), and the scale the replaced processor
    uses: SDPA's 1/sqrt(head_dim) for the 2_0 processors, `attn.scale` for the classic one.
    """

    REPLACES = REPLACED_PROCESSORS
    DEFAULT = AttnProcessor2_0
    FUSED = FusedAttnProcessor2_0
    FALLBACK_OP = "attention_processor"

    def __init__(self, replaced: ReplacedProcessor | None = None) -> None:
        super().__init__(replaced)
        self.uses_attn_scale = type(self.replaced) is AttnProcessor  # the classic one's baddbmm(alpha=attn.scale)

    def describe(self) -> str:
        if self.fused:
            return "fused QKV (replaces FusedAttnProcessor2_0)"
        if self.uses_attn_scale:
            return "replaces the classic AttnProcessor (scale = attn.scale)"
        return ""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        unexpected = sorted(k for k in kwargs if k != "scale")
        if unexpected or isinstance(encoder_hidden_states, tuple | list):
            # IP-Adapter's (text, image) tuple or keywords the replaced processor may read: run it as it was.
            self._fall_back(
                f"unexpected keyword arguments {unexpected}"
                if unexpected
                else "encoder_hidden_states is a tuple (IP-Adapter image embeddings)"
            )
            return self.replaced(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if len(args) > 0 or kwargs.get("scale", None) is not None:
            deprecate("scale", "1.0.0", _SCALE_DEPRECATION)

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            # (B·heads, 1|Lq, Lk) -> (B, heads, 1|Lq, Lk), the layout SDPA and sdkernels.attention broadcast
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = self._group_norm(attn.group_norm, hidden_states)

        query, key, value = self._project(attn, hidden_states, encoder_hidden_states)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)

        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = self._attention(attn, query, key, value, attention_mask)
        # the op's (B, H, Lq, D) output is laid out as (B, Lq, H, D): this transpose + reshape copies nothing
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)  # linear proj
        hidden_states = attn.to_out[1](hidden_states)  # dropout

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _group_norm(self, norm: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        """attn.group_norm over the channels of (B, L, C) hidden states (the VAE mid-block)."""
        reason = None
        if type(norm) is not nn.GroupNorm:
            reason = f"attn.group_norm is {type(norm).__name__}, not nn.GroupNorm"
        elif has_hooks(norm):
            reason = "attn.group_norm has forward hooks (offload/casting): called as a module"
        elif _needs_grad(hidden_states, norm.weight, norm.bias):
            reason = "autograd: sdkernels.group_norm_silu has no backward"
        elif hidden_states.device.type != "meta" and torch.is_autocast_enabled(hidden_states.device.type):
            reason = "autocast is on: attn.group_norm runs under its autocast policy"
        if reason is not None:
            self._fall_back(reason)
            return norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        # (B, C, L, 1) is contiguous for the VAE's transposed 4-D input and channels_last for a (B, L, C) input:
        # both are layouts the op reads in place.
        x = hidden_states.transpose(1, 2).unsqueeze(-1)
        x = ops.group_norm_silu(x, norm.num_groups, norm.weight, norm.bias, norm.eps, silu=False)
        return x.squeeze(-1).transpose(1, 2)

    def _project(
        self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """query, key, value as the replaced processor computes them (same modules, same order)."""
        if encoder_hidden_states is None:
            if self.fused and getattr(attn, "to_qkv", None) is not None:
                qkv = attn.to_qkv(hidden_states)
                query, key, value = torch.split(qkv, qkv.shape[-1] // 3, dim=-1)
                return query, key, value
            query = attn.to_q(hidden_states)
            encoder_hidden_states = hidden_states
        elif self.fused and getattr(attn, "to_kv", None) is not None:
            if attn.norm_cross:
                encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
            query = attn.to_q(hidden_states)
            kv = attn.to_kv(encoder_hidden_states)
            key, value = torch.split(kv, kv.shape[-1] // 2, dim=-1)
            return query, key, value
        else:
            query = attn.to_q(hidden_states)
            if attn.norm_cross:
                encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        return query, attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)

    def _kernel_problem(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
    ) -> str | None:
        if not query.dtype == key.dtype == value.dtype:
            return f"query, key, value dtypes differ ({query.dtype}, {key.dtype}, {value.dtype})"
        head_dim_problem = ops.attention_kernel_problem(query, None)
        if head_dim_problem is not None:
            return head_dim_problem
        if key.shape[2] == 0:
            return "no keys"
        if _needs_grad(query, key, value, mask):
            return "gradients needed: SDPA has a fused backward, sdkernels.attention differentiates its reference"
        if mask is not None:
            if not (mask.is_floating_point() or mask.dtype == torch.bool):
                return f"attention mask of dtype {mask.dtype}"
            target = (*query.shape[:3], key.shape[2])
            try:
                broadcasts = torch.broadcast_shapes(mask.shape, target) == target
            except RuntimeError:
                broadcasts = False
            if not broadcasts:
                return f"attention mask of shape {tuple(mask.shape)} does not broadcast to (B, H, Lq, Lk)"
        return None

    def _attention(
        self, attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        # AttnProcessor2_0 / Fused leave the scale to SDPA (1/sqrt(head_dim)); the classic processor uses attn.scale.
        scale = attn.scale if self.uses_attn_scale else None
        problem = self._kernel_problem(query, key, value, mask)
        if problem is None:
            return ops.attention(query, key, value, scale=scale, attn_bias=_additive_bias(mask, query.dtype))
        self._fall_back(problem)
        return F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False, scale=scale
        )


# ------------------------------------------------------------------------------------------------- patch rule
_SWAP = ProcessorSwap(SdkernelsAttnProcessor, _ORIGINAL)
_apply = _SWAP.apply
_restore = _SWAP.restore


def _detail(attn: Attention) -> str:
    processor = attn.processor
    return processor.describe() if isinstance(processor, SdkernelsAttnProcessor) else ""


ATTENTION_PROCESSOR_RULE = PatchRule(
    name="attention_processor",
    kind="attention",
    site="Attention",
    matches=lambda m: isinstance(m, Attention) and not is_joint_attention(m),  # SD3's: JOINT_ATTENTION_RULE
    apply=_apply,
    restore=_restore,
    detail=_detail,
    is_active=lambda m: isinstance(m.processor, SdkernelsAttnProcessor),
)
