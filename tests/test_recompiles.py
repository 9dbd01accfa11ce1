"""torch.compile across resolutions and batch sizes: a patched UNet recompiles no more often than the unpatched one
(dynamo's own counters over four input shapes), and CUDA-graph capture of a patched UNet step (GPU-marked)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import sdkernels
from sdkernels import _dispatch
from tests.dropin import small_unet, unet_inputs

SHAPES = [(1, 8), (1, 16), (2, 8), (2, 12)]  # (batch, latent side)


def _graphs_compiled(patched: bool) -> int:
    unet = small_unet()
    if patched:
        sdkernels.patch(unet)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(unet, backend="eager")
    with torch.no_grad():
        for batch, size in SHAPES:
            compiled(*unet_inputs(unet, batch=batch, size=size))
    return counters["stats"]["unique_graphs"]


@pytest.mark.slow
def test_patched_unet_recompiles_no_more_than_unpatched(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tracing is what recompiles; the ops' bodies run on the PyTorch reference here (no interpreter) to keep it fast.
    monkeypatch.setattr(_dispatch, "INTERPRET", False)
    unpatched, patched = _graphs_compiled(False), _graphs_compiled(True)
    assert patched <= unpatched, (patched, unpatched)
    assert unpatched < len(SHAPES)  # the shapes really exercise dynamic shapes (else the check says nothing)


# ------------------------------------------------------------------------------------------------ GPU-marked
def _cuda_unet() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    unet = small_unet().to("cuda", torch.float16)
    sdkernels.patch(unet)
    inputs = tuple(t.to("cuda", torch.float16) if t.is_floating_point() else t.cuda() for t in unet_inputs(unet))
    return unet, inputs


@pytest.mark.gpu
def test_patched_unet_step_captures_in_a_cuda_graph() -> None:
    unet, inputs = _cuda_unet()
    static = [t.clone() for t in inputs]
    with torch.no_grad():
        eager = unet(*static).sample
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            unet(*static)  # compile every kernel before capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = unet(*static).sample
        graph.replay()
    torch.testing.assert_close(captured, eager)


@pytest.mark.gpu
def test_patched_unet_under_reduce_overhead_compile() -> None:
    unet, inputs = _cuda_unet()
    compiled = torch.compile(unet, mode="reduce-overhead")
    with torch.no_grad():
        eager = unet(*inputs).sample
        for _ in range(3):  # warm-up runs, then the CUDA-graph replay
            out = compiled(*inputs).sample
    torch.testing.assert_close(out, eager, atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
def test_launches_on_the_tensors_device_not_the_current_one() -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    x = torch.randn(2, 64, 8, 8, device="cuda:1", dtype=torch.float16)
    with torch.cuda.device(0):
        out = sdkernels.ops.group_norm_silu(x, 32)
    expected = torch.nn.functional.silu(torch.nn.functional.group_norm(x.float(), 32)).half()
    torch.testing.assert_close(out, expected, atol=2e-2, rtol=2e-2)
