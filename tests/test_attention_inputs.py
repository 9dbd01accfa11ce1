"""How the flash-attention kernels read their inputs, under the Triton interpreter: diffusers' projection views and
unaligned rows are read in place (the kernels receive the caller's pointers and strides), a non-unit last stride is
copied once, and masked lanes never read past a tensor (NaN-padded buffers)."""

from __future__ import annotations

import pytest
import torch

from sdkernels.kernels import attention as attention_kernels
from tests.attention_cases import BF16, FP16, FP32, check, key_padding_bias


@pytest.fixture
def kernel_args():
    """Records (data_ptr, strides) of Q, K, V and Bias as the kernels receive them."""
    seen = []
    hooks = []
    for kernel in (attention_kernels.attention_pieces_kernel, attention_kernels.attention_dv_split_kernel):
        while not hasattr(kernel, "add_pre_run_hook") or hasattr(kernel, "configs"):
            kernel = kernel.fn  # unwrap autotune / heuristics down to the (interpreted) jit function

        def hook(*args, **kwargs):
            seen.append([(t.data_ptr(), t.stride()) for t in args[:4]])

        kernel.add_pre_run_hook(hook)
        hooks.append((kernel, hook))
    yield seen
    for kernel, hook in hooks:
        kernel.pre_run_hooks.remove(hook)


@pytest.mark.parametrize("head_dim,heads", [(40, 8), (80, 2), (512, 1)])
def test_projection_views_are_read_in_place(kernel_args, head_dim, heads):
    """q, k, v as diffusers makes them: (B, L, H*D) projections viewed as (B, L, H, D) and transposed."""
    batch, lq, lk = 2, 66, 77
    q, k, v = (
        torch.randn(batch, length, heads * head_dim).half().view(batch, length, heads, head_dim).transpose(1, 2)
        for length in (lq, lk, lk)
    )
    bias = key_padding_bias(batch, 1, lk, FP16)
    check(q, k, v, bias=bias, what="projection views")
    expanded = bias.expand(batch, heads, lq, lk)
    assert kernel_args == [[(t.data_ptr(), t.stride()) for t in (q, k, v, expanded)]]


def test_unaligned_row_strides_and_non_unit_last_stride(kernel_args):
    base = torch.randn(1, 2, 50, 41).half()
    q = base[..., :40]  # row stride 41: read in place, no 16-byte alignment claimed
    k, v = (torch.randn(1, 2, 40, 77).half().transpose(-1, -2) for _ in range(2))  # last stride 77: copied once
    check(q, k, v, what="unaligned rows / transposed k, v")
    ((q_arg, k_arg, v_arg, _),) = kernel_args
    assert q_arg == (q.data_ptr(), q.stride())
    assert k_arg[1][-1] == 1 and v_arg[1][-1] == 1 and k_arg[0] != k.data_ptr()


@pytest.mark.parametrize("head_dim,dtype", [(40, FP16), (264, BF16), (72, FP32)])
def test_masked_lanes_never_read_past_the_tensors(head_dim, dtype):
    """q, k, v inside NaN-filled buffers (8 extra columns, 7 extra rows): any read past D or past L turns the
    output NaN, since an unmasked lane would feed a score or a P·V product."""

    def padded(length):
        buffer = torch.full((1, 2, length + 7, head_dim + 8), float("nan"), dtype=dtype)
        buffer[:, :, :length, :head_dim] = torch.randn(1, 2, length, head_dim).to(dtype)
        return buffer[:, :, :length, :head_dim]

    check(padded(37), padded(77), padded(77), what="NaN-padded views")
