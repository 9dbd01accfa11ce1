"""SD3 / SD3.5 through `sdkernels.patch`: a tiny SD3.5-style transformer (QK RMSNorm, a dual-attention block, a
context-pre-only last block) patched vs unpatched vs fp64, sdkernels op calls per block, bit-exact unpatch,
fuse_qkv_projections() before and after patching, LoRA before and after patching, torch.compile(fullgraph=True)."""

from __future__ import annotations

import collections
import copy
import pickle

import pytest
import torch
import torch._dynamo
import torch.nn as nn
from diffusers.models.activations import GELU
from diffusers.models.attention import JointTransformerBlock
from diffusers.models.attention_processor import Attention, FusedJointAttnProcessor2_0, JointAttnProcessor2_0
from diffusers.models.normalization import AdaLayerNormZero
from peft import LoraConfig
from peft.tuners.lora import LoraLayer

import sdkernels
from sdkernels.integrations.joint_attention import SdkernelsJointAttnProcessor
from sdkernels.testing.tiny import run_pipeline
from sdkernels.testing.tiny.components import seeded
from sdkernels.testing.tiny.sd3 import make_sd3_pipeline, make_sd3_transformer, tiny_sd3_transformer_config
from tests.dropin import in_fp64
from tests.op_counter import SdkernelsOpCounter
from tests.test_compile import _compiles_to_one_graph
from tests.tolerance import assert_matches_reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TEXT_TOKENS = 20  # 154 in SD3 without T5; fewer here for the interpreter


