"""Launch configurations of the attention kernels (sdkernels/kernels/attention.py), per architecture, dtype and
head dim, and how a head dim is split into power-of-two dot widths."""

from __future__ import annotations

from typing import Any

import torch
import triton

# Head dims up to this run in the pieces kernel (Q and the fp32 accumulators held in registers); above it the
# output head dim is split across the grid (dv-split kernel).
MAX_PIECES_HEAD_DIM = 256
MAX_PIECES = 3
MIN_DOT_WIDTH = 16  # tl.dot needs every dimension ≥ 16


def head_dim_pieces(head_dim: int) -> tuple[int, int, int]:
    """Power-of-two dot widths (largest first, 0 = absent) whose sum covers `head_dim` without rounding it up to the
    next power of two: 80 -> (64, 16, 0), 160 -> (128, 32, 0), 40 -> (32, 16, 0) with the 16 masked to 8 real
    columns, 200 -> (128, 64, 16). Only the last piece may run past head_dim (its extra columns are masked)."""
    pieces: list[int] = []
    rest = head_dim
    while rest > 0 and len(pieces) < MAX_PIECES - 1:
        piece = max(MIN_DOT_WIDTH, 1 << (rest.bit_length() - 1))  # largest power of two ≤ rest, at least 16
        pieces.append(piece)
        rest -= piece
    if rest > 0:
        pieces.append(max(MIN_DOT_WIDTH, triton.next_power_of_2(rest)))
    return tuple(pieces + [0] * (MAX_PIECES - len(pieces)))  # type: ignore[return-value]


def dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs must not be rounded to tf32 (10-bit mantissa): PyTorch's fp32 attention is exact to fp32.
    return "ieee" if dtype == torch.float32 else "tf32"


def _cfg(block_m: int, block_n: int, warps: int, stages: int, **chunks: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, **chunks}, num_warps=warps, num_stages=stages)


# (architecture kind, dtype kind, head-dim bucket) -> configs, the most likely winner first (the interpreter and
# single-config runs take the first). Every fp16/bf16 entry compiles for its architecture with no register spill
# and within the shared-memory limit, and uses HGMMA on sm_90 (BLOCK_M ≥ 64 with 4 warps per 64 rows).
# "sm80": A100-class 164 KiB shared memory; "sm90": H100-class 227 KiB; "small": other GPUs (sm_86/89/120:
# 99 KiB). Buckets: the pieces kernel by the sum of the dot widths (64, 128, 256), the dv-split kernel 512.
PIECES_TABLE: dict[tuple[str, str, int], list[triton.Config]] = {
    ("sm80", "half", 64): [_cfg(128, 64, 4, 3), _cfg(128, 128, 8, 2), _cfg(64, 64, 4, 3)],
    ("sm80", "half", 128): [_cfg(128, 64, 4, 3), _cfg(128, 32, 4, 3), _cfg(64, 64, 4, 3)],
    ("sm80", "half", 256): [_cfg(64, 64, 4, 2), _cfg(128, 32, 8, 2), _cfg(64, 32, 4, 3)],
    ("sm90", "half", 64): [_cfg(128, 64, 8, 3), _cfg(128, 128, 8, 2), _cfg(64, 64, 4, 3)],
    ("sm90", "half", 128): [_cfg(128, 64, 8, 3), _cfg(128, 128, 8, 2), _cfg(64, 64, 4, 3)],
    ("sm90", "half", 256): [_cfg(128, 64, 8, 2), _cfg(64, 64, 4, 2), _cfg(128, 32, 8, 3)],
    ("small", "half", 64): [_cfg(128, 64, 4, 2), _cfg(64, 64, 4, 2)],
    ("small", "half", 128): [_cfg(128, 32, 4, 2), _cfg(64, 64, 4, 2)],
    ("small", "half", 256): [_cfg(64, 32, 4, 2)],
    ("sm80", "fp32", 64): [_cfg(64, 32, 4, 2)],
    ("sm80", "fp32", 128): [_cfg(64, 32, 4, 2)],
    ("sm80", "fp32", 256): [_cfg(32, 32, 4, 2)],
}
DV_SPLIT_TABLE: dict[tuple[str, str, int], list[triton.Config]] = {
    ("sm80", "half", 512): [_cfg(128, 64, 8, 2, QK_CHUNK=64, DV_CHUNK=128), _cfg(64, 64, 4, 2, QK_CHUNK=64,
                                                                                    DV_CHUNK=128)],
    ("sm90", "half", 512): [_cfg(128, 64, 8, 2, QK_CHUNK=64, DV_CHUNK=256), _cfg(128, 64, 8, 2, QK_CHUNK=64,
                                                                                    DV_CHUNK=128)],
    ("small", "half", 512): [_cfg(64, 64, 4, 2, QK_CHUNK=64, DV_CHUNK=128)],
    ("sm80", "fp32", 512): [_cfg(32, 32, 4, 2, QK_CHUNK=32, DV_CHUNK=64)],
}
PIECES_CONFIGS = [c for configs in PIECES_TABLE.values() for c in configs]
DV_SPLIT_CONFIGS = [c for configs in DV_SPLIT_TABLE.values() for c in configs]


def arch_kind(device: torch.device) -> str:
    """Which table row a device uses; the interpreter (CPU) uses the sm80 row."""
    if device.type != "cuda":
        return "sm80"
    major, minor = torch.cuda.get_device_capability(device)
    if major == 9:
        return "sm90"
    return "sm80" if (major, minor) == (8, 0) else "small"


def head_dim_bucket(head_dim: int) -> int:
    if head_dim > MAX_PIECES_HEAD_DIM:
        return 512
    return max(64, triton.next_power_of_2(sum(head_dim_pieces(head_dim))))


def table_key(device: torch.device, dtype: torch.dtype, head_dim: int) -> tuple[str, str, int]:
    arch = arch_kind(device)
    if dtype == torch.float32:
        arch = "sm80"  # fp32 runs plain FMA dots (no tensor cores): the same small tiles fit every GPU
    return arch, "fp32" if dtype == torch.float32 else "half", head_dim_bucket(head_dim)


def keep_configs_for(configs: list[triton.Config], named_args: dict[str, Any]) -> list[triton.Config]:
    """Autotune prune: the table entry for this GPU, dtype and head dim."""
    q = named_args["Q"]
    key = table_key(q.device, q.dtype, named_args["HEAD_DIM"])
    table = DV_SPLIT_TABLE if key[2] == 512 else PIECES_TABLE
    return [c for c in table.get(key, []) if any(c is candidate for candidate in configs)]
