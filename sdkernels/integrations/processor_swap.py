"""What the attention rule (AttnProcessor family) and the SD3 joint-attention rule share: the bookkeeping of an
sdkernels processor that stands in for a diffusers one (`ReplacingProcessor`), and swapping a layer's processor for
it and back, restoring the original by identity (`ProcessorSwap`)."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, ClassVar

from diffusers.models.attention_processor import Attention

from sdkernels._dispatch import note_fallback


class ReplacingProcessor:
    """Base of sdkernels' processors: keeps the diffusers processor it replaced (`replaced`, a `DEFAULT()` when
    omitted; one of `REPLACES`), whether that was the fused-QKV one (`fused`), and a per-layer count of the calls
    that fell back to PyTorch (`fallbacks`, also recorded process-wide under `FALLBACK_OP`)."""

    REPLACES: ClassVar[tuple[type, ...]]
    DEFAULT: ClassVar[type]
    FUSED: ClassVar[type]
    FALLBACK_OP: ClassVar[str]

    def __init__(self, replaced: Any = None) -> None:
        replaced = self.DEFAULT() if replaced is None else replaced
        if type(replaced) not in self.REPLACES:
            raise TypeError(
                f"{type(self).__name__} replaces {[c.__name__ for c in self.REPLACES]}, not {type(replaced).__name__}"
            )
        self.replaced = replaced
        self.fused = type(replaced) is self.FUSED
        self.fallbacks: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(replaced={type(self.replaced).__name__})"

    def _fall_back(self, reason: str) -> None:
        self.fallbacks[reason] += 1
        note_fallback(self.FALLBACK_OP, reason)


@dataclass(frozen=True)
class ProcessorSwap:
    ours: type[ReplacingProcessor]  # built as ours(replaced), for the diffusers processors in ours.REPLACES
    saved_as: str  # the Attention.__dict__ entry holding (ours, replaced) while the layer is patched

    def apply(self, attn: Attention) -> str | None:
        current = attn.processor
        if type(current) not in self.ours.REPLACES:
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
