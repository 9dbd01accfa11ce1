"""LoRA / PEFT on a patched UNet: adapters added before or after patching, `pipe.load_lora_weights` of an in-memory
kohya-format LoRA (attention, feed-forward, resnet conv1 and time_emb_proj, proj_in), `fuse_lora` / `unfuse_lora`.
Each gives the unpatched output within the tolerance rule against fp64, and a LoRA-wrapped GEGLU projection runs as
a module followed by the fused gelu_gate (never the fused GEMM, which would drop the adapter)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from diffusers.models.activations import GEGLU
from diffusers.models.attention_processor import Attention
from peft import LoraConfig
from peft.tuners.lora import LoraLayer

import sdkernels
from sdkernels.testing.tiny.components import seeded
from tests.dropin import in_fp64, run_unet, small_sd_pipeline, small_unet, unet_inputs
from tests.op_counter import SdkernelsOpCounter
from tests.tolerance import assert_matches_reference

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj", "ff.net.2"]
KOHYA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "conv1", "time_emb_proj", "proj_in")


def add_random_adapter(unet: nn.Module, seed: int = 5) -> None:
    with seeded(seed):  # init_lora_weights=False: random, non-zero B, so the adapter changes the output
        unet.add_adapter(LoraConfig(r=4, target_modules=TARGETS, init_lora_weights=False))


def patched_run(unet: nn.Module, inputs: tuple) -> tuple[torch.Tensor, SdkernelsOpCounter]:
    with SdkernelsOpCounter() as counter:
        out = run_unet(unet, inputs)
    return out, counter


def assert_lora_paths(unet: nn.Module, counter: SdkernelsOpCounter) -> None:
    gegls = [m for m in unet.modules() if isinstance(m, GEGLU)]
    assert gegls and all(isinstance(m.proj, LoraLayer) for m in gegls)
    assert counter.counts["gelu_gate"] == len(gegls) and counter.counts["geglu"] == 0
    assert counter.counts["attention"] == sum(isinstance(m, Attention) for m in unet.modules())


@pytest.mark.parametrize("when", ["before", "after"])
def test_adapter_added_before_or_after_patching(when: str) -> None:
    unet = small_unet()
    inputs = unet_inputs(unet)
    base = run_unet(unet, inputs)
    if when == "before":
        add_random_adapter(unet)
    report = sdkernels.patch(unet)
    assert not report.left_alone
    if when == "after":
        add_random_adapter(unet)
    got, counter = patched_run(unet, inputs)
    assert_lora_paths(unet, counter)

    sdkernels.unpatch(unet)
    expected = run_unet(unet, inputs)
    assert (expected - base).abs().max() > 1e-2, "the adapter must change the output"
    assert_matches_reference(
        got, expected, in_fp64(unet, lambda *t: run_unet(unet, t), *inputs), what=f"adapter added {when} patching"
    )


def kohya_state_dict(unet: nn.Module, rank: int = 4, seed: int = 3) -> dict[str, torch.Tensor]:
    """A kohya-format LoRA ("lora_unet_<path with _>.lora_down/.lora_up/.alpha") for every KOHYA_TARGETS module."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if not name.endswith(KOHYA_TARGETS):
            continue
        key = "lora_unet_" + name.replace(".", "_")
        if isinstance(module, nn.Linear):
            down, up = (rank, module.in_features), (module.out_features, rank)
        else:
            down, up = (rank, module.in_channels, *module.kernel_size), (module.out_channels, rank, 1, 1)
        state[f"{key}.lora_down.weight"] = torch.randn(down, generator=generator) / down[1] ** 0.5
        state[f"{key}.lora_up.weight"] = torch.randn(up, generator=generator) * 0.3
        state[f"{key}.alpha"] = torch.tensor(float(rank))
    return state


def test_load_lora_weights_after_patching_then_fuse_and_unfuse() -> None:
    pipe = small_sd_pipeline()
    unet = pipe.unet
    inputs = unet_inputs(unet)
    base = run_unet(unet, inputs)
    state = kohya_state_dict(unet)

    def reference() -> tuple[torch.Tensor, torch.Tensor]:
        """Unpatched output and its fp64 reference of the model as it is now; the pipeline is patched again after."""
        sdkernels.unpatch(pipe)
        out = run_unet(unet, inputs), in_fp64(unet, lambda *t: run_unet(unet, t), *inputs)
        sdkernels.patch(pipe)
        return out

    sdkernels.patch(pipe)
    pipe.load_lora_weights(state)
    wrapped = {name.removesuffix(".lora_A") for name, _ in unet.named_modules() if name.endswith(".lora_A")}
    assert len(wrapped) == len(state) // 3, "every kohya module must be wrapped by the loader"
    assert any(name.endswith("resnets.0.conv1") for name in wrapped)
    got, counter = patched_run(unet, inputs)
    assert_lora_paths(unet, counter)
    expected, fp64 = reference()
    assert (expected - base).abs().max() > 1e-2, "the LoRA must change the output"
    assert_matches_reference(got, expected, fp64, what="load_lora_weights after patching")

    pipe.fuse_lora()
    fused, counter = patched_run(unet, inputs)
    assert_lora_paths(unet, counter)  # merged into the base weights, still wrapped: proj(x) as a module
    expected_fused, fp64_fused = reference()
    assert_matches_reference(fused, expected_fused, fp64_fused, what="fuse_lora")
    assert (expected_fused - expected).abs().max() < 1e-3 * expected.abs().max()

    pipe.unfuse_lora()
    unfused, _ = patched_run(unet, inputs)
    expected_unfused, fp64_unfused = reference()
    assert_matches_reference(unfused, expected_unfused, fp64_unfused, what="unfuse_lora")
