"""SD3 / SD3.5 joint attention through `sdkernels.attention`: `SdkernelsJointAttnProcessor` takes over from
`JointAttnProcessor2_0` (SD3Transformer2DModel's processor) and `FusedJointAttnProcessor2_0` (after
`fuse_qkv_projections()`) and does every step they do, in their order (diffusers 0.42 `attention_processor.py`
1422-1505 and 1829-1905): image projections, optional QK RMSNorm (`norm_q`, `norm_k`), context projections and
their norms (`norm_added_q`, `norm_added_k`), concatenation of image and text tokens along the sequence,
attention, the split back, `to_out` and (unless `context_pre_only`) `to_add_out`. The dual-attention `attn2` of
SD3.5 is the same processor without a context stream. Only softmax(q kᵀ) v changes: one fp32-accumulating flash
attention over the joint sequence (Lq = Lk = image + text tokens, head dim 64, no mask).

Every projection and norm is called as a module, so LoRA/PEFT layers and offload hooks keep working. The fused
processor of diffusers 0.42 applies no QK norm (it never calls norm_q/norm_k); this one does what it does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, FusedJointAttnProcessor2_0, JointAttnProcessor2_0

from sdkernels import ops
from sdkernels.integrations.processor_swap import ProcessorSwap, ReplacingProcessor
from sdkernels.rules import PatchRule

ReplacedJointProcessor = JointAttnProcessor2_0 | FusedJointAttnProcessor2_0
REPLACED_JOINT_PROCESSORS: tuple[type, ...] = (JointAttnProcessor2_0, FusedJointAttnProcessor2_0)
# attn.__dict__ entry: (the SdkernelsJointAttnProcessor set by the rule, the processor object it replaced)
_ORIGINAL = "_sdkernels_replaced_joint_processor"


def _heads(t: torch.Tensor, batch: int, heads: int, head_dim: int) -> torch.Tensor:
    return t.view(batch, -1, heads, head_dim).transpose(1, 2)


class SdkernelsJointAttnProcessor(ReplacingProcessor):
    """A diffusers joint attention processor running the core of `replaced` (JointAttnProcessor2_0 or
    FusedJointAttnProcessor2_0; JointAttnProcessor2_0 when omitted) through `sdkernels.ops.attention`."""

    REPLACES = REPLACED_JOINT_PROCESSORS
    DEFAULT = JointAttnProcessor2_0
    FUSED = FusedJointAttnProcessor2_0
    FALLBACK_OP = "joint_attention_processor"

    def __init__(self, replaced: ReplacedJointProcessor | None = None) -> None:
        super().__init__(replaced)

    def describe(self) -> str:
        return "fused QKV (replaces FusedJointAttnProcessor2_0)" if self.fused else ""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        unusual = None
        if hidden_states.ndim != 3 or (encoder_hidden_states is not None and encoder_hidden_states.ndim != 3):
            unusual = "4-D hidden states"
        elif self.fused and encoder_hidden_states is None:
            unusual = "fused processor without encoder_hidden_states"
        if unusual is not None:  # what diffusers does with these (including its errors) is kept as it is
            self._fall_back(unusual)
            return self.replaced(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        # Both replaced processors ignore attention_mask and extra arguments; so does this one.
        residual_len = hidden_states.shape[1]
        batch_size = hidden_states.shape[0] if encoder_hidden_states is None else encoder_hidden_states.shape[0]
        query, key, value, head_dim = self._project(attn, hidden_states, encoder_hidden_states, batch_size)

        hidden_states = self._attention(query, key, value)
        # the op's (B, H, L, D) output is laid out as (B, L, H, D): this transpose + reshape copies nothing
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        if encoder_hidden_states is not None:
            hidden_states, encoder_hidden_states = hidden_states[:, :residual_len], hidden_states[:, residual_len:]
            if not attn.context_pre_only:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        hidden_states = attn.to_out[0](hidden_states)  # linear proj
        hidden_states = attn.to_out[1](hidden_states)  # dropout
        if encoder_hidden_states is not None:
            return hidden_states, encoder_hidden_states
        return hidden_states

    def _project(
        self, attn: Attention, hidden_states: torch.Tensor, context: torch.Tensor | None, batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(B, H, L_image + L_text, D) query, key, value as the replaced processor builds them, and the head dim."""
        if self.fused:  # to_qkv / to_added_qkv, concatenated before the head split, no QK norm (diffusers 0.42)
            qkv = attn.to_qkv(hidden_states)
            query, key, value = torch.split(qkv, qkv.shape[-1] // 3, dim=-1)
            context_qkv = attn.to_added_qkv(context)
            c_query, c_key, c_value = torch.split(context_qkv, context_qkv.shape[-1] // 3, dim=-1)
            pairs = ((query, c_query), (key, c_key), (value, c_value))
            query, key, value = (torch.cat([image, text], dim=1) for image, text in pairs)
            head_dim = key.shape[-1] // attn.heads
            split = (_heads(t, batch_size, attn.heads, head_dim) for t in (query, key, value))
            return (*split, head_dim)

        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (_heads(t, batch_size, attn.heads, head_dim) for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if context is None:
            return query, key, value, head_dim

        c_query, c_key, c_value = (
            _heads(proj(context), batch_size, attn.heads, head_dim)
            for proj in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
        )
        if attn.norm_added_q is not None:
            c_query = attn.norm_added_q(c_query)
        if attn.norm_added_k is not None:
            c_key = attn.norm_added_k(c_key)
        query = torch.cat([query, c_query], dim=2)
        key = torch.cat([key, c_key], dim=2)
        value = torch.cat([value, c_value], dim=2)
        return query, key, value, head_dim

    def _kernel_problem(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> str | None:
        if not query.dtype == key.dtype == value.dtype:
            return f"query, key, value dtypes differ ({query.dtype}, {key.dtype}, {value.dtype})"
        head_dim_problem = ops.attention_kernel_problem(query, None)
        if head_dim_problem is not None:
            return head_dim_problem
        if key.shape[2] == 0:
            return "no keys"
        if torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value)):
            return "gradients needed: SDPA has a fused backward, sdkernels.attention differentiates its reference"
        return None

    def _attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        problem = self._kernel_problem(query, key, value)
        if problem is None:
            return ops.attention(query, key, value)
        self._fall_back(problem)
        return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)


# ------------------------------------------------------------------------------------------------- patch rule
def is_joint_attention(module: torch.nn.Module) -> bool:
    """An Attention layer run by a joint (SD3-style MMDiT) processor, ours or diffusers'. The generic attention rule
    leaves these to this one."""
    if not isinstance(module, Attention):
        return False
    processor = getattr(module, "processor", None)
    return isinstance(processor, SdkernelsJointAttnProcessor) or "Joint" in type(processor).__name__


_SWAP = ProcessorSwap(SdkernelsJointAttnProcessor, _ORIGINAL)
_apply = _SWAP.apply
_restore = _SWAP.restore


def _detail(attn: Attention) -> str:
    processor = attn.processor
    if not isinstance(processor, SdkernelsJointAttnProcessor):
        return ""
    parts = [processor.describe()] if processor.describe() else []
    if attn.norm_q is not None:
        parts.append(
            "QK norm skipped, as diffusers' fused processor does"
            if processor.fused
            else f"QK {type(attn.norm_q).__name__} runs as diffusers modules (not fused into the attention kernel)"
        )
    return "; ".join(parts)


JOINT_ATTENTION_RULE = PatchRule(
    name="joint_attention_processor",
    kind="attention",
    site="Attention (joint, SD3)",
    matches=is_joint_attention,
    apply=_apply,
    restore=_restore,
    detail=_detail,
    is_active=lambda m: isinstance(m.processor, SdkernelsJointAttnProcessor),
)
