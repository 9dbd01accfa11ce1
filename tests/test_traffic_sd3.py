"""The SD3 traffic rows (sdkernels/tools/traffic_sd3.py) against the bytes the kernels really load and store under
the interpreter, and the SD3 / SD3.5 shape tables (sdkernels/tools/sd3_shapes.py) against a meta-device forward of
diffusers' SD3Transformer2DModel built from the published configs."""

from __future__ import annotations

import collections

import pytest
import torch
from diffusers import SD3Transformer2DModel
from diffusers.models.activations import GELU
from diffusers.models.attention_processor import Attention
from diffusers.models.normalization import AdaLayerNormContinuous, AdaLayerNormZero, SD35AdaLayerNormZeroX

from sdkernels import ops
from sdkernels.tools import sd3_shapes, traffic_sd3
from tests.byte_counter import count_bytes


@pytest.mark.parametrize("batch, tokens, dim", [(2, 37, 1536), (1, 5, 2432)])
def test_ada_layer_norm_bytes(batch: int, tokens: int, dim: int) -> None:
    x = torch.randn(batch, tokens, dim, dtype=torch.float16)
    scale, shift = torch.randn(batch, dim, dtype=torch.float16), torch.randn(batch, dim, dtype=torch.float16)
    with count_bytes() as counter:
        out = ops.ada_layer_norm(x, scale, shift)
    measured = counter.by_tensor({"x": x, "scale": scale, "shift": shift, "out": out})
    shape = sd3_shapes.SD3OpShape("test", "ada_layer_norm", "t", batch, tokens, dim, dim, 1)
    assert measured.pop("other") == 0
    assert measured == traffic_sd3.ada_layer_norm_traffic(shape, "fp16").ours


@pytest.mark.parametrize("rows, dim, out_features", [(70, 128, 512), (130, 72, 100)])
def test_linear_gelu_bytes(rows: int, dim: int, out_features: int) -> None:
    x = torch.randn(rows, dim, dtype=torch.float16)
    weight = torch.randn(out_features, dim, dtype=torch.float16) / dim**0.5
    bias = torch.randn(out_features, dtype=torch.float16)
    with count_bytes() as counter:
        out = ops.linear_gelu(x, weight, bias)
    measured = counter.by_tensor({"x": x, "weight": weight, "bias": bias, "out": out})
    shape = sd3_shapes.SD3OpShape("test", "linear_gelu", "t", 1, rows, dim, out_features, 1)
    assert measured.pop("other") == 0
    assert measured == traffic_sd3.linear_gelu_traffic(shape, "fp16").ours


def _census(transformer: torch.nn.Module) -> collections.Counter[tuple[str, int, int]]:
    """(op, tokens per sample, width or heads) -> calls, from hooks on the modules sdkernels patches."""
    seen: collections.Counter[tuple[str, int, int]] = collections.Counter()

    def attention(module, args, kwargs) -> None:
        context = kwargs.get("encoder_hidden_states")
        tokens = kwargs["hidden_states"].shape[1] + (0 if context is None else context.shape[1])
        seen[("attention", tokens, module.heads)] += 1

    def modulation(module, args, kwargs) -> None:
        x = args[0] if args else kwargs.get("x", kwargs.get("hidden_states"))
        calls = 2 if isinstance(module, SD35AdaLayerNormZeroX) else 1
        seen[("ada_layer_norm", x.shape[1], x.shape[2])] += calls

    def feed_forward(module, args, kwargs) -> None:
        seen[("linear_gelu", args[0].shape[1], module.proj.out_features)] += 1

    for module in transformer.modules():
        if isinstance(module, Attention):
            module.register_forward_pre_hook(attention, with_kwargs=True)
        elif isinstance(module, AdaLayerNormZero | SD35AdaLayerNormZeroX | AdaLayerNormContinuous):
            module.register_forward_pre_hook(modulation, with_kwargs=True)
        elif isinstance(module, GELU):
            module.register_forward_pre_hook(feed_forward, with_kwargs=True)
    return seen


@pytest.mark.parametrize("model", ["sd35m"])  # sd3m / sd35l: the same code without attn2 (7 s more each)
def test_sd3_shapes_match_a_meta_forward_of_diffusers(model: str) -> None:
    with torch.device("meta"):
        transformer = SD3Transformer2DModel(**sd3_shapes.SD3_TRANSFORMER_CONFIGS[model])
        seen = _census(transformer)
        batch, text = sd3_shapes.CFG_BATCH, sd3_shapes.TEXT_TOKENS
        with torch.no_grad():
            transformer(
                hidden_states=torch.randn(batch, 16, 128, 128),
                encoder_hidden_states=torch.randn(batch, text, 4096),
                pooled_projections=torch.randn(batch, 2048),
                timestep=torch.ones(batch),
            )
    table: collections.Counter[tuple[str, int, int]] = collections.Counter()
    for shape in sd3_shapes.sd3_shapes(model, 1024):
        table[(shape.op, shape.tokens, shape.out)] += shape.calls
    assert seen == table
