"""Keep `model.set_default_attn_processor()` working on a patched model.

diffusers (unet_2d_condition.py:714-721, autoencoder_kl.py) raises unless every processor is one of its own classes.
The instance-level wrapper puts the processors sdkernels replaced back, runs diffusers' method, and takes the
resulting classic `AttnProcessor`s over again, so the user gets what the method promises (the classic processor's
numerics) through the kernel.
"""

from __future__ import annotations

import torch.nn as nn
from diffusers.models.attention_processor import Attention

from sdkernels.integrations.attention_processor import SdkernelsAttnProcessor, _apply
from sdkernels.rules import PatchRule, bind_attribute, bind_method, restore_attributes

_METHOD = "set_default_attn_processor"


def set_default_attn_processor_keeping_kernels(self: nn.Module) -> None:
    patched = [
        m for m in self.modules() if isinstance(m, Attention) and isinstance(m.processor, SdkernelsAttnProcessor)
    ]
    for attn in patched:
        attn.set_processor(attn.processor.replaced)
    type(self).set_default_attn_processor(self)
    for attn in patched:
        _apply(attn)  # the attention rule's own apply: records (ours, the new classic processor) for unpatch


def _apply_wrapper(model: nn.Module) -> str | None:
    if _METHOD in model.__dict__:
        return "set_default_attn_processor is already replaced on this instance"
    bind_attribute(model, _METHOD, bind_method(model, set_default_attn_processor_keeping_kernels))
    return None


DEFAULT_PROCESSOR_RULE = PatchRule(
    name="set_default_attn_processor",
    kind="attention",
    site="set_default_attn_processor (kept working)",
    matches=lambda m: callable(getattr(type(m), "set_default_attn_processor", None)),
    apply=_apply_wrapper,
    restore=lambda m: restore_attributes(m, _METHOD),
    in_report=False,
)
