"""GroupNorm past 2**31 elements (issue 11 item 5): SDXL's VAE decoder at batch 16 is (16, 128, 1024, 1024), 2.1e9
elements. Sample offsets are 64-bit in the kernels and every grid stays within CUDA's limits; the tests use views
whose strides are huge while only a few kilobytes are ever touched (a 4 GiB CPU reservation stays virtual)."""

from __future__ import annotations

import pytest
import torch

from sdkernels import ops, reference
from sdkernels.kernels._launch import LaunchRecorder

pytestmark = pytest.mark.usefixtures("group_norm_gpu_tiles")  # the NCHW tiles a GPU launches


GRID_Y_Z_MAX = 65535


def test_sample_offsets_past_two_to_the_31() -> None:
    # Sample 1 starts 2**31 elements (4 GiB of fp16) after sample 0: a 32-bit sample offset would wrap to sample 0.
    try:
        storage = torch.empty(2**31 + 64 * 16, dtype=torch.float16)
    except RuntimeError:
        pytest.skip("cannot reserve 4 GiB of address space here")
    x = storage.as_strided((2, 64, 4, 4), (2**31, 16, 4, 1))
    values = torch.randn(2, 64, 4, 4) * 2 + 1
    x.copy_(values.to(torch.float16))
    storage[64 * 16 : 4 * 64 * 16].fill_(float("nan"))  # after sample 0: poison for an offset that falls short
    weight = torch.rand(64, dtype=torch.float16) + 0.5
    out = ops.group_norm_silu(x, 32, weight, weight)
    expected = reference.group_norm_silu(x.double(), 32, weight.double(), weight.double(), 1e-5, True, None)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), expected, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("shape", [(16, 128, 1024, 1024), (16, 256, 512, 512), (64, 512, 128, 128)])
def test_sdxl_vae_batch_16_launches_within_grid_limits(shape: tuple[int, ...]) -> None:
    x = torch.empty(shape, dtype=torch.float16, device="meta")
    weight = torch.empty(shape[1], dtype=torch.float16, device="meta")
    with LaunchRecorder(arch=90) as recorder:
        ops.group_norm_silu(x, 32, weight, weight)
    assert recorder.launches, "took the kernel path"
    for launch in recorder.launches:
        assert launch.grid[0] < 2**31 and max(launch.grid[1:]) <= GRID_Y_Z_MAX, launch.grid
        # The sample stride is a runtime int (i32 up to 2**31, i64 beyond); the kernel widens n before multiplying.
        assert launch.signature["stride_xn"] in ("i32", "i64")
