"""The ahead-of-time compile specs of the fused GroupNorm: every kernel variant its launcher (group_norm.py) ships by
default, as the launch recorder sees it on sm_90 at representative SD shapes. Read by the compile report."""

from __future__ import annotations

import itertools

import torch

from sdkernels.kernels._launch import LaunchRecorder
from sdkernels.kernels._tuning import AotSpec
from sdkernels.kernels.group_norm import group_norm_silu

# ---------------------------------------------------------------------------------------------- AOT compile specs
# Representative SD shapes per layout, chosen to reach every kernel variant a default run compiles: NCHW's fused
# loop over long rows (32x32 latents and up) and short rows (8x8), and the split kernels (VAE decoder at 256x256);
# channels_last's one-tile (one and several groups per program), loop and split paths.
AOT_SHAPES = {
    "nchw": [(2, 1280, 32, 32), (2, 1280, 8, 8), (1, 128, 256, 256)],
    "channels_last": [(2, 1280, 8, 8), (2, 320, 8, 8), (2, 320, 24, 24), (1, 128, 256, 256)],
}


def aot_specs() -> list[AotSpec]:
    """Every kernel variant the launcher ships by default, as the launch recorder sees it on sm_90 at SD shapes
    (AOT_SHAPES) in fp16/bf16/fp32, weight, bias, add and SiLU on: signature, JIT specialisation, constexprs and
    launch options exactly as launched. (Opt-in autotuning may also try the other TILE_CONFIGS on channels_last.)"""
    specs: list[AotSpec] = []
    for dtype, layout in itertools.product((torch.float16, torch.bfloat16, torch.float32), AOT_SHAPES):
        with LaunchRecorder(arch=90) as recorder:
            for shape in AOT_SHAPES[layout]:
                memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                x = torch.empty(shape, dtype=dtype, device="meta", memory_format=memory_format)
                weight = torch.empty(shape[1], dtype=dtype, device="meta")
                add = torch.empty(shape[:2], dtype=dtype, device="meta")
                group_norm_silu(x, 32, weight, weight, 1e-5, True, add)
        for launch in recorder.compiles():
            tiles = launch.constexprs
            variant = f"{launch.kernel.rsplit('.', 1)[-1]} {layout} {str(dtype)[6:]} tile{tiles['TILE']} "
            variant += f"{tiles['BLOCK_C']}x{tiles['BLOCK_S']}"
            if tiles.get("ONE_TILE"):
                variant += f" one-tile x{tiles['GROUPS_PER_PROGRAM']}"
            specs.append(
                AotSpec(
                    kernel="group_norm_silu",
                    variant=variant,
                    fn=launch.fn,
                    signature={n: "i32" if n in launch.equal_to_1 else t for n, t in launch.signature.items()},
                    constexprs=dict(launch.constexprs),
                    num_warps=launch.num_warps,
                    num_stages=launch.num_stages,
                    uses_dot=False,
                    divisible_by_16=launch.divisible_by_16,
                    equal_to_1=launch.equal_to_1,
                )
            )
    return specs
