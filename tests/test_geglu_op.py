"""sdkernels.ops.geglu (fused GEMM + gate) and sdkernels.ops.gelu_gate against fp64 references, under the Triton
interpreter. Rule (tests/tolerance.py): our error vs fp64 <= 2 x the error of diffusers' own math done in the same
dtype, plus a tiny floor. Token counts are small (interpreter speed) but channel counts include SD's real ones."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.activations import GEGLU

from sdkernels import ops
from sdkernels._dispatch import fallback_counts
from sdkernels.kernels import geglu as geglu_module
from sdkernels.kernels import gelu_gate as gelu_gate_module
from tests.tolerance import FLOOR, assert_matches_reference, max_abs_err

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def make_geglu_inputs(
    leading: tuple[int, ...], dim: int, inner: int, dtype: torch.dtype, bias: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """x ~ randn; weight and bias scaled like nn.Linear's init (1/sqrt(dim)), so value and gate are O(1)."""
    x = torch.randn(*leading, dim).to(dtype)
    weight = (torch.randn(2 * inner, dim) / math.sqrt(dim)).to(dtype)
    b = ((torch.rand(2 * inner) * 2 - 1) / math.sqrt(dim)).to(dtype) if bias else None
    return x, weight, b


def diffusers_geglu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, approximate: str = "none"
) -> torch.Tensor:
    """diffusers' GEGLU.forward math (proj, chunk, value * gelu(gate)) in the inputs' dtype."""
    hidden, gate = F.linear(x, weight, bias).chunk(2, dim=-1)
    return hidden * F.gelu(gate, approximate=approximate)


def check_geglu(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, what: str) -> None:
    ref64 = diffusers_geglu(x.double(), weight.double(), None if bias is None else bias.double())
    assert_matches_reference(out, diffusers_geglu(x, weight, bias), ref64, what=what)


def gate_reference(h: torch.Tensor) -> torch.Tensor:
    value, gate = h.chunk(2, dim=-1)
    return value * F.gelu(gate)


def check_gelu_gate(out: torch.Tensor, h: torch.Tensor, what: str) -> None:
    assert_matches_reference(out, gate_reference(h), gate_reference(h.double()), what=what)


