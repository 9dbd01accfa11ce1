"""The shapes Stable Diffusion actually runs through sdkernels' ops.

Every table below was measured by hooking GroupNorm / GEGLU / Attention modules (sdkernels.tools.sd_census) during a
meta-device forward of diffusers 0.42.1 models built from sdkernels.tools.sd_model_configs (tests/test_sd_shapes.py
re-measures and compares): one UNet step at batch 2 (classifier-free guidance) at the model's native resolution, and
the VAE encoder and decoder at batch 1. Tables are written per resolution level so other sizes follow: at UNet level l
the latent side is (image / 8) >> l; at VAE level l the side is image >> l.
"""

from __future__ import annotations

from dataclasses import dataclass

MODELS = ("sd15", "sd21", "sdxl")
IMAGE_SIZE = {"sd15": 512, "sd21": 768, "sdxl": 1024}
TEXT_LEN = 77  # CLIP tokens: the key length of every cross-attention
UNET_BATCH = 2  # one UNet call evaluates the conditional and the unconditional branch together
VAE_BATCH = 1


@dataclass(frozen=True)
class GroupNormShape:
    model: str
    component: str  # "unet" | "vae.encoder" | "vae.decoder"
    batch: int
    channels: int
    spatial: tuple[int, ...]  # (H, W); (H*W,) for the VAE attention's GroupNorm over a (B, C, HW) view
    silu: bool  # GroupNorm -> SiLU (ResnetBlock2D norm1/norm2, conv_norm_out) or plain (attention / Transformer2D)
    add: bool  # ResnetBlock2D.norm2 in the UNet: the time embedding is added to x right before the norm
    eps: float
    calls: int
    groups: int = 32

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.batch, self.channels, *self.spatial)

    @property
    def label(self) -> str:
        kind = "gn+silu" if self.silu else "gn"
        return f"{self.model}-{self.component} {kind}{'+temb' if self.add else ''} {'x'.join(map(str, self.shape))}"


@dataclass(frozen=True)
class GegluShape:
    model: str
    batch: int
    tokens: int  # per image
    dim: int  # GEGLU.proj.in_features
    inner: int  # GEGLU output features; proj.out_features = 2 * inner
    calls: int

    @property
    def rows(self) -> int:
        return self.batch * self.tokens

    @property
    def label(self) -> str:
        return f"{self.model}-unet geglu M{self.rows} K{self.dim} N{self.inner}"


@dataclass(frozen=True)
class AttentionShape:
    model: str
    component: str  # "unet" | "vae.encoder" | "vae.decoder"
    blocks: str  # where it occurs, e.g. "down_blocks.0+up_blocks.3"
    kind: str  # "self" | "cross"
    batch: int
    heads: int
    head_dim: int
    lq: int
    lk: int
    calls: int

    @property
    def label(self) -> str:
        return (
            f"{self.model}-{self.component} {self.kind} B{self.batch} H{self.heads} "
            f"Lq{self.lq} Lk{self.lk} D{self.head_dim}"
        )


# ------------------------------------------------------------------------------------------------ GroupNorm census
# (channels, level, silu, temb add, eps, calls). SD1.5 and SD2.1 share the UNet structure (C = 320/640/1280/1280).
_SD_UNET_GN = [
    (320, 0, True, False, 1e-5, 3),
    (640, 0, True, False, 1e-5, 2),
    (960, 0, True, False, 1e-5, 1),
    (320, 1, True, False, 1e-5, 1),
    (640, 1, True, False, 1e-5, 1),
    (960, 1, True, False, 1e-5, 1),
    (1280, 1, True, False, 1e-5, 1),
    (1920, 1, True, False, 1e-5, 1),
    (640, 2, True, False, 1e-5, 1),
    (1280, 2, True, False, 1e-5, 1),
    (1920, 2, True, False, 1e-5, 1),
    (2560, 2, True, False, 1e-5, 2),
    (1280, 3, True, False, 1e-5, 4),
    (2560, 3, True, False, 1e-5, 3),
    (320, 0, True, True, 1e-5, 5),
    (640, 1, True, True, 1e-5, 5),
    (1280, 2, True, True, 1e-5, 5),
    (1280, 3, True, True, 1e-5, 7),
    (320, 0, False, False, 1e-6, 5),
    (640, 1, False, False, 1e-6, 5),
    (1280, 2, False, False, 1e-6, 5),
    (1280, 3, False, False, 1e-6, 1),
]
_SDXL_UNET_GN = [
    (320, 0, True, False, 1e-5, 3),
    (640, 0, True, False, 1e-5, 2),
    (960, 0, True, False, 1e-5, 1),
    (320, 1, True, False, 1e-5, 1),
    (640, 1, True, False, 1e-5, 1),
    (960, 1, True, False, 1e-5, 1),
    (1280, 1, True, False, 1e-5, 1),
    (1920, 1, True, False, 1e-5, 1),
    (640, 2, True, False, 1e-5, 1),
    (1280, 2, True, False, 1e-5, 3),
    (1920, 2, True, False, 1e-5, 1),
    (2560, 2, True, False, 1e-5, 2),
    (320, 0, True, True, 1e-5, 5),
    (640, 1, True, True, 1e-5, 5),
    (1280, 2, True, True, 1e-5, 7),
    (640, 1, False, False, 1e-6, 5),
    (1280, 2, False, False, 1e-6, 6),
]
# VAE (same architecture in all three models): (channels, level vs the image, silu, calls); eps 1e-6, no temb.
# Level 3 without SiLU is the mid-block attention's GroupNorm, run on a (B, C, H*W) view.
_VAE_GN = {
    "vae.encoder": [
        (128, 0, True, 4),
        (128, 1, True, 1),
        (256, 1, True, 3),
        (256, 2, True, 1),
        (512, 2, True, 3),
        (512, 3, True, 9),
        (512, 3, False, 1),
    ],
    "vae.decoder": [
        (512, 3, True, 10),
        (512, 3, False, 1),
        (512, 2, True, 6),
        (512, 1, True, 1),
        (256, 1, True, 5),
        (256, 0, True, 1),
        (128, 0, True, 6),
    ],
}


