"""The distinct Triton compiles of one SD3 / SD3.5 generation (transformer step at the guidance batch, then the VAE
decode), recorded on the meta device like `sdkernels.tools.coldstart` does for the UNet pipelines: the published
architectures (sdkernels.tools.sd3_shapes) are built weightless, patched, and run inside a LaunchRecorder for the
target GPU architecture. SD3's pipeline decodes in its own dtype (no fp32 upcast of the VAE)."""

from __future__ import annotations

from typing import Any

import torch

from sdkernels.kernels._launch import Launch, LaunchRecorder
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
    from sdkernels.patch import patch
    from sdkernels.replay import meta_twin

    transformer, vae = meta_sd3_models(model)
    recorder = LaunchRecorder(arch, keep_compile_args=keep_compile_args)
    batch = 2 * batch_size  # classifier-free guidance
    config = transformer.config
    with torch.no_grad():
        twin = meta_twin(transformer, dtype)
        patch(twin)
        inputs = {
            "hidden_states": torch.empty(
                batch, config.in_channels, height // 8, width // 8, dtype=dtype, device="meta"
            ),
            "encoder_hidden_states": torch.empty(
                batch, TEXT_TOKENS, config.joint_attention_dim, dtype=dtype, device="meta"
            ),
            "pooled_projections": torch.empty(batch, config.pooled_projection_dim, dtype=dtype, device="meta"),
            "timestep": torch.empty(batch, dtype=dtype, device="meta"),
        }
        with recorder:
            twin(**inputs)
        decoder = meta_twin(vae, dtype)
        patch(decoder)
        latents = torch.empty(
            batch_size, vae.config.latent_channels, height // 8, width // 8, dtype=dtype, device="meta"
        )
        with recorder:
            decoder.decode(latents)
    return recorder.compiles()
