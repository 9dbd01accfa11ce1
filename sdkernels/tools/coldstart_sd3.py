"""The distinct Triton compiles of one SD3 / SD3.5 generation (transformer step at the guidance batch, then the VAE
decode), recorded on the meta device like `sdkernels.tools.coldstart` does for the UNet pipelines: the published
architectures (sdkernels.tools.sd3_shapes) are built weightless, patched, and run inside a LaunchRecorder for the
target GPU architecture. SD3's pipeline decodes in its own dtype (no fp32 upcast of the VAE)."""

from __future__ import annotations

from typing import Any

import torch

from sdkernels.kernels._launch import Launch
from sdkernels.tools.sd3_shapes import SD3_TRANSFORMER_CONFIGS, SD3_VAE_CONFIG, TEXT_TOKENS

NATIVE = 1024
_models: dict[str, tuple[Any, Any]] = {}


def meta_sd3_models(model: str) -> tuple[Any, Any]:
    """The transformer and VAE of a published SD3 / SD3.5 checkpoint on the meta device (no weights), built once."""
    if model not in _models:
        from diffusers import AutoencoderKL, SD3Transformer2DModel

        with torch.device("meta"):
            _models[model] = (SD3Transformer2DModel(**SD3_TRANSFORMER_CONFIGS[model]), AutoencoderKL(**SD3_VAE_CONFIG))
    return _models[model]


def sd3_generation_compiles(
    model: str,
    height: int,
    width: int,
    batch_size: int = 1,
    arch: int = 90,
    dtype: torch.dtype = torch.float16,
    keep_compile_args: bool = False,
) -> list[Launch]:
    from sdkernels.replay import record_sd3_generation

    transformer, vae = meta_sd3_models(model)
    recorder = record_sd3_generation(
        transformer,
        vae,
        height=height,
        width=width,
        batch_size=batch_size,
        dtype=dtype,
        arch=arch,
        text_len=TEXT_TOKENS,
        keep_compile_args=keep_compile_args,
    )
    return recorder.compiles()
