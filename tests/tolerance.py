"""The tolerance rule of DEVELOPERS.md: our error against an fp64 reference may be at most twice the error of
PyTorch's own same-dtype computation against that reference, plus a tiny floor."""

from __future__ import annotations

import torch

FLOOR = {torch.float32: 1e-6, torch.float16: 1e-4, torch.bfloat16: 1e-3, torch.float64: 1e-12}


def max_abs_err(a: torch.Tensor, ref64: torch.Tensor) -> float:
    return (a.double() - ref64).abs().max().item()


def assert_matches_reference(
    ours: torch.Tensor, torch_same_dtype: torch.Tensor, ref64: torch.Tensor, floor: float | None = None, what: str = ""
) -> None:
    """ours, torch_same_dtype: outputs in the low-precision dtype; ref64: the same computation in fp64."""
    assert ours.shape == ref64.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref64.shape)}"
    assert ours.dtype == torch_same_dtype.dtype, f"{what}: dtype {ours.dtype} != {torch_same_dtype.dtype}"
    finite_ref = torch.isfinite(ref64)
    bad = ~torch.isfinite(ours) & finite_ref
    assert not bad.any(), (
        f"{what}: {int(bad.sum())} non-finite outputs where fp64 is finite, first at {tuple(bad.nonzero()[0].tolist())}"
    )
    floor = FLOOR[ours.dtype] if floor is None else floor
    ours_err = max_abs_err(ours, ref64)
    torch_err = max_abs_err(torch_same_dtype, ref64)
    assert ours_err <= 2 * torch_err + floor, (
        f"{what}: max |ours - fp64| = {ours_err:.3e} > 2 * max |torch {ours.dtype} - fp64| ({torch_err:.3e}) "
        f"+ {floor:.1e}"
    )
