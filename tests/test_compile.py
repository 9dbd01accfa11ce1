"""torch.compile of a patched UNet and VAE decoder: one graph, no graph break, every sdkernels op in the graph, and the
compiled output matches the eager one (tolerance rule against fp64).

The `aot_eager` backend keeps this within CI's budget on CPU: it runs dynamo and AOTAutograd (functionalisation, the
custom ops' fake implementations), i.e. everything that could break the graph, and then executes the traced aten and
sdkernels ops as they are. Inductor would only change how the aten ops around the opaque custom ops are generated.
"""

from __future__ import annotations

import collections

import torch
import torch._dynamo
import torch.fx

import sdkernels
from tests.dropin import in_fp64, run_unet, small_unet, small_vae, unet_inputs
from tests.tolerance import assert_matches_reference


def _op_calls(graphs: list[torch.fx.GraphModule]) -> collections.Counter[str]:
    """sdkernels op calls in the traced graphs (what the compiled code will run)."""
    calls: collections.Counter[str] = collections.Counter()
    for graph in graphs:
        for node in graph.graph.nodes:
            # dynamo records a custom op as its OpOverloadPacket: str() gives "sdkernels.attention"
            if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverloadPacket):
                namespace, name = str(node.target).split(".")[:2]
                if namespace == "sdkernels":
                    calls[name] += 1
    return calls


def _compiles_to_one_graph(fn, *inputs: torch.Tensor) -> collections.Counter[str]:
    with torch.no_grad():
        explanation = torch._dynamo.explain(fn)(*inputs)
    reasons = [str(b.reason) for b in explanation.break_reasons]
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, reasons
    return _op_calls(explanation.graphs)


def test_compiled_patched_unet_and_vae_decoder_have_no_graph_break_and_match_eager() -> None:
    torch._dynamo.reset()
    unet, vae = small_unet(), small_vae()
    inputs = unet_inputs(unet)
    latents = torch.randn(1, 4, 8, 8)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode(z).sample

    with torch.no_grad():
        unet_unpatched, decoded_unpatched = run_unet(unet, inputs), decode(latents)
        unet_fp64 = in_fp64(unet, lambda *t: run_unet(unet, t), *inputs)
        decoded_fp64 = in_fp64(vae, decode, latents)

    reports = sdkernels.patch(unet), sdkernels.patch(vae)
    assert all(r.count() > 0 and not r.left_alone for r in reports)

    unet_ops = _compiles_to_one_graph(unet, *inputs)
    resnets, transformers = (
        sum(type(m).__name__ == name for m in unet.modules()) for name in ("ResnetBlock2D", "Transformer2DModel")
    )
    assert unet_ops["group_norm_silu"] == 2 * resnets + transformers + 1  # + conv_norm_out
    assert unet_ops["attention"] == 2 * transformers and unet_ops["geglu"] == transformers
    decoder_ops = _compiles_to_one_graph(decode, latents)
    assert decoder_ops["group_norm_silu"] > 0 and decoder_ops["attention"] == 1

    compiled_unet = torch.compile(unet, backend="aot_eager", fullgraph=True)
    compiled_decode = torch.compile(decode, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        eager_unet, eager_decoded = run_unet(unet, inputs), decode(latents)
        got_unet, got_decoded = compiled_unet(*inputs).sample, compiled_decode(latents)
    for what, got, eager, unpatched, fp64 in (
        ("unet", got_unet, eager_unet, unet_unpatched, unet_fp64),
        ("vae.decode", got_decoded, eager_decoded, decoded_unpatched, decoded_fp64),
    ):
        assert_matches_reference(eager, unpatched, fp64, what=f"eager patched {what}")
        assert_matches_reference(got, unpatched, fp64, what=f"compiled patched {what}")
    torch._dynamo.reset()