def sd3_inputs(model: nn.Module, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    config, generator = model.config, torch.Generator().manual_seed(seed)
    size = config.sample_size
    latents = torch.randn(1, config.in_channels, size, size, generator=generator)
    context = torch.randn(1, TEXT_TOKENS, config.joint_attention_dim, generator=generator)
    pooled = torch.randn(1, config.pooled_projection_dim, generator=generator)
    return latents.to(dtype), context.to(dtype), pooled.to(dtype), torch.tensor([700.0]).to(dtype)


def run(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    latents, context, pooled, timestep = inputs
    with torch.no_grad():
        return model(
            hidden_states=latents, encoder_hidden_states=context, pooled_projections=pooled, timestep=timestep
        ).sample


def calls_per_block(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, list[dict[str, int]]]:
    """Run `model`, counting sdkernels op calls in total and inside each JointTransformerBlock."""
    blocks = [m for m in model.modules() if isinstance(m, JointTransformerBlock)]
    per_block: list[collections.Counter[str]] = [collections.Counter() for _ in blocks]
    with SdkernelsOpCounter() as counter:
        handles = []
        for block, counts in zip(blocks, per_block, strict=True):
            handles.append(block.register_forward_pre_hook(lambda *_, c=counts: c.subtract(counter.counts)))
            handles.append(block.register_forward_hook(lambda *_, c=counts: c.update(counter.counts)))
        try:
            out = run(model, inputs)
        finally:
            for handle in handles:
                handle.remove()
    per_block_calls = [{k: v for k, v in c.items() if v} for c in per_block]
    return out, [dict(counter.counts), *per_block_calls]


# a dual-attention block (attn + attn2, SD35AdaLayerNormZeroX + AdaLayerNormZero, ff + ff_context), then a
# context-pre-only block (attn, AdaLayerNormZero + AdaLayerNormContinuous, ff), then norm_out
EXPECTED_TOTAL = {"attention": 3, "ada_layer_norm": 6, "linear_gelu": 3}
EXPECTED_BLOCKS = [
    {"attention": 2, "ada_layer_norm": 3, "linear_gelu": 2},
    {"attention": 1, "ada_layer_norm": 2, "linear_gelu": 1},
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_patched_sd3_transformer_matches_fp64_and_unpatches_exactly(dtype: torch.dtype) -> None:
    model = make_sd3_transformer().to(dtype)
    inputs = sd3_inputs(model, dtype)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    processors = dict(model.attn_processors)
    unpatched = run(model, inputs)
    fp64 = in_fp64(model, lambda *t: run(model, t), *inputs)

    report = sdkernels.patch(model)
    assert not report.left_alone, report
    assert report.count("attention") == 3 and report.count("ada_layer_norm") == 5 and report.count("linear_gelu") == 3
    patched, calls = calls_per_block(model, inputs)
    assert calls == [EXPECTED_TOTAL, *EXPECTED_BLOCKS]
    assert_matches_reference(patched, unpatched, fp64, what=f"patched SD3 transformer {dtype}")
    assert torch.equal(run(copy.deepcopy(model), inputs), patched)
    assert torch.equal(run(pickle.loads(pickle.dumps(model)), inputs), patched)

    assert sdkernels.unpatch(model) == 11
    assert all(processors[name] is p for name, p in model.attn_processors.items())
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(run(model, inputs), unpatched)


@pytest.mark.parametrize("when", ["before", "after"])
def test_fuse_qkv_projections_before_or_after_patching(when: str) -> None:
    """SD3.0 (no QK norm, no dual attention: diffusers' fused joint processor needs a context stream)."""
    model = make_sd3_transformer(tiny_sd3_transformer_config(dual_attention_layers=(), qk_norm=None))
    inputs = sd3_inputs(model, torch.float32)
    original = dict(model.attn_processors)
    model.fuse_qkv_projections()
    fused_unpatched = run(model, inputs)
    fp64 = in_fp64(model, lambda *t: run(model, t), *inputs)
    model.unfuse_qkv_projections()

    if when == "before":
        sdkernels.patch(model)
        model.fuse_qkv_projections()
    else:
        model.fuse_qkv_projections()
    report = sdkernels.patch(model)
    assert not report.left_alone
    processors = list(model.attn_processors.values())
    assert all(isinstance(p, SdkernelsJointAttnProcessor) and p.fused for p in processors)
    with SdkernelsOpCounter() as counter:
        got = run(model, inputs)
    assert counter.counts["attention"] == 2
    assert_matches_reference(got, fused_unpatched, fp64, what=f"fused QKV, patched {when} fusing")

    model.unfuse_qkv_projections()
    sdkernels.unpatch(model)
    current = model.attn_processors
    assert all(type(p) is JointAttnProcessor2_0 for p in current.values())
    if when == "after":  # fused by diffusers before sdkernels saw it: unfuse restores diffusers' own objects
        assert all(current[name] is p for name, p in original.items())
    assert not any(isinstance(p, FusedJointAttnProcessor2_0) for p in current.values())


LORA_TARGETS = ["to_q", "to_k", "to_v", "add_q_proj", "add_v_proj", "to_out.0", "to_add_out", "norm1.linear"]
LORA_TARGETS += ["ff.net.0.proj", "ff_context.net.0.proj"]


@pytest.mark.parametrize("when", ["before", "after"])
def test_lora_before_or_after_patching(when: str) -> None:
    model = make_sd3_transformer()
    inputs = sd3_inputs(model, torch.float32)
    base = run(model, inputs)

    def add_adapter() -> None:
        with seeded(5):  # random, non-zero B, so the adapter changes the output
            model.add_adapter(LoraConfig(r=4, target_modules=LORA_TARGETS, init_lora_weights=False))

    if when == "before":
        add_adapter()
    report = sdkernels.patch(model)
    assert not report.left_alone
    if when == "after":
        add_adapter()
    with SdkernelsOpCounter() as counter:
        got = run(model, inputs)
    gelus = [m for m in model.modules() if isinstance(m, GELU)]
    assert gelus and all(isinstance(m.proj, LoraLayer) for m in gelus)
    # a wrapped projection runs as a module (the fused GEMM would drop the adapter); attention and AdaLN stay fused
    assert counter.counts["linear_gelu"] == 0
    assert counter.counts["attention"] == 3 and counter.counts["ada_layer_norm"] == 6

    sdkernels.unpatch(model)
    expected = run(model, inputs)
    assert (expected - base).abs().max() > 1e-2, "the adapter must change the output"
    fp64 = in_fp64(model, lambda *t: run(model, t), *inputs)
    assert_matches_reference(got, expected, fp64, what=f"LoRA added {when} patching")


def test_compiled_patched_sd3_transformer_has_no_graph_break_and_matches_eager() -> None:
    torch._dynamo.reset()
    model = make_sd3_transformer()
    inputs = sd3_inputs(model, torch.float32)
    unpatched = run(model, inputs)
    fp64 = in_fp64(model, lambda *t: run(model, t), *inputs)
    sdkernels.patch(model)

    def forward(latents, context, pooled, timestep):
        return model(
            hidden_states=latents, encoder_hidden_states=context, pooled_projections=pooled, timestep=timestep
        ).sample

    assert _compiles_to_one_graph(forward, *inputs) == EXPECTED_TOTAL
    compiled = torch.compile(forward, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        got = compiled(*inputs)
    assert_matches_reference(got, unpatched, fp64, what="compiled patched SD3 transformer")
    assert sum(isinstance(m, Attention) for m in model.modules()) == 3
    torch._dynamo.reset()


SHORT_RUN = {"steps": 2, "size": 32, "output_type": "latent", "max_sequence_length": 8}


def test_patched_tiny_sd3_pipeline_matches_fp64() -> None:
    """`patch(sd3_pipe)` patches the transformer and the 16-channel VAE, leaves nothing alone, and the pipeline's
    latents after 2 flow-matching steps with classifier-free guidance stay within the rule against fp64. Without T5,
    diffusers adds max_sequence_length zero tokens to CLIP's 77 (256 by default: 333 text tokens); 8 here, for the
    interpreter. The VAE's GroupNorm/attention kernels are tested on the SD pipelines; decoding here would only add
    interpreter minutes."""
    pipe = make_sd3_pipeline()
    unpatched = run_pipeline(pipe, **SHORT_RUN).images
    fp64 = run_pipeline(make_sd3_pipeline(dtype=torch.float64), **SHORT_RUN).images
    report = sdkernels.patch(pipe)
    assert not report.left_alone
    assert report.count(component="vae") == 20 and report.count(component="transformer") == 11
    with SdkernelsOpCounter() as counter:
        patched = run_pipeline(pipe, **SHORT_RUN).images
    assert counter.counts == {k: 2 * v for k, v in EXPECTED_TOTAL.items()}
    sdkernels.unpatch(pipe)
    assert_matches_reference(patched, unpatched, fp64, what="tiny SD3 pipeline latents")
    assert torch.equal(run_pipeline(pipe, **SHORT_RUN).images, unpatched)


def test_tiny_sd3_has_the_sd35_topology() -> None:
    """What the issue's separate checks build: 3 attention layers (joint, dual attn2, joint), 10 QK RMSNorms,
    8 LayerNorms, AdaLayerNormZero / SD35AdaLayerNormZeroX / AdaLayerNormContinuous, GELU(tanh) feed-forwards,
    64-wide heads; the VAE has 16 latent channels."""
    pipe = make_sd3_pipeline()
    model, names = pipe.transformer, collections.Counter(type(m).__name__ for m in pipe.transformer.modules())
    assert names["Attention"] == 3 and names["RMSNorm"] == 10 and names["LayerNorm"] == 8
    assert names["AdaLayerNormZero"] == 2 and names["SD35AdaLayerNormZeroX"] == 1
    assert names["AdaLayerNormContinuous"] == 2  # the last block's norm1_context and norm_out
    assert all(m.approximate == "tanh" for m in model.modules() if isinstance(m, GELU)) and names["GELU"] == 3
    assert {a.inner_dim // a.heads for a in model.modules() if isinstance(a, Attention)} == {64}
    assert pipe.vae.config.latent_channels == 16 and pipe.text_encoder_3 is None


def test_modulation_falls_back_where_diffusers_broadcasts() -> None:
    """An emb of batch 1 for x of batch 2 (diffusers broadcasts it) runs the diffusers expression, not the fused op
    (whose checks would reject it); the same emb expanded to batch 2 runs the fused op."""
    norm = AdaLayerNormZero(64)
    x, emb = torch.randn(2, 5, 64), torch.randn(1, 64)
    with torch.no_grad():
        expected = norm(x, emb=emb)
        fp64 = copy.deepcopy(norm).double()(x.double(), emb=emb.double())[0]
        sdkernels.patch(norm)
        with SdkernelsOpCounter() as broadcast:
            got = norm(x, emb=emb)
        with SdkernelsOpCounter() as expanded:
            got_expanded = norm(x, emb=emb.expand(2, -1))
    assert broadcast.counts["ada_layer_norm"] == 0 and expanded.counts["ada_layer_norm"] == 1
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert_matches_reference(got_expanded[0], expected[0], fp64, what="expanded emb")
