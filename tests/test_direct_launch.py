"""The direct launch path (sdkernels/kernels/_direct.py): a repeated call signature reuses the compiled kernel
without Triton's binder. Checked without a GPU under a stub recorder with `verify_direct`: every direct launch is
compared with what Triton's own binder gives the same arguments (same compiled kernel, same launcher arguments),
across pointer alignments. On a GPU: results of direct launches equal the first (JIT) launch's."""

from __future__ import annotations

import importlib

import pytest
import torch

from sdkernels import ops
from sdkernels.kernels import _direct
from sdkernels.kernels._launch import LaunchRecorder
from sdkernels.kernels._tuning import set_autotune

FP16 = torch.float16
attention_op = importlib.import_module("sdkernels.ops.attention")  # the module (sdkernels.ops.attention is the op)


def _offset(shape: tuple[int, ...], elements: int) -> torch.Tensor:
    """A contiguous fp16 tensor starting `elements` past a fresh allocation (2 bytes each: misaligned unless 8 | it)."""
    numel = 1
    for size in shape:
        numel *= size
    return torch.randn(numel + elements, dtype=FP16)[elements:].view(shape)


def _calls(elements: int) -> list:
    """Every op with direct calls, on SD / SD3 channel counts, its inputs starting `elements` into their storage."""
    q = _offset((2, 64, 320), elements).view(2, 64, 8, 40).transpose(1, 2)
    kv = _offset((2, 77, 320), elements).view(2, 77, 8, 40).transpose(1, 2)
    x, w, b = _offset((2, 64, 320), elements), _offset((2560, 320), elements), _offset((2560,), 0)
    h = _offset((2, 64, 2560), elements)
    g, gw, add = _offset((2, 320, 8, 8), elements), _offset((320,), 0), _offset((2, 320), 0)
    t, mod, up = _offset((2, 16, 1536), elements), _offset((2, 1536), elements), _offset((6144, 1536), elements)
    return [
        lambda: ops.attention(q, q, q),
        lambda: ops.attention(q, kv, kv),
        lambda: ops.geglu(x, w, b),
        lambda: ops.gelu_gate(h),
        lambda: ops.group_norm_silu(g, 32, gw, gw, add=add),
        lambda: ops.ada_layer_norm(t, mod, mod),  # SD3's AdaLayerNorm-Zero modulation and feed-forward GEMM
        lambda: ops.linear_gelu(t, up, None),
    ]


def test_direct_launches_match_tritons_binder() -> None:
    with torch.no_grad(), LaunchRecorder(90, stub=True, verify_direct=True) as recorder:
        for elements in (0, 8, 1, 0, 3, 1):  # aligned, aligned elsewhere, misaligned twice, back to aligned
            for call in _calls(elements):
                call()
                call()
    assert recorder.direct_launches >= 2 * 6 * 7 - 3 * 7  # all but the first launch of each (site, alignment)
    kernels_by_alignment = {key for _, key in recorder.direct_kernels}
    assert len(kernels_by_alignment) >= 2, "misaligned pointers must select their own compiled kernel"


def test_verification_catches_a_site_that_ignores_alignment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a direct path that reused the aligned kernel for misaligned pointers is caught."""
    monkeypatch.setattr(_direct.LaunchSite, "key", lambda self, args, index: index)
    with torch.no_grad(), LaunchRecorder(90, stub=True, verify_direct=True):
        _calls(0)[2]()
        with pytest.raises(AssertionError, match="keys as"):
            _calls(1)[2]()


def test_direct_calls_do_not_outlive_the_recorder() -> None:
    q = torch.randn(1, 8, 16, 40, dtype=torch.float32)
    with torch.no_grad(), LaunchRecorder(90, stub=True):
        ops.attention(q, q, q)
        assert attention_op._direct_calls
    assert not attention_op._direct_calls  # stand-in kernels must never serve a real call
    expected = torch.softmax(q.double() @ q.double().transpose(-1, -2) / 40**0.5, -1) @ q.double()
    torch.testing.assert_close(ops.attention(q, q, q).double(), expected, rtol=1e-4, atol=1e-5)


def test_cached_calls_keep_no_input_alive() -> None:
    """A call cached per signature must not hold its first inputs (an SDXL VAE activation is 256 MB)."""
    import gc
    import weakref

    with torch.no_grad(), LaunchRecorder(90, stub=True):
        inputs = [_offset((2, 320, 8, 8), 0), _offset((2, 64, 320), 0), _offset((2, 64, 2560), 0)]
        inputs.append(_offset((2, 16, 1536), 0))
        weight, up, mod = _offset((320,), 0), _offset((2560, 320), 0), _offset((2, 1536), 0)
        ops.group_norm_silu(inputs[0], 32, weight, weight)
        ops.geglu(inputs[1], up)
        ops.gelu_gate(inputs[2])
        ops.attention(*(inputs[1].view(2, 64, 8, 40).transpose(1, 2),) * 3)
        ops.ada_layer_norm(inputs[3], mod, mod)
        refs = [weakref.ref(t) for t in inputs]
        del inputs
        gc.collect()
        assert all(ref() is None for ref in refs)


def test_switching_autotune_forgets_direct_calls() -> None:
    with torch.no_grad(), LaunchRecorder(90, stub=True):
        q = torch.randn(1, 8, 16, 40, dtype=FP16)
        ops.attention(q, q, q)
        assert attention_op._direct_calls
        set_autotune(False)
        assert not attention_op._direct_calls


def test_bad_input_after_a_remembered_call_still_names_the_problem() -> None:
    with torch.no_grad(), LaunchRecorder(90, stub=True):
        q = torch.randn(1, 8, 16, 40, dtype=FP16)
        ops.attention(q, q, q)
        with pytest.raises(ValueError, match="head dims differ"):
            ops.attention(q, q, q[..., :32])
        with pytest.raises(ValueError, match="must be a torch.Tensor"):
            ops.attention(q, [1.0], q)


@pytest.mark.gpu
def test_direct_launches_compute_what_the_first_launch_computed() -> None:
    torch.manual_seed(0)
    q = torch.randn(2, 8, 256, 40, device="cuda", dtype=FP16)
    x, w = torch.randn(2, 256, 320, device="cuda", dtype=FP16), torch.randn(2560, 320, device="cuda", dtype=FP16)
    h = torch.randn(2, 256, 2560, device="cuda", dtype=FP16)
    g, gw = torch.randn(2, 320, 16, 16, device="cuda", dtype=FP16), torch.randn(320, device="cuda", dtype=FP16)
    for call in (
        lambda: ops.attention(q, q, q),
        lambda: ops.geglu(x, w),
        lambda: ops.gelu_gate(h),
        lambda: ops.group_norm_silu(g, 32, gw, gw),
    ):
        first, second = call(), call()  # the second takes the direct path
        assert torch.equal(first, second)
    misaligned = torch.randn(q.numel() + 1, device="cuda", dtype=FP16)[1:].view(q.shape)  # needs its own kernel
    aligned = misaligned.clone()
    for _ in range(2):
        assert torch.equal(ops.attention(misaligned, misaligned, misaligned), ops.attention(aligned, aligned, aligned))
