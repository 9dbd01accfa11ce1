"""The public ops. Each is a torch custom op `torch.ops.sdkernels.<name>` (so torch.compile traces it without a
graph break and profilers show it) with a fake implementation, input checks that name the problem, and dispatch:
CUDA -> Triton kernel; CPU -> the same kernel under TRITON_INTERPRET=1, else the PyTorch reference
(sdkernels/reference.py). Shapes or dtypes a kernel does not cover take the reference path visibly
(`sdkernels._dispatch.note_fallback`)."""

from __future__ import annotations

import math

import torch

from sdkernels import reference
from sdkernels._dispatch import interpreter_bf16_problem, note_fallback, use_triton

Tensor = torch.Tensor
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 512


def _check(condition: bool, op: str, message: str) -> None:
    if not condition:
        raise ValueError(f"sdkernels.{op}: {message}")


def _check_same_device(op: str, **tensors: Tensor | None) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    _check(len(set(devices.values())) <= 1, op, f"all tensors must be on one device, got {devices}")


def _kernel_ok(op: str, device: torch.device, dtype: torch.dtype) -> bool:
    if not use_triton(device):
        return False
    if dtype not in KERNEL_DTYPES:
        note_fallback(op, f"dtype {dtype} has no kernel")
        return False
    problem = interpreter_bf16_problem(device, dtype)
    if problem is not None:
        note_fallback(op, problem)
        return False
    return True


# ----------------------------------------------------------------------------------------------- GroupNorm + SiLU
def _check_group_norm(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, add: Tensor | None
) -> None:
    op = "group_norm_silu"
    _check(x.dim() >= 2, op, f"x must be (N, C, *spatial), got shape {tuple(x.shape)}")
    _check(x.is_floating_point(), op, f"x must be a float tensor, got {x.dtype}")
    channels = x.shape[1]
    _check(
        num_groups > 0 and channels % num_groups == 0,
        op,
        f"num_groups={num_groups} must divide the {channels} channels of x",
    )
    for name, p in (("weight", weight), ("bias", bias)):
        _check(
            p is None or tuple(p.shape) == (channels,),
            op,
            f"{name} must have shape ({channels},), got {None if p is None else tuple(p.shape)}",
        )
    _check(
        add is None or tuple(add.shape) == (x.shape[0], channels),
        op,
        f"add must have shape (N, C) = {(x.shape[0], channels)}, got {None if add is None else tuple(add.shape)}",
    )
    _check_same_device(op, x=x, weight=weight, bias=bias, add=add)


@torch.library.custom_op("sdkernels::group_norm_silu", mutates_args=())
def _group_norm_silu(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, silu: bool, add: Tensor | None
) -> Tensor:
    if _kernel_ok("group_norm_silu", x.device, x.dtype):
        from sdkernels.kernels.group_norm import group_norm_silu as kernel

        return kernel(x, num_groups, weight, bias, eps, silu, add)
    return reference.group_norm_silu(x, num_groups, weight, bias, eps, silu, add)


@_group_norm_silu.register_fake
def _(x, num_groups, weight, bias, eps, silu, add):
    return torch.empty_like(x)


def group_norm_silu(
    x: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    *,
    silu: bool = True,
    add: Tensor | None = None,
) -> Tensor:
    """SiLU(GroupNorm(x + add[:, :, None, None])) in one pass, statistics in fp32.

    x: (N, C, *spatial) fp32/fp16/bf16, contiguous or channels_last (read in place); output has x's dtype and
    memory format. weight/bias: (C,) or None. add: (N, C) or None, added before the statistics (ResnetBlock2D's
    temb). `silu=False` gives plain GroupNorm.
    """
    _check_group_norm(x, num_groups, weight, bias, add)
    return torch.ops.sdkernels.group_norm_silu(x, num_groups, weight, bias, float(eps), bool(silu), add)


# ----------------------------------------------------------------------------------------------------- attention
def attention_kernel_problem(q: Tensor, attn_bias: Tensor | None) -> str | None:
    head_dim = q.shape[-1]
    if head_dim % 8 != 0 or head_dim > MAX_HEAD_DIM:
        return f"head_dim {head_dim} is not a multiple of 8 up to {MAX_HEAD_DIM}"
    return None


