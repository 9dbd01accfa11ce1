"""What every op shares: input checks that name the problem, the kernel-or-reference decision, and the backward that
differentiates the PyTorch reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sdkernels._dispatch import interpreter_bf16_problem, note_fallback, recording, use_triton
from sdkernels.kernels._direct import direct_allowed

Tensor = torch.Tensor
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 512


def check(condition: bool, op: str, message: str | Callable[[], str]) -> None:
    """Raise ValueError naming the op and the problem unless `condition`. Pass the message as a lambda when it
    formats values: it is then built only on the error path (checks run on every call of a hot op)."""
    if not condition:
        raise ValueError(f"sdkernels.{op}: {message() if callable(message) else message}")


def check_float_tensors(op: str, **tensors: Tensor | None) -> None:
    """Every tensor argument (None for an optional one left out) is a real floating-point tensor. Checked before
    anything reads them: a complex weight would otherwise fail inside Triton with a bare KeyError on the kernel path
    and lose its imaginary part silently on the reference path; an integer or bool one would be promoted silently."""
    for name, t in tensors.items():
        if t is None:
            continue
        if not (isinstance(t, Tensor) and t.is_floating_point()):  # messages built only on the error path
            check(isinstance(t, Tensor), op, f"{name} must be a torch.Tensor, got {type(t).__name__}")
            check(t.is_floating_point(), op, f"{name} must be a float tensor, got {t.dtype}")


def check_same_device(op: str, **tensors: Tensor | None) -> None:
    device = None
    for t in tensors.values():
        if t is not None:
            if device is None:
                device = t.device
            elif t.device != device:
                devices = {name: t.device for name, t in tensors.items() if t is not None}
                check(False, op, f"all tensors must be on one device, got {devices}")


def run_directly(first: Tensor, *others: Tensor | None) -> bool:
    """True when an op may call its implementation without the custom op's dispatcher (about 14 µs per call): plain
    eager tensors, no autograd to record, no torch.compile tracing, no torch function / dispatch modes, functorch
    transforms or profiler that expect to see `torch.ops.sdkernels.*`. Always while a launch recorder runs (meta
    tensors would otherwise meet the op's fake implementation)."""
    if (
        type(first) is torch.Tensor
        and not torch.compiler.is_compiling()
        and not (
            torch.is_grad_enabled() and (first.requires_grad or any(t is not None and t.requires_grad for t in others))
        )
        and not torch._C._is_torch_function_mode_enabled()
        and not torch._C._len_torch_dispatch_stack()
        and not torch._C._are_functorch_transforms_active()
        and not torch._C._autograd._profiler_enabled()
    ):
        return True
    return recording()


def remembered(cache: dict, signature: Callable[..., tuple], *args: object) -> Any:
    """The direct call remembered for these arguments' signature, or None (also when an argument is not a tensor:
    the checks then name the problem). Never while torch.compile traces: the lookup would guard on exact shapes."""
    if torch.compiler.is_compiling():
        return None
    try:
        return cache.get(signature(*args))
    except (AttributeError, TypeError):
        return None


def remember(cache: dict, signature: Callable[..., tuple], args: tuple, make: Callable[[], Any]) -> Any:
    """After an eager call passed its checks: the direct call `make()` builds for it (None when it has none), kept in
    `cache` under `signature(*args)` for `remembered`. Only for a kernel dtype on a GPU with the default configs, or
    under a stub recorder (sdkernels/kernels/_direct.py); `args[0]` is the tensor whose device and dtype decide."""
    first = args[0]
    if first.dtype not in KERNEL_DTYPES or not direct_allowed(first.device):
        return None
    call = make()
    if call is not None:
        cache[signature(*args)] = call
    return call


def kernel_ok(op: str, device: torch.device, dtype: torch.dtype) -> bool:
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


# ---------------------------------------------------------------------------------------------------- autograd
# The kernels are forward-only; gradients (training a LoRA through a patched UNet, gradient checkpointing) are
# computed by differentiating the PyTorch reference at the saved inputs. Correct, not fast: inference is the target.
def register_reference_backward(op, reference_fn, tensor_args: tuple[int, ...]) -> None:
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
