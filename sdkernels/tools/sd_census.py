"""How the tables of sdkernels.tools.sd_shapes were measured: hooks on every GroupNorm, GEGLU and Attention module
during a forward (e.g. a meta-device forward of a diffusers 0.42.1 model built from sdkernels.tools.sd_model_configs);
tests/test_sd_shapes.py re-measures and compares."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from sdkernels.tools.sd_shapes import AttentionShape, GegluShape, GroupNormShape


def census(
    model: str, module: Any, run: Callable[[], object], component: str | None = None
) -> tuple[list[GroupNormShape], list[GegluShape], list[AttentionShape]]:
    """Run `run()` (a forward of `module`, e.g. built on the meta device) with hooks on every GroupNorm, GEGLU and
    Attention module; return the distinct calls in sd_shapes' table format. Its tables are this function's output.
    component: "unet", or None for an AutoencoderKL ("vae.encoder" / "vae.decoder" from the module path)."""
    import torch

    counts: dict[str, Counter] = {"gn": Counter(), "geglu": Counter(), "attention": Counter()}
    blocks: dict[tuple, list[str]] = {}
    handles = []
    for name, sub in module.named_modules():
        parts = name.split(".")
        part = component or f"vae.{parts[0]}"
        if isinstance(sub, torch.nn.GroupNorm):

            def on_gn(mod, args, kwargs, name=name, part=part):
                x = args[0]
                silu = name.endswith(("norm1", "norm2", "conv_norm_out"))  # ResnetBlock2D, encoder/decoder end
                add = silu and name.endswith("norm2") and part == "unet"  # the UNet's resnets add temb first
                counts["gn"][
                    (part, x.shape[0], x.shape[1], tuple(x.shape[2:]), silu, add, mod.eps, mod.num_groups)
                ] += 1

            handles.append(sub.register_forward_pre_hook(on_gn, with_kwargs=True))
        elif type(sub).__name__ == "GEGLU":

            def on_geglu(mod, args, kwargs):
                x = args[0]
                counts["geglu"][(x.shape[0], x.shape[1], x.shape[2], mod.proj.out_features // 2)] += 1

            handles.append(sub.register_forward_pre_hook(on_geglu, with_kwargs=True))
        elif type(sub).__name__ == "Attention":
            if component is None:  # "encoder.mid_block.attentions.0"
                block = parts[1]
            else:  # "down_blocks.1.attentions.0.transformer_blocks.0.attn1", "mid_block.attentions.0...."
                block = ".".join(parts[:2]) if parts[0] in ("down_blocks", "up_blocks") else parts[0]

            def on_attention(mod, args, kwargs, part=part, block=block):
                x = kwargs.get("hidden_states", args[0] if args else None)
                context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
                tokens = x.shape[2] * x.shape[3] if x.dim() == 4 else x.shape[1]
                key = (
                    part,
                    "self" if context is None else "cross",
                    x.shape[0],
                    mod.heads,
                    mod.inner_dim // mod.heads,
                    tokens,
                    tokens if context is None else context.shape[1],
                )
                counts["attention"][key] += 1
                where = blocks.setdefault(key, [])
                if block not in where:
                    where.append(block)

            handles.append(sub.register_forward_pre_hook(on_attention, with_kwargs=True))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return (
        [
            GroupNormShape(model, p, b, c, sp, silu, add, eps, n, g)
            for (p, b, c, sp, silu, add, eps, g), n in counts["gn"].items()
        ],
        [GegluShape(model, b, t, d, i, n) for (b, t, d, i), n in counts["geglu"].items()],
        [AttentionShape(model, key[0], "+".join(blocks[key]), *key[1:], n) for key, n in counts["attention"].items()],
    )
