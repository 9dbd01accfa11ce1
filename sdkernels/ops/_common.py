"""What every op shares: input checks that name the problem, the kernel-or-reference decision, and the backward that
differentiates the PyTorch reference."""

from __future__ import annotations

import torch

from sdkernels._dispatch import interpreter_bf16_problem, note_fallback, use_triton

Tensor = torch.Tensor
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 512


def check(condition: bool, op: str, message: str) -> None:
    if not condition:
        raise ValueError(f"sdkernels.{op}: {message}")


def check_float_tensors(op: str, **tensors: Tensor | None) -> None:
    """Every tensor argument (None for an optional one left out) is a real floating-point tensor. Checked before
    anything reads them: a complex weight would otherwise fail inside Triton with a bare KeyError on the kernel path
    and lose its imaginary part silently on the reference path; an integer or bool one would be promoted silently."""
    for name, t in tensors.items():
        if t is None:
            continue
        check(isinstance(t, Tensor), op, f"{name} must be a torch.Tensor, got {type(t).__name__}")
        check(t.is_floating_point(), op, f"{name} must be a float tensor, got {t.dtype}")


def check_same_device(op: str, **tensors: Tensor | None) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    check(len(set(devices.values())) <= 1, op, f"all tensors must be on one device, got {devices}")


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
