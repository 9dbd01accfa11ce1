"""Launch configurations of the attention kernels (sdkernels/kernels/attention.py) per architecture, dtype, head
dim and bias kind; how a head dim is split into power-of-two dot widths; and the ahead-of-time compile specs of
every shipped configuration."""

from __future__ import annotations

from typing import Any

import torch
import triton

from sdkernels.kernels import arch as arch_info

# Head dims up to this run in the pieces kernel (Q and the fp32 accumulators held in registers); above it the
# output head dim is split across the grid (dv-split kernel).
MAX_PIECES_HEAD_DIM = 256
MAX_PIECES = 3
MIN_DOT_WIDTH = 16  # tl.dot needs every dimension ≥ 16
BIAS_KINDS = ("none", "per_key", "per_query_key")


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


def bias_kind(attn_bias: torch.Tensor | None) -> str:
    """ "none"; "per_key" when the (expanded) bias does not vary along the queries (stride 0, or one query), as for
    key-padding masks, so the kernel loads one bias row per key tile; else "per_query_key"."""
    if attn_bias is None:
        return "none"
    return "per_key" if attn_bias.stride(2) == 0 or attn_bias.shape[2] == 1 else "per_query_key"


def dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs must not be rounded to tf32 (10-bit mantissa): PyTorch's fp32 attention is exact to fp32.
    return "ieee" if dtype == torch.float32 else "tf32"


def _cfg(
    block_m: int, block_n: int, warps: int, stages: int, maxnreg: int | None = None, **chunks: int
) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": block_m, "BLOCK_N": block_n, **chunks}, num_warps=warps, num_stages=stages, maxnreg=maxnreg
    )


# (architecture kind, dtype kind, head-dim bucket, per-query bias) -> configs, the most likely winner first (the
# interpreter and single-config runs take the first). Every entry compiles for its architecture without register
# spills and within the shared-memory limit, and fp16/bf16 use HGMMA on sm_90 (BLOCK_M ≥ 64, 4 warps per 64 rows).
# Head dims ≤ 80 (buckets 64 and 128) on sm80/sm90 keep ≥ 2 CTAs per SM with 0 spills in every variant (8 warps
# only with maxnreg=128 where that spills nowhere; tests/test_compile_report.py checks the measured builds).
# "sm80": A100-class, 163 KiB shared memory; "sm90": H100-class, 227 KiB; "small": other GPUs (sm_86/89/120: 99 KiB).
# Buckets: the pieces kernel by the sum of its dot widths (64, 128, 256); 512 is the dv-split kernel. A bias that
# varies along the queries is loaded as a (BLOCK_M, BLOCK_N) tile (one address per element when its rows are not
# 16-byte aligned), which needs smaller tiles than no bias or a per-key bias row.
PIECES_TABLE: dict[tuple[str, str, int, bool], list[triton.Config]] = {
    ("sm80", "half", 64, False): [_cfg(64, 64, 4, 2), _cfg(64, 128, 4, 2)],  # 128x64 w8: 1 CTA/SM, capped it spills
    ("sm80", "half", 128, False): [_cfg(64, 64, 4, 3), _cfg(128, 32, 8, 3, maxnreg=128)],
    ("sm80", "half", 256, False): [_cfg(128, 32, 8, 2), _cfg(64, 32, 4, 3)],  # 64x64 w8 spills 12 B (ragged Lk)
    ("sm90", "half", 64, False): [_cfg(64, 128, 4, 2), _cfg(128, 64, 8, 3), _cfg(64, 64, 4, 3)],
    ("sm90", "half", 128, False): [_cfg(64, 128, 4, 2), _cfg(128, 32, 8, 3, maxnreg=128), _cfg(64, 64, 4, 3)],
    ("sm90", "half", 256, False): [_cfg(128, 64, 8, 2), _cfg(128, 32, 8, 3)],  # 64x64 w4 spills 12 B (ragged Lk)
    ("small", "half", 64, False): [_cfg(128, 64, 8, 2), _cfg(64, 128, 4, 2), _cfg(64, 64, 4, 2)],
    ("small", "half", 128, False): [_cfg(128, 32, 8, 2), _cfg(64, 64, 4, 2)],  # 64x128 spills 16 B on sm_86 at D=80
    ("small", "half", 256, False): [_cfg(64, 16, 4, 2)],  # 64x32 spills 4 B on sm_86 at D=160 (even Lk)
    ("sm80", "half", 64, True): [_cfg(64, 32, 4, 2), _cfg(64, 32, 4, 3)],  # 128x32 w8: 1 CTA/SM, capped it spills
    ("sm80", "half", 128, True): [_cfg(64, 32, 4, 2), _cfg(64, 32, 4, 3)],
    ("sm80", "half", 256, True): [_cfg(64, 16, 4, 2)],  # 64x32 spills 16 B at ragged Lk
    ("sm90", "half", 64, True): [_cfg(64, 32, 4, 2), _cfg(64, 32, 4, 3)],
    ("sm90", "half", 128, True): [_cfg(64, 32, 4, 2), _cfg(64, 32, 4, 3)],
    ("sm90", "half", 256, True): [_cfg(64, 32, 4, 2), _cfg(128, 32, 8, 2)],
    ("small", "half", 64, True): [_cfg(64, 32, 4, 2)],
    ("small", "half", 128, True): [_cfg(64, 32, 4, 2)],
    ("small", "half", 256, True): [_cfg(64, 16, 4, 2)],  # 64x32 spills 24 B at ragged Lk
}
DV_SPLIT_TABLE: dict[tuple[str, str, int, bool], list[triton.Config]] = {
    ("sm80", "half", 512, False): [
        _cfg(128, 64, 8, 2, QK_CHUNK=64, DV_CHUNK=128),
        _cfg(64, 64, 4, 2, QK_CHUNK=64, DV_CHUNK=128),
    ],
    ("sm90", "half", 512, False): [  # 1 stage: the 8 QKᵀ slices unroll (683 vs 1259 instructions per key tile)
        _cfg(128, 64, 8, 1, QK_CHUNK=64, DV_CHUNK=256),
        _cfg(128, 64, 8, 2, QK_CHUNK=64, DV_CHUNK=256),
        _cfg(128, 64, 8, 2, QK_CHUNK=64, DV_CHUNK=128),
    ],
    ("small", "half", 512, False): [_cfg(64, 64, 4, 2, QK_CHUNK=64, DV_CHUNK=128)],
    ("sm80", "half", 512, True): [
        _cfg(64, 32, 4, 2, QK_CHUNK=64, DV_CHUNK=128),
        _cfg(128, 64, 8, 2, QK_CHUNK=64, DV_CHUNK=128),
    ],
    ("sm90", "half", 512, True): [
        _cfg(128, 64, 8, 2, QK_CHUNK=64, DV_CHUNK=128),
        _cfg(64, 64, 4, 2, QK_CHUNK=64, DV_CHUNK=128),
    ],
    ("small", "half", 512, True): [_cfg(64, 32, 4, 2, QK_CHUNK=64, DV_CHUNK=128)],
    ("any", "fp32", 512, False): [
        _cfg(64, 32, 8, 2, QK_CHUNK=16, DV_CHUNK=64),
        _cfg(64, 64, 8, 2, QK_CHUNK=16, DV_CHUNK=64),
    ],
    ("any", "fp32", 512, True): [_cfg(64, 32, 8, 2, QK_CHUNK=16, DV_CHUNK=64)],
}
PIECES_CONFIGS = [c for configs in PIECES_TABLE.values() for c in configs]
DV_SPLIT_CONFIGS = [c for configs in DV_SPLIT_TABLE.values() for c in configs]


