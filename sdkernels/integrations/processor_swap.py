"""Swapping an `Attention` layer's processor for an sdkernels one and back, restoring the original by identity:
shared by the attention rule (AttnProcessor family) and the SD3 joint-attention rule."""

from __future__ import annotations

from dataclasses import dataclass

from diffusers.models.attention_processor import Attention


@dataclass(frozen=True)
class ProcessorSwap:
    ours: type  # the sdkernels processor class, built as ours(replaced); it keeps the original as `.replaced`
    replaced: tuple[type, ...]  # the diffusers processor classes it takes over
    saved_as: str  # the Attention.__dict__ entry holding (ours, replaced) while the layer is patched

    def apply(self, attn: Attention) -> str | None:
        current = attn.processor
        if type(current) not in self.replaced:
            return f"processor {type(current).__name__} is not one sdkernels replaces"
        ours = self.ours(current)  # one per layer, even where diffusers shares one processor object
        attn.__dict__[self.saved_as] = (ours, current)
        attn.set_processor(ours)
        return None

    def restore(self, attn: Attention) -> None:
        ours, replaced = attn.__dict__.pop(self.saved_as, (None, None))
        current = attn.processor
        if ours is not None and current is ours:
            attn.set_processor(replaced)
        elif isinstance(current, self.ours):
            # an earlier sdkernels processor put back by diffusers: unfuse_qkv_projections() restores the processors
            # saved by fuse_qkv_projections(), which were ours if the model was patched before fusing
            attn.set_processor(current.replaced)
        # any other processor was set by the user after patching: it stays
