"""Bad input gets a clear error naming the problem, or a visible fallback, never a silent wrong answer; and inputs
for which fp64 PyTorch is finite give finite outputs that match it (tolerance rule)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

import sdkernels
from sdkernels import ops
from sdkernels._dispatch import fallback_counts, use_triton
from tests.tolerance import assert_matches_reference


@pytest.mark.parametrize(
    "target",
    [None, "unet", UNet2DConditionModel, {"unet": nn.Linear(2, 2)}, [nn.Linear(2, 2)]],
    ids=["None", "str", "class-not-instance", "dict-of-modules", "list-of-modules"],
)
@pytest.mark.parametrize("api", [sdkernels.patch, sdkernels.unpatch])
def test_patch_and_unpatch_reject_what_is_not_a_pipeline_or_module(api, target) -> None:
    with pytest.raises(
        TypeError,
        match=rf"expects a diffusers DiffusionPipeline or a torch.nn.Module, got .*"
        rf"{type(target).__name__}",
    ):
        api(target)


def _x(*shape: int, dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype, device=device)


BAD_CALLS = [
    # group_norm_silu
    (lambda: ops.group_norm_silu(_x(2, 64, 4, 4), 5), r"group_norm_silu: num_groups=5 must divide the 64 channels"),
    (lambda: ops.group_norm_silu(_x(2, 64, 4, 4), 32, _x(32)), r"group_norm_silu: weight must have shape \(64,\)"),
    (lambda: ops.group_norm_silu(_x(2, 64, 4, 4), 32, add=_x(2, 32)), r"add must have shape \(N, C\) = \(2, 64\)"),
    (lambda: ops.group_norm_silu(torch.ones(2, 64, 4, 4, dtype=torch.int32), 32), r"x must be a float tensor"),
    (lambda: ops.group_norm_silu(_x(64), 32), r"x must be \(N, C, \*spatial\), got shape \(64,\)"),
    (lambda: ops.group_norm_silu(_x(2, 64, 4, 4), 32, _x(64, device="meta")), r"all tensors must be on one device"),
    # attention
    (lambda: ops.attention(_x(2, 16, 40), _x(2, 16, 40), _x(2, 16, 40)), r"attention: q must be \(B, H, L, D\)"),
    (
        lambda: ops.attention(_x(1, 2, 16, 40), _x(1, 2, 16, 40, dtype=torch.float16), _x(1, 2, 16, 40)),
        r"q, k, v dtypes differ",
    ),
    (lambda: ops.attention(_x(1, 2, 16, 40), _x(2, 2, 16, 40), _x(2, 2, 16, 40)), r"batch and heads must match"),
    (lambda: ops.attention(_x(1, 2, 16, 40), _x(1, 2, 77, 40), _x(1, 2, 76, 40)), r"k and v lengths differ: 77 vs 76"),
    (lambda: ops.attention(_x(1, 2, 16, 40), _x(1, 2, 77, 32), _x(1, 2, 77, 32)), r"head dims differ: q 40, k 32"),
    (
        lambda: ops.attention(_x(1, 2, 16, 0), _x(1, 2, 77, 0), _x(1, 2, 77, 0)),
        r"attention: head dim must be at least 1",
    ),
    (
        lambda: ops.attention(_x(1, 2, 16, 40), _x(1, 2, 77, 40), _x(1, 2, 77, 40), attn_bias=_x(1, 2, 16, 76)),
        r"attn_bias of shape \(1, 2, 16, 76\) does not broadcast to \(B, H, Lq, Lk\) = \(1, 2, 16, 77\)",
    ),
    (
        lambda: ops.attention(_x(1, 2, 16, 40), _x(1, 2, 16, 40, device="meta"), _x(1, 2, 16, 40)),
        r"attention: all tensors must be on one device",
    ),
    # geglu / gelu_gate
    (lambda: ops.geglu(_x(2, 7, 32), _x(128, 64)), r"geglu: weight has in_features 64 but x has dim 32"),
    (lambda: ops.geglu(_x(2, 7, 32), _x(127, 32)), r"weight rows \(127\) must be 2\*inner"),
    (lambda: ops.geglu(_x(2, 7, 32), _x(128, 32, dtype=torch.float16)), r"x, weight and bias must share a dtype"),
    (lambda: ops.geglu(_x(2, 7, 32), _x(128, 32), _x(64)), r"bias must have shape \(128,\)"),
    (lambda: ops.gelu_gate(_x(2, 7, 33)), r"gelu_gate: last dim of h \(33\) must be even"),
]


@pytest.mark.parametrize(("call", "message"), BAD_CALLS, ids=[m[:40] for _, m in BAD_CALLS])
def test_ops_reject_mismatched_inputs_with_a_message_naming_the_problem(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("head_dim", [12, 520])
def test_unsupported_head_dim_falls_back_visibly_and_stays_right(head_dim: int) -> None:
    q, k, v = _x(1, 2, 16, head_dim), _x(1, 2, 24, head_dim), _x(1, 2, 24, head_dim)
    before = fallback_counts()
    got = ops.attention(q, k, v)
    reason = f"head_dim {head_dim} is not a multiple of 8 up to {ops.MAX_HEAD_DIM}"
    if use_triton(q.device):  # with a kernel expected on this device, the fallback is recorded
        assert fallback_counts().get(("attention", reason), 0) == before.get(("attention", reason), 0) + 1
    assert_matches_reference(
        got, F.scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    )


# Every tensor argument of every op, with valid shapes: one argument at a time gets a wrong dtype or type.
OP_CALLS = {
    "group_norm_silu": (
        lambda t: ops.group_norm_silu(t["x"], 32, t["weight"], t["bias"], add=t["add"]),
        {"x": (2, 64, 4, 4), "weight": (64,), "bias": (64,), "add": (2, 64)},
    ),
    "attention": (
        lambda t: ops.attention(t["q"], t["k"], t["v"], attn_bias=t["attn_bias"]),
        {"q": (1, 2, 16, 40), "k": (1, 2, 24, 40), "v": (1, 2, 24, 40), "attn_bias": (1, 2, 16, 24)},
    ),
    "geglu": (
        lambda t: ops.geglu(t["x"], t["weight"], t["bias"]),
        {"x": (2, 7, 32), "weight": (128, 32), "bias": (128,)},
    ),
    "gelu_gate": (lambda t: ops.gelu_gate(t["h"]), {"h": (2, 7, 32)}),
}
WRONG_KINDS = {
    "complex64": lambda shape: torch.randn(shape, dtype=torch.complex64),
    "int32": lambda shape: torch.ones(shape, dtype=torch.int32),
    "bool": lambda shape: torch.ones(shape, dtype=torch.bool),
    "list": lambda shape: torch.randn(shape).tolist(),
}
ARGUMENT_CASES = [(op, arg, kind) for op, (_, shapes) in OP_CALLS.items() for arg in shapes for kind in WRONG_KINDS]


@pytest.mark.parametrize("op", list(OP_CALLS))
def test_the_valid_calls_of_the_dtype_table_run(op: str) -> None:
    call, shapes = OP_CALLS[op]
    assert torch.isfinite(call({name: _x(*shape) for name, shape in shapes.items()})).all()


@pytest.mark.parametrize(("op", "arg", "kind"), ARGUMENT_CASES, ids=["-".join(c) for c in ARGUMENT_CASES])
def test_every_tensor_argument_has_its_dtype_checked_by_name(op: str, arg: str, kind: str) -> None:
    """A complex weight used to fail inside Triton with `KeyError: 'complex64'` (kernel path) or lose its imaginary
    part silently (reference path); an int or bool one was promoted silently."""
    call, shapes = OP_CALLS[op]
    tensors = {name: _x(*shape) for name, shape in shapes.items()}
    tensors[arg] = WRONG_KINDS[kind](shapes[arg])
    expected = "must be a torch.Tensor, got list" if kind == "list" else f"must be a float tensor, got torch.{kind}"
    with pytest.raises(ValueError, match=rf"sdkernels.{op}: {arg} {expected}"):
        call(tensors)


def _finite_case(name: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ours, torch in the same dtype, fp64 reference) for inputs that stress range and cancellation."""
    g = torch.Generator().manual_seed(3)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    if name == "group_norm: mean 1e4 x std":  # E[x²] - E[x]² cancels catastrophically; fp16 x² overflows
        x = (1e4 + randn(2, 64, 4, 4) * (1e-2 if dtype == torch.float32 else 1e2)).to(dtype)
        w, b = randn(64).to(dtype), randn(64).to(dtype)
        return (
            ops.group_norm_silu(x, 32, w, b, 1e-5),
            F.silu(F.group_norm(x, 32, w, b, 1e-5)),
            F.silu(F.group_norm(x.double(), 32, w.double(), b.double(), 1e-5)),
        )
    if name == "group_norm: constant groups, values near the dtype's max":  # variance 0 and huge |x|
        big = {torch.float16: 6e4, torch.bfloat16: 1e18, torch.float32: 1e18}[dtype]
        x = torch.full((2, 64, 4, 4), big, dtype=torch.float64)
        x[:, 32:] = -big * (1 + randn(2, 32, 4, 4).abs() * 1e-2)
        x = x.to(dtype)
        return (
            ops.group_norm_silu(x, 32, eps=1e-6),
            F.silu(F.group_norm(x, 32, eps=1e-6)),
            F.silu(F.group_norm(x.double(), 32, eps=1e-6)),
        )
    if name.startswith("attention"):  # logits ~ ±1000 (q, k ~ 30); -inf on some keys, -1e4 on all keys of a row
        q, k, v = (randn(1, 2, 40, 64) * 30).to(dtype), (randn(1, 2, 77, 64) * 30).to(dtype), randn(1, 2, 77, 64)
        bias = torch.zeros(1, 2, 40, 77, dtype=torch.float64)
        bias[..., 70:] = float("-inf")
        bias[:, :, 5] = -1e4
        v, bias = v.to(dtype), bias.to(dtype)
        return (
            ops.attention(q, k, v, attn_bias=bias),
            F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
            F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=bias.double()),
        )
    # gelu gate: gates of ±1e4 (gelu -> 0 and -> identity), values up to 5: products near fp16's max
    value, gate = randn(2, 7, 16).clamp(-5, 5), randn(2, 7, 16).sign() * 1e4
    h = torch.cat([value, gate], -1).to(dtype)
    value, gate = h.chunk(2, -1)
    return ops.gelu_gate(h), value * F.gelu(gate), h.double().chunk(2, -1)[0] * F.gelu(h.double().chunk(2, -1)[1])


FINITE_CASES = [
    "group_norm: mean 1e4 x std",
    "group_norm: constant groups, values near the dtype's max",
    "attention: huge logits, -inf keys",
    "gelu_gate: gates of ±1e4",
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", FINITE_CASES)
def test_finite_where_fp64_is_finite(name: str, dtype: torch.dtype) -> None:
    ours, theirs, ref64 = _finite_case(name, dtype)
    assert torch.isfinite(ref64).all()
    assert torch.isfinite(ours).all(), f"{name} {dtype}: non-finite output where fp64 PyTorch is finite"
    assert_matches_reference(ours, theirs, ref64, what=f"{name} {dtype}")