def _check_attention(q: Tensor, k: Tensor, v: Tensor, attn_bias: Tensor | None) -> None:
    op = "attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check(t.dim() == 4, op, f"{name} must be (B, H, L, D), got shape {tuple(t.shape)}")
        _check(t.is_floating_point(), op, f"{name} must be a float tensor, got {t.dtype}")
    _check(q.dtype == k.dtype == v.dtype, op, f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    _check(
        q.shape[:2] == k.shape[:2] == v.shape[:2],
        op,
        f"batch and heads must match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}",
    )
    _check(k.shape[2] == v.shape[2], op, f"k and v lengths differ: {k.shape[2]} vs {v.shape[2]}")
    _check(
        q.shape[3] == k.shape[3] == v.shape[3], op, f"head dims differ: q {q.shape[3]}, k {k.shape[3]}, v {v.shape[3]}"
    )
    _check(k.shape[2] > 0, op, "k and v must have at least one key")
    if attn_bias is not None:
        _check(attn_bias.is_floating_point(), op, f"attn_bias must be an additive float bias, got {attn_bias.dtype}")
        target = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        try:
            torch.broadcast_shapes(attn_bias.shape, target)
            ok = attn_bias.dim() <= 4 and torch.broadcast_shapes(attn_bias.shape, target) == target
        except RuntimeError:
            ok = False
        _check(ok, op, f"attn_bias of shape {tuple(attn_bias.shape)} does not broadcast to (B, H, Lq, Lk) = {target}")
    _check_same_device(op, q=q, k=k, v=v, attn_bias=attn_bias)


@torch.library.custom_op("sdkernels::attention", mutates_args=())
def _attention(q: Tensor, k: Tensor, v: Tensor, scale: float, attn_bias: Tensor | None) -> Tensor:
    if _kernel_ok("attention", q.device, q.dtype):
        problem = attention_kernel_problem(q, attn_bias)
        if problem is None:
            from sdkernels.kernels.attention import attention as kernel

            return kernel(q, k, v, scale, attn_bias)
        note_fallback("attention", problem)
    return reference.attention(q, k, v, scale, attn_bias)


@_attention.register_fake
def _(q, k, v, scale, attn_bias):
    batch, heads, lq, _ = q.shape
    return q.new_empty(batch, lq, heads, v.shape[-1]).transpose(1, 2)


def attention(
    q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None, attn_bias: Tensor | None = None
) -> Tensor:
    """softmax(q kᵀ · scale + attn_bias) v, accumulated in fp32, without materialising the Lq×Lk matrix.

    q: (B, H, Lq, D); k, v: (B, H, Lk, D); any strides with a unit last stride are read in place. scale defaults
    to 1/sqrt(D). attn_bias: additive float bias broadcastable to (B, H, Lq, Lk). Returns (B, H, Lq, D) in q's
    dtype, laid out as (B, Lq, H, D) so `out.transpose(1, 2).reshape(B, Lq, H * D)` is free.
    """
    _check_attention(q, k, v, attn_bias)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if attn_bias is not None and attn_bias.dim() < 4:
        attn_bias = attn_bias.reshape((1,) * (4 - attn_bias.dim()) + tuple(attn_bias.shape))
    return torch.ops.sdkernels.attention(q, k, v, scale, attn_bias)


# ------------------------------------------------------------------------------------------------- GEGLU family
def _check_geglu(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    op = "geglu"
    _check(x.dim() >= 1 and x.is_floating_point(), op, f"x must be a float tensor (..., dim), got {x.dtype}")
    _check(weight.dim() == 2, op, f"weight must be (2*inner, dim), got shape {tuple(weight.shape)}")
    _check(weight.shape[1] == x.shape[-1], op, f"weight has in_features {weight.shape[1]} but x has dim {x.shape[-1]}")
    _check(
        weight.shape[0] % 2 == 0 and weight.shape[0] > 0,
        op,
        f"weight rows ({weight.shape[0]}) must be 2*inner (value rows, then gate rows)",
    )
    _check(
        bias is None or tuple(bias.shape) == (weight.shape[0],),
        op,
        f"bias must have shape ({weight.shape[0]},), got {None if bias is None else tuple(bias.shape)}",
    )
    _check(
        weight.dtype == x.dtype and (bias is None or bias.dtype == x.dtype),
        op,
        f"x, weight and bias must share a dtype, got {x.dtype}, {weight.dtype}, {None if bias is None else bias.dtype}",
    )
    _check_same_device(op, x=x, weight=weight, bias=bias)


@torch.library.custom_op("sdkernels::geglu", mutates_args=())
def _geglu(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    if _kernel_ok("geglu", x.device, x.dtype):
        from sdkernels.kernels.geglu import geglu as kernel

        return kernel(x, weight, bias)
    return reference.geglu(x, weight, bias)


@_geglu.register_fake
def _(x, weight, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0] // 2)


def geglu(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """(x Wvᵀ + bv) · gelu(x Wgᵀ + bg) in one GEMM with the gate in its epilogue (exact erf GELU).

    weight is (2*inner, dim) as diffusers' `GEGLU.proj` stores it: rows [0, inner) are the value, rows
    [inner, 2*inner) the gate. x is (..., dim); returns (..., inner) in x's dtype.
    """
    _check_geglu(x, weight, bias)
    return torch.ops.sdkernels.geglu(x, weight, bias)


@torch.library.custom_op("sdkernels::gelu_gate", mutates_args=())
def _gelu_gate(h: Tensor) -> Tensor:
    if _kernel_ok("gelu_gate", h.device, h.dtype):
        from sdkernels.kernels.gelu_gate import gelu_gate as kernel

        return kernel(h)
    return reference.gelu_gate(h)


@_gelu_gate.register_fake
def _(h):
    return h.new_empty(*h.shape[:-1], h.shape[-1] // 2)


def gelu_gate(h: Tensor) -> Tensor:
    """value · gelu(gate) for h = cat([value, gate], -1) of shape (..., 2*inner): one elementwise pass."""
    _check(h.dim() >= 1 and h.is_floating_point(), "gelu_gate", f"h must be a float tensor, got {h.dtype}")
    _check(h.shape[-1] % 2 == 0, "gelu_gate", f"last dim of h ({h.shape[-1]}) must be even (value, gate)")
    return torch.ops.sdkernels.gelu_gate(h)


# ---------------------------------------------------------------------------------------------------- autograd
# The kernels are forward-only; gradients (training a LoRA through a patched UNet, gradient checkpointing) are
# computed by differentiating the PyTorch reference at the saved inputs. Correct, not fast: inference is the target.
def _register_reference_backward(op, reference_fn, tensor_args: tuple[int, ...]) -> None:
    def setup_context(ctx, inputs, output) -> None:
        ctx.inputs = inputs
        ctx.save_for_backward(*(inputs[i] for i in tensor_args if inputs[i] is not None))

    def backward(ctx, grad_output):
        saved = iter(ctx.saved_tensors)
        inputs = list(ctx.inputs)
        leaves = []
        for i in tensor_args:
            if inputs[i] is not None:
                leaf = next(saved).detach().requires_grad_(True)
                inputs[i] = leaf
                leaves.append((i, leaf))
        with torch.enable_grad():
            out = reference_fn(*inputs)
            grads = torch.autograd.grad(out, [leaf for _, leaf in leaves], grad_output, allow_unused=True)
        result: list[Tensor | None] = [None] * len(inputs)
        for (i, _), g in zip(leaves, grads, strict=True):
            result[i] = g
        return tuple(result)

    op.register_autograd(backward, setup_context=setup_context)


_register_reference_backward(_group_norm_silu, reference.group_norm_silu, (0, 2, 3, 6))
_register_reference_backward(_attention, reference.attention, (0, 1, 2, 4))
_register_reference_backward(_geglu, reference.geglu, (0, 1, 2))
_register_reference_backward(_gelu_gate, reference.gelu_gate, (0,))
