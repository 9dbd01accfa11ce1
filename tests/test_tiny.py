"""The tiny offline pipelines: they build without the network, run, are deterministic, have SD's architecture, and are
numerically well-conditioned (so patched-vs-unpatched comparisons on them measure kernels, not chaos)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from diffusers.models.activations import GEGLU
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d_blocks import CrossAttnDownBlock2D, CrossAttnUpBlock2D

from sdkernels.testing import tiny
from sdkernels.testing.compare import CAPTION_HEIGHT, side_by_side
from sdkernels.testing.demo import main as demo_main

TXT2IMG_LIKE = ["sd", "controlnet", "sdxl"]  # their whole call is seeded in fp32 (img2img/inpaint sample the VAE)


@pytest.fixture(scope="module")
def pipes() -> dict[str, object]:
    return {name: build() for name, build in tiny.BUILDERS.items()}


def _image(pipe, steps: int = 2, **kwargs) -> np.ndarray:
    return tiny.run_pipeline(pipe, steps=steps, size=64, **kwargs).images


def test_builders_never_touch_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("a tiny builder tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    for build in tiny.BUILDERS.values():
        pipe = build(seed=3)
        assert tiny.run_pipeline(pipe, steps=1, size=64).images.shape == (1, 64, 64, 3)


def test_tokenizer_does_clip_bpe() -> None:
    tokenizer = tiny.make_tokenizer()
    ids = tokenizer("a photo of a cat", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert tokenizer.model_max_length == 77 and len(ids) == 77
    tokens = tokenizer.convert_ids_to_tokens(ids[:8])
    assert tokens == [
        "<|startoftext|>",
        "a</w>",
        "photo</w>",
        "of</w>",
        "a</w>",
        "cat</w>",
        "<|endoftext|>",
        "<|endoftext|>",
    ]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a photo of a cat"
    # Words without merges fall back to byte tokens, and the lowercase normaliser applies.
    zebra = tokenizer("Zebra").input_ids
    assert tokenizer.convert_ids_to_tokens(zebra) == ["<|startoftext|>", "z", "e", "b", "r", "a</w>", "<|endoftext|>"]
    sdxl_second = tiny.make_tokenizer(pad_token="!")
    padded = sdxl_second("a dog", padding="max_length", max_length=77).input_ids
    assert sdxl_second.convert_ids_to_tokens(padded[:5]) == [
        "<|startoftext|>",
        "a</w>",
        "dog</w>",
        "<|endoftext|>",
        "!",
    ]


@pytest.mark.parametrize("name", list(tiny.BUILDERS))
def test_pipeline_runs_and_makes_a_real_image(pipes, name: str) -> None:
    image = _image(pipes[name])
    assert image.shape == (1, 64, 64, 3) and image.dtype == np.float32
    assert np.isfinite(image).all()
    # Not flat and not clipped: every kernel error would stay visible in the pixels.
    assert image.std() > 0.05
    assert ((image <= 0) | (image >= 1)).mean() < 0.05


@pytest.mark.parametrize("name", list(tiny.BUILDERS))
def test_same_seed_same_image_other_seed_other_image(pipes, name: str) -> None:
    rng_before = torch.random.get_rng_state()
    rebuilt = tiny.BUILDERS[name](seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng_before), "builders must not consume the global RNG"
    for (key, ours), theirs in zip(
        pipes[name].unet.state_dict().items(), rebuilt.unet.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs), key
    first = _image(pipes[name], steps=1)
    assert np.array_equal(first, _image(rebuilt, steps=1))
    assert not np.allclose(first, _image(pipes[name], steps=1, seed=1))  # other noise
    assert not np.allclose(first, _image(tiny.BUILDERS[name](seed=1), steps=1))  # other weights


@pytest.mark.parametrize("name", TXT2IMG_LIKE)
def test_pipeline_is_well_conditioned(pipes, name: str) -> None:
    """fp32 vs fp64 images must differ by rounding (measured 3-5e-6), not by amplified chaos. With 64 channels at
    the 1 x 1 deepest level (2 numbers per GroupNorm group) the seed-0 SD images differed by 2.9e-4."""
    in_fp64 = _image(tiny.BUILDERS[name](dtype=torch.float64))
    assert np.abs(_image(pipes[name]) - in_fp64).max() < 1e-4


def test_builders_honour_device_and_dtype() -> None:
    pipe = tiny.make_sdxl_pipeline(dtype=torch.bfloat16)
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        parameters = list(getattr(pipe, component).parameters())
        assert {p.dtype for p in parameters} == {torch.bfloat16}
        assert {p.device.type for p in parameters} == {"cpu"}
    image = tiny.run_pipeline(pipe, steps=1, size=64, output_type="pil").images[0]
    assert image.size == (64, 64) and image.mode == "RGB"


def test_sd_unet_has_sd1_topology(pipes) -> None:
    unet = pipes["sd"].unet
    assert [type(b).__name__ for b in unet.down_blocks] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert [type(b).__name__ for b in unet.up_blocks] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    assert type(unet.mid_block).__name__ == "UNetMidBlock2DCrossAttn"
    assert sum(isinstance(b, CrossAttnDownBlock2D | CrossAttnUpBlock2D) for b in unet.modules()) == 6
    resnets = [m for m in unet.modules() if isinstance(m, ResnetBlock2D)]
    assert resnets and all(r.time_emb_proj is not None and r.norm1.num_groups == 32 for r in resnets)
    assert {r.norm1.num_channels // 32 for r in resnets} == {1, 2, 3, 4, 6, 8}  # C/G the GN kernel sees
    attentions = [m for m in unet.modules() if isinstance(m, Attention)]
    head_dims = {a.inner_dim // a.heads for a in attentions}
    assert head_dims == {16, 32, 64}  # all multiples of 8 and >= 16, as the flash-attention kernel needs
    cross = [a for a in attentions if a.is_cross_attention]
    assert len(cross) == len(attentions) // 2 and {a.to_k.in_features for a in cross} == {32}
    assert all(isinstance(m.net[0], GEGLU) for m in unet.modules() if type(m).__name__ == "FeedForward")
    assert pipes["inpaint"].unet.config.in_channels == 9


def test_vae_has_mid_attention_with_group_norm(pipes) -> None:
    vae = pipes["sd"].vae
    assert pipes["sd"].vae_scale_factor == 8 and vae.config.latent_channels == 4
    for coder in (vae.encoder, vae.decoder):
        (attention,) = [m for m in coder.mid_block.modules() if isinstance(m, Attention)]
        assert attention.heads == 1 and attention.inner_dim == 64
        assert isinstance(attention.group_norm, torch.nn.GroupNorm) and attention.group_norm.num_groups == 32
        assert isinstance(coder.conv_norm_out, torch.nn.GroupNorm)
    assert all(r.time_emb_proj is None for r in vae.modules() if isinstance(r, ResnetBlock2D))


def test_controlnet_matches_unet_and_changes_the_image(pipes) -> None:
    pipe = pipes["controlnet"]
    for key in (
        "block_out_channels",
        "down_block_types",
        "cross_attention_dim",
        "attention_head_dim",
        "norm_num_groups",
        "layers_per_block",
    ):
        assert pipe.controlnet.config[key] == pipe.unet.config[key], key
    assert all(conv.weight.abs().sum() > 0 for conv in pipe.controlnet.controlnet_down_blocks)
    with_control = _image(pipe)
    without_control = _image(pipe, controlnet_conditioning_scale=0.0)
    assert np.abs(with_control - without_control).max() > 0.05
    assert np.array_equal(without_control, _image(pipes["sd"]))  # same seed -> same base weights


def test_sdxl_conditioning_dims(pipes) -> None:
    pipe = pipes["sdxl"]
    unet = pipe.unet
    assert [type(b).__name__ for b in unet.down_blocks] == ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * 2
    assert unet.config.addition_embed_type == "text_time"
    projection = pipe.text_encoder_2.config.projection_dim
    assert unet.add_embedding.linear_1.in_features == 6 * unet.config.addition_time_embed_dim + projection
    assert (
        unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    )
    assert pipe.tokenizer_2.pad_token == "!"


def test_extra_inputs_are_deterministic_and_real(pipes) -> None:
    inpaint = tiny.run.extra_inputs(pipes["inpaint"], 64, seed=0)
    assert set(inpaint) == {"image", "mask_image"}
    mask = np.asarray(inpaint["mask_image"]) / 255
    assert 0.1 < mask.mean() < 0.9 and set(np.unique(mask)) == {0.0, 1.0}
    assert set(tiny.run.extra_inputs(pipes["img2img"], 64, seed=0)) == {"image"}
    assert tiny.run.extra_inputs(pipes["sd"], 64, seed=0) == {}
    control = np.asarray(tiny.run.extra_inputs(pipes["controlnet"], 64, seed=0)["image"])
    assert control.shape == (64, 64, 3) and 0.02 < (control > 0).mean() < 0.5
    assert np.array_equal(np.asarray(tiny.make_init_image(64, 5)), np.asarray(tiny.make_init_image(64, 5)))
    assert not np.array_equal(np.asarray(tiny.make_init_image(64, 5)), np.asarray(tiny.make_init_image(64, 6)))


def test_side_by_side_layout() -> None:
    unpatched = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    patched = unpatched.copy()
    patched[10, 20] += 0.5
    canvas = np.asarray(side_by_side(unpatched, patched, min_side=64))
    assert canvas.shape == (64 + CAPTION_HEIGHT, 192, 3)
    strip = canvas[:64]
    assert np.abs(strip[:, :64] / 255 - unpatched).max() <= 0.5 / 255 + 1e-6
    difference_panel = strip[:, 128:]
    assert (difference_panel[10, 20] == 255).all() and difference_panel.sum() == 3 * 255


@pytest.mark.slow
def test_demo_end_to_end(tmp_path) -> None:
    """The demo through the Triton interpreter (minutes on a shared CPU): patched within rounding of unpatched."""
    out = tmp_path / "demo.png"
    assert demo_main(["--steps", "1", "--size", "64", "--device", "cpu", "--out", str(out)]) == 0
    assert out.exists()
