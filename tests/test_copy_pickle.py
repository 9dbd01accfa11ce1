"""A patched model survives what users do to whole models: `copy.deepcopy` (EMA copies), `pickle` (multiprocessing)
and `torch.save` / `torch.load(weights_only=False)`. The copy runs patched, gives the original's output through the
same number of sdkernels op calls, and `unpatch` restores it exactly: the class's own forwards, the original
attention processors, no sdkernels attribute left behind, bit-exact unpatched output, state_dict untouched.
The original is unaffected by what is done to its copy."""

from __future__ import annotations

import copy
import functools
import io
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn as nn
from diffusers.models.attention_processor import Attention

import sdkernels
from sdkernels.testing.tiny import make_unet, tiny_sdxl_unet_config
from sdkernels.testing.tiny.components import TEXT_HIDDEN
from tests.dropin import run_unet, small_unet, small_vae, unet_inputs
from tests.op_counter import SdkernelsOpCounter


def _sdxl_unet() -> nn.Module:
    return make_unet(tiny_sdxl_unet_config())


def _run_sdxl(unet: nn.Module) -> torch.Tensor:
    sample, timesteps, text = unet_inputs(unet)
    g = torch.Generator().manual_seed(5)
    added = {"text_embeds": torch.randn(1, TEXT_HIDDEN, generator=g), "time_ids": torch.randn(1, 6, generator=g)}
    with torch.no_grad():
        return unet(sample, timesteps, text, added_cond_kwargs=added).sample


def _decode(vae: nn.Module) -> torch.Tensor:
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        return vae.decode(latents).sample


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[nn.Module], torch.Tensor]]] = {
    "unet": (small_unet, lambda unet: run_unet(unet, unet_inputs(unet))),
    "vae": (small_vae, _decode),
    "sdxl_unet": (_sdxl_unet, _run_sdxl),
}


def _pickle(model: nn.Module) -> nn.Module:
    return pickle.loads(pickle.dumps(model))


def _torch_save(model: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


ROUND_TRIPS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "deepcopy": copy.deepcopy,
    "pickle": _pickle,
    "torch.save": _torch_save,
}


def instance_state(model: nn.Module) -> dict[str, Any]:
    """What a pristine model holds per submodule: its instance attribute names and its attention processor type."""
    return {
        name: (sorted(m.__dict__), type(m.processor).__name__ if isinstance(m, Attention) else None)
        for name, m in model.named_modules()
    }


def assert_bound_to_itself(model: nn.Module) -> None:
    """Every forward sdkernels bound on an instance calls that instance (not the model it was copied from)."""
    bound = 0
    for m in model.modules():
        forward = m.__dict__.get("forward")
        if forward is not None:
            bound_to = forward.args[0] if isinstance(forward, functools.partial) else forward.__self__
            assert bound_to is m, f"{type(m).__name__}.forward is bound to another module"
            bound += 1
    assert bound > 0


class Case:
    """One model, its unpatched and patched outputs and op counts, computed once per model."""

    def __init__(self, name: str) -> None:
        make, self.run = MODELS[name]
        self.model = make()
        self.pristine = instance_state(self.model)
        self.state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.unpatched = self.run(self.model)
        self.report = sdkernels.patch(self.model)
        with SdkernelsOpCounter() as counter:
            self.patched = self.run(self.model)
        self.counts = counter.counts
        assert sum(self.counts.values()) > 0


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    return {}


# Every round trip on the small UNet and VAE; the tiny SDXL UNet (its text_time conditioning and linear projections,
# ~3x the small UNet's interpreted cost) through torch.save only.
COMBINATIONS = [(m, r) for m in ("unet", "vae") for r in ROUND_TRIPS] + [("sdxl_unet", "torch.save")]


@pytest.mark.parametrize(("model_name", "round_trip"), COMBINATIONS)
def test_copy_of_a_patched_model_runs_patched_and_unpatches_exactly(
    cases: dict[str, Case], model_name: str, round_trip: str
) -> None:
    if model_name not in cases:
        cases[model_name] = Case(model_name)
    case = cases[model_name]
    copied = ROUND_TRIPS[round_trip](case.model)

    assert_bound_to_itself(copied)
    with SdkernelsOpCounter() as counter:
        got = case.run(copied)
    assert counter.counts == case.counts, "the copy must still run every patched site through sdkernels"
    assert torch.equal(got, case.patched)
    again = sdkernels.patch(copied)  # the copy knows it is patched
    assert again.count() == 0 and again.count(status="already patched") == case.report.count()

    assert sdkernels.unpatch(copied) == case.report.count()
    assert instance_state(copied) == case.pristine, "unpatch must leave no sdkernels attribute or processor behind"
    assert all(m.forward.__func__ is type(m).forward for m in copied.modules())
    with SdkernelsOpCounter() as counter:
        assert torch.equal(case.run(copied), case.unpatched), "the unpatched copy must match bit-exactly"
    assert not counter.counts
    state = copied.state_dict()
    assert state.keys() == case.state.keys() and all(torch.equal(state[k], v) for k, v in case.state.items())

    assert_bound_to_itself(case.model)  # the original is still patched on its own instances
    assert sdkernels.patch(case.model).count() == 0


def test_copy_of_a_patched_attention_keeps_the_replaced_processor_object() -> None:
    """unpatch of a copy puts back a copy of the processor that was replaced, not diffusers' default."""
    from diffusers.models.attention_processor import AttnProcessor

    attn = Attention(query_dim=32, heads=2, dim_head=16, processor=AttnProcessor())
    sdkernels.patch(attn)
    for copied in (copy.deepcopy(attn), _pickle(attn)):
        assert type(copied.processor).__name__ == "SdkernelsAttnProcessor"
        assert copied.processor is not attn.processor
        sdkernels.unpatch(copied)
        assert type(copied.processor) is AttnProcessor