def arch_kind(device: torch.device) -> str:
    """Which table row a device uses (sdkernels.kernels.arch decides); the interpreter (CPU) uses the sm80 row."""
    if device.type != "cuda" or arch_info.recorded_arch() is not None:
        return arch_info.kind_of(device)
    major, minor = torch.cuda.get_device_capability(device)
    return arch_info.kind(major * 10 + minor)


def uses_pieces_kernel(head_dim: int, dtype: torch.dtype) -> bool:
    """fp16/bf16 up to D = 256 keep Q and the accumulators in registers. fp32 always takes the dv-split kernel:
    its "ieee" dots run on FMA units, which hold whole operand rows in registers and spill with Q resident."""
    return head_dim <= MAX_PIECES_HEAD_DIM and dtype != torch.float32


def head_dim_bucket(head_dim: int, dtype: torch.dtype) -> int:
    if not uses_pieces_kernel(head_dim, dtype):
        return 512
    return max(64, triton.next_power_of_2(sum(head_dim_pieces(head_dim))))


def table_key(device: torch.device, dtype: torch.dtype, head_dim: int, bias: str) -> tuple[str, str, int, bool]:
    # fp32 runs FMA dots (no tensor cores, "ieee"): the same small tiles serve every GPU.
    arch, kind = ("any", "fp32") if dtype == torch.float32 else (arch_kind(device), "half")
    return arch, kind, head_dim_bucket(head_dim, dtype), bias == "per_query_key"


def keep_configs_for(configs: list[triton.Config], named_args: dict[str, Any]) -> list[triton.Config]:
    """Autotune prune: the table entry for this GPU, dtype, head dim and bias kind. When some of its configs cover
    all the keys in one tile (cross-attention's 77 text tokens), only those: the online softmax then never rescales."""
    q = named_args["Q"]
    key = table_key(q.device, q.dtype, named_args["HEAD_DIM"], named_args["BIAS"])
    table = DV_SPLIT_TABLE if key[2] == 512 else PIECES_TABLE
    kept = [c for c in table.get(key, []) if any(c is candidate for candidate in configs)]
    one_tile = [c for c in kept if c.kwargs["BLOCK_N"] >= named_args["Lk"]]
    return one_tile or kept
