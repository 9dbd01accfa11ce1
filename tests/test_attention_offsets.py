"""Attention offsets past 2³¹ elements and grids past CUDA's 65,535 limit on grid y/z, without allocating gigabytes:
the big operands are views into a sparse memory-mapped file (only the pages the kernel reads get memory), so an
offset that wraps in int32 reads the wrong place and the result differs from the fp64 reference."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import sdkernels.kernels.attention as attention_kernels
from sdkernels.kernels._launch import LaunchRecorder
from tests.tolerance import assert_matches_reference


def sparse_tensor(path: Path, elements: int, dtype: torch.dtype) -> torch.Tensor:
    """A 1-D tensor of `elements` zeros backed by a sparse file: no memory or disk until a page is written."""
    nbytes = elements * torch.empty((), dtype=dtype).element_size()
    with open(path, "wb") as f:
        f.truncate(nbytes)
    return torch.from_file(str(path), shared=True, size=elements, dtype=dtype)


def reference_check(q, k, v, bias, what):
    scale = 1.0 / math.sqrt(q.shape[-1])
    out = attention_kernels.attention(q, k, v, scale, bias)
    mask = None if bias is None else bias.to(q.dtype)
    same = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    ref = F.scaled_dot_product_attention(
        q.double(), k.double(), v.double(), attn_mask=None if bias is None else bias.double(), scale=scale
    )
    assert_matches_reference(out, same, ref, what=what)


def test_full_bias_whose_row_offsets_pass_2_31(tmp_path: Path) -> None:
    """A (1, 1, Lq, Lk) bias with row stride 2²³ + 8: query 300's row starts at 2.5·10⁹ elements (an SD1.5
    2048² self-attention mask has Lq·Lk = 4.3·10⁹). Every row holds different values."""
    lq, lk, head_dim, row_stride = 300, 77, 64, (1 << 23) + 8
    storage = sparse_tensor(tmp_path / "bias.bin", (lq - 1) * row_stride + lk, torch.float32)
    bias = storage.as_strided((1, 1, lq, lk), (0, 0, row_stride, 1))
    bias.copy_(torch.randn(1, 1, lq, lk) * 3)
    assert bias.storage_offset() == 0 and (lq - 1) * row_stride >= 2**31
    q, k, v = (torch.randn(1, 1, length, head_dim).half() for length in (lq, lk, lk))
    reference_check(q, k, v, bias, "bias rows past 2^31")


@pytest.mark.parametrize("which", ["q", "kv"])
def test_batch_offsets_past_2_31(tmp_path: Path, which: str) -> None:
    """q or k/v of batch 2 whose batch stride is 2³¹ + 64 elements (strides travel divided by 8: multiplied back in
    int32 they would wrap)."""
    head_dim, length, batch_stride = 40, 70, (1 << 31) + 64
    storage = sparse_tensor(tmp_path / f"{which}.bin", batch_stride + length * head_dim, torch.float16)
    big = storage.as_strided((2, 1, length, head_dim), (batch_stride, length * head_dim, head_dim, 1))
    big.copy_(torch.randn(2, 1, length, head_dim).half())
    small = [torch.randn(2, 1, length, head_dim).half() for _ in range(2)]
    q, k, v = (big, *small) if which == "q" else (small[0], big, big)
    reference_check(q, k, v, None, f"{which} batch stride {batch_stride}")


def test_grid_stays_within_cuda_limits() -> None:
    """Temporal attention puts batch·H·W rows on the batch dim: 2·128·128·2 = 65,536 (batch, head) pairs. The launch
    grid must keep y and z ≤ 65,535 (recorded, not run: the interpreter would take minutes)."""
    with LaunchRecorder(arch=80) as recorder:
        for head_dim in (64, 512):
            q = torch.zeros(32768, 2, 16, head_dim, dtype=torch.float16, device="meta")
            attention_kernels.attention(q, q, q, 0.125, None)
    grids = [launch.grid for launch in recorder.launches]
    assert len(grids) == 2
    for grid in grids:
        assert all(size <= 65535 for size in grid[1:]) and grid[0] < 2**31, grid