def _select(models: tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    chosen = tuple(MODELS if models is None else models)
    unknown = set(chosen) - set(MODELS)
    if unknown:
        raise ValueError(f"unknown models {sorted(unknown)}; choose from {MODELS}")
    return chosen


def latent_side(model: str) -> int:
    return IMAGE_SIZE[model] // 8


def group_norm_shapes(
    models: tuple[str, ...] | list[str] | None = None,
    *,
    unet: bool = True,
    vae_parts: tuple[str, ...] = ("vae.encoder", "vae.decoder"),
) -> list[GroupNormShape]:
    """Every distinct GroupNorm call of one UNet step (batch 2) and of the VAE encoder/decoder (batch 1)."""
    shapes = []
    for model in _select(models):
        if unet:
            side = latent_side(model)
            for channels, level, silu, add, eps, calls in _SDXL_UNET_GN if model == "sdxl" else _SD_UNET_GN:
                shapes.append(
                    GroupNormShape(
                        model, "unet", UNET_BATCH, channels, (side >> level, side >> level), silu, add, eps, calls
                    )
                )
        for part in vae_parts:
            for channels, level, silu, calls in _VAE_GN[part]:
                side = IMAGE_SIZE[model] >> level
                spatial = (side, side) if silu else (side * side,)
                shapes.append(GroupNormShape(model, part, VAE_BATCH, channels, spatial, silu, False, 1e-6, calls))
    return shapes


# ---------------------------------------------------------------------------------------------------- GEGLU census
# (dim, level, calls): every BasicTransformerBlock's FeedForward; inner = 4 * dim.
_GEGLU = {"sd15": [(320, 0, 5), (640, 1, 5), (1280, 2, 5), (1280, 3, 1)], "sdxl": [(640, 1, 10), (1280, 2, 60)]}
_GEGLU["sd21"] = _GEGLU["sd15"]


def geglu_shapes(models: tuple[str, ...] | list[str] | None = None) -> list[GegluShape]:
    """Every distinct GEGLU call of one UNet step at batch 2: x is (2, tokens, dim) -> (2, tokens, 4*dim)."""
    shapes = []
    for model in _select(models):
        side = latent_side(model)
        for dim, level, calls in _GEGLU[model]:
            shapes.append(GegluShape(model, UNET_BATCH, (side >> level) ** 2, dim, 4 * dim, calls))
    return shapes


# ------------------------------------------------------------------------------------------------ attention census
# (level, heads, head_dim, transformer blocks, where). Each block runs one self- and one cross-attention.
# SD1.5: 8 heads everywhere (head_dim = C / 8); SD2.1: head_dim 64 (heads = C / 64); SDXL: head_dim 64.
_ATTENTION = {
    "sd15": [
        (0, 8, 40, 5, "down_blocks.0+up_blocks.3"),
        (1, 8, 80, 5, "down_blocks.1+up_blocks.2"),
        (2, 8, 160, 5, "down_blocks.2+up_blocks.1"),
        (3, 8, 160, 1, "mid_block"),
    ],
    "sd21": [
        (0, 5, 64, 5, "down_blocks.0+up_blocks.3"),
        (1, 10, 64, 5, "down_blocks.1+up_blocks.2"),
        (2, 20, 64, 5, "down_blocks.2+up_blocks.1"),
        (3, 20, 64, 1, "mid_block"),
    ],
    "sdxl": [(1, 10, 64, 10, "down_blocks.1+up_blocks.1"), (2, 20, 64, 60, "down_blocks.2+mid_block+up_blocks.0")],
}


def attention_shapes(
    models: tuple[str, ...] | list[str] | None = None, *, vae_parts: tuple[str, ...] = ("vae.encoder", "vae.decoder")
) -> list[AttentionShape]:
    """Every distinct attention call: UNet self/cross at batch 2 (Lk = 77 for cross), VAE mid-block self-attention
    (1 head of 512 over (image/8)² tokens) at batch 1."""
    shapes = []
    for model in _select(models):
        side = latent_side(model)
        for level, heads, head_dim, blocks, where in _ATTENTION[model]:
            tokens = (side >> level) ** 2
            for kind, keys in (("self", tokens), ("cross", TEXT_LEN)):
                shapes.append(
                    AttentionShape(model, "unet", where, kind, UNET_BATCH, heads, head_dim, tokens, keys, blocks)
                )
        for part in vae_parts:
            shapes.append(
                AttentionShape(model, part, "mid_block", "self", VAE_BATCH, 1, 512, side * side, side * side, 1)
            )
    return shapes