# ------------------------------------------------------------------------------------------------------ geglu
# (leading dims of x, dim, inner): SD's 320 -> 1280 and 640 -> 2560, odd dims (K and N tails), 1-D and 3-D x,
# and 600 tokens (more row tiles than GROUP_M, so the grouped program order wraps).
GEGLU_CASES = {
    torch.float32: [((2, 9), 320, 1280), ((1,), 40, 24), ((2, 33), 72, 100)],
    torch.float16: [((130,), 320, 1280), ((37,), 640, 2560), ((3, 200), 40, 200), ((), 72, 100)],
    torch.bfloat16: [((2, 33), 320, 1280), ((37,), 40, 24), ((1,), 72, 100)],
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_geglu_matches_fp64(dtype: torch.dtype) -> None:
    for leading, dim, inner in GEGLU_CASES[dtype]:
        x, weight, bias = make_geglu_inputs(leading, dim, inner, dtype)
        out = ops.geglu(x, weight, bias)
        assert out.shape == (*leading, inner)
        check_geglu(out, x, weight, bias, f"geglu {dtype} x{tuple(x.shape)} inner={inner}")


def test_geglu_through_torch_ops_without_bias() -> None:
    x, weight, _ = make_geglu_inputs((2, 19), 320, 1280, torch.float16, bias=False)
    out = torch.ops.sdkernels.geglu(x, weight, None)
    check_geglu(out, x, weight, None, "torch.ops.sdkernels.geglu, bias None")


def copies_since(before: dict[tuple[str, str], int]) -> int:
    """Inputs copied (recorded as a slower path) since the `fallback_counts()` snapshot `before`."""
    return sum(n - before.get(key, 0) for key, n in fallback_counts().items() if "unit last stride" in key[1])


def test_geglu_reads_strided_views_in_place() -> None:
    """A slice of x (row stride > dim) and of the weight (row stride > dim) are read in place, without a copy."""
    x_wide, w_wide, bias = make_geglu_inputs((2, 37), 72 + 24, 100, torch.float16)
    x, weight = x_wide[..., 8:80], w_wide[:, 16:88]
    assert not x.is_contiguous() and not weight.is_contiguous() and x.stride(-1) == 1
    before = fallback_counts()
    out = ops.geglu(x, weight, bias)
    assert copies_since(before) == 0
    check_geglu(out, x, weight, bias, "geglu on slices of x and weight")


def test_geglu_copies_layouts_without_a_row_view() -> None:
    """x transposed from (L, B, dim) cannot flatten to one row stride, x with a non-unit last stride neither:
    both are copied, recorded in fallback_counts() (and logged once). A weight stored transposed (stride_wk != 1)
    is read through its strides."""
    _, weight, bias = make_geglu_inputs((1,), 40, 24, torch.float32)
    x_seq_first = torch.randn(21, 3, 40).transpose(0, 1)  # (B, L, dim) view with unit last stride
    x_channels_first = torch.randn(2, 40, 19).transpose(1, 2)  # last stride 19
    weight_t = weight.t().contiguous().t()
    assert weight_t.stride() == (1, 48)
    before = fallback_counts()
    for x in (x_seq_first, x_channels_first):
        check_geglu(ops.geglu(x, weight_t, bias), x, weight_t, bias, f"geglu x strides {x.stride()}")
    assert copies_since(before) == 2


def test_geglu_uses_exact_erf_gelu() -> None:
    """Gates spread over [-4, 4], where tanh-GELU differs from erf-GELU by up to ~1e-3: far above fp32 noise, so
    this fails for a tanh kernel (checked below: the tanh output itself fails the same rule)."""
    x, weight, bias = make_geglu_inputs((64,), 40, 24, torch.float32)
    x = x * 2.0
    out = ops.geglu(x, weight, bias)
    check_geglu(out, x, weight, bias, "geglu exact erf")
    ref64 = diffusers_geglu(x.double(), weight.double(), bias.double())
    tanh_err = max_abs_err(diffusers_geglu(x, weight, bias, approximate="tanh"), ref64)
    torch_err = max_abs_err(diffusers_geglu(x, weight, bias), ref64)
    assert tanh_err > 2 * torch_err + FLOOR[torch.float32], "the rule cannot tell tanh from erf here"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_geglu_equals_diffusers_module(dtype: torch.dtype) -> None:
    module = GEGLU(320, 1280).to(dtype)
    x = torch.randn(2, 24, 320).to(dtype)
    with torch.no_grad():
        expected = module(x)
        ref64 = module.double()(x.double())
    ours = ops.geglu(x, module.proj.weight.to(dtype), module.proj.bias.to(dtype))
    assert_matches_reference(ours, expected, ref64, what=f"diffusers GEGLU {dtype}")


def test_geglu_opcheck() -> None:
    x, weight, bias = make_geglu_inputs((5,), 40, 24, torch.float16)
    torch.library.opcheck(torch.ops.sdkernels.geglu.default, (x, weight, bias))


# -------------------------------------------------------------------------------------------------- gelu_gate
# (leading dims, inner): SD's 1280 and odd widths (column tails), 1-D and 3-D h.
GATE_CASES = [((37,), 1280), ((2, 33), 100), ((37,), 24), ((), 320)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gelu_gate_matches_fp64(dtype: torch.dtype) -> None:
    for leading, inner in GATE_CASES:
        h = (torch.randn(*leading, 2 * inner) * 2).to(dtype)
        out = ops.gelu_gate(h)
        assert out.shape == (*leading, inner) and out.dtype == dtype
        check_gelu_gate(out, h, f"gelu_gate {dtype} h{tuple(h.shape)}")


def test_gelu_gate_strided_and_via_torch_ops() -> None:
    h_wide = torch.randn(3, 29, 2 * 100 + 40).to(torch.bfloat16)
    h = h_wide[..., 8:208]  # unit last stride, row stride 240: read in place
    before = fallback_counts()
    check_gelu_gate(torch.ops.sdkernels.gelu_gate(h), h, "gelu_gate on a slice")
    assert copies_since(before) == 0
    h_t = torch.randn(48, 33).to(torch.float16).t()  # (33, 48) with last stride 33: copied once
    check_gelu_gate(ops.gelu_gate(h_t), h_t, "gelu_gate on a transposed h")
    assert copies_since(before) == 1


def test_gelu_gate_uses_exact_erf_gelu() -> None:
    h = torch.randn(16, 2 * 64) * 2
    out = ops.gelu_gate(h)
    check_gelu_gate(out, h, "gelu_gate exact erf")
    value, gate = h.double().chunk(2, dim=-1)
    tanh_err = max_abs_err(value * F.gelu(gate, approximate="tanh"), gate_reference(h.double()))
    assert tanh_err > 2 * max_abs_err(gate_reference(h), gate_reference(h.double())) + FLOOR[torch.float32]


def test_gelu_gate_opcheck() -> None:
    torch.library.opcheck(torch.ops.sdkernels.gelu_gate.default, (torch.randn(3, 2 * 24).to(torch.float16),))


# ---------------------------------------------------------------------------------------------------- routing
def test_ops_run_the_triton_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under the interpreter the ops must go through the kernels, not the PyTorch reference (else every test above
    would compare the reference with itself)."""
    calls: list[str] = []

    def spy(module: object, name: str) -> None:
        launcher = getattr(module, name)

        def recording_launcher(*args: object) -> torch.Tensor:
            calls.append(name)
            return launcher(*args)

        monkeypatch.setattr(module, name, recording_launcher)

    spy(geglu_module, "geglu")
    spy(gelu_gate_module, "gelu_gate")
    x, weight, bias = make_geglu_inputs((3,), 40, 24, torch.float32)
    ops.geglu(x, weight, bias)
    ops.gelu_gate(torch.randn(3, 48))
    assert calls == ["geglu", "gelu_gate"]


def test_empty_inputs() -> None:
    x, weight, bias = make_geglu_inputs((0,), 40, 24, torch.float16)
    assert ops.geglu(x, weight, bias).shape == (0, 24)
    assert ops.gelu_gate(torch.randn(2, 0, 48)).shape == (2, 0, 24)
