"""GroupNorm tile configs and the heuristics that shape a tile from a call's arguments (host code, run when a launch
plan is made); the kernels are in group_norm_kernels.py (fused) and group_norm_split_kernels.py (split pass)."""

from __future__ import annotations

from typing import Any

import triton

# TILE = elements per tile (GROUPS_PER_PROGRAM * BLOCK_C * BLOCK_S). The first config is the one the interpreter
# keeps: the biggest tile means the fewest interpreted loop steps. (TILE 4096 with 8 warps was dropped: its
# fp16/bf16 channels_last loop spills 4 B on sm_90 under Triton's ptxas options.)
TILE_CONFIGS = [
    triton.Config({"TILE": 8192}, num_warps=8, num_stages=1),
    triton.Config({"TILE": 4096}, num_warps=4, num_stages=1),
    triton.Config({"TILE": 2048}, num_warps=4, num_stages=1),
]


def pow2(n: int) -> int:  # plain int math: triton.next_power_of_2 costs ~3 µs from host code
    return 1 << (n - 1).bit_length() if n > 1 else 1


# Tile geometry. NCHW tensors (unit spatial stride, SD's layout) always loop over a fixed (TILE / BLOCK_S, BLOCK_S)
# tile, BLOCK_S = LONG_BLOCK_S for rows of S >= LONG_ROWS positions else SHORT_BLOCK_S, whatever CPG and S are:
# with CPG a runtime int, one compiled kernel per (dtype, flags, row class) serves every resolution, batch and
# channel count. (A group that fits one tile is read twice, the second time from L2.) Other layouts
# (channels_last) keep CPG-shaped tiles: pow2(CPG) channels, and small groups packed side by side in one tile.
LONG_ROWS = 1024
LONG_BLOCK_S = 2048  # (4, 2048) at TILE 8192: 16-byte loads along S
SHORT_BLOCK_S = 256  # (32, 256) at TILE 8192: rows of 16x16 latents and below


LOOP_MAX_TILE = 4096  # channels_last loops and split kernels


def nchw(args: dict[str, Any]) -> bool:
    """NCHW's fixed tile, unless the launcher asks for CPG-shaped packed tiles (PACK_NCHW: interpreted runs only)."""
    return args["stride_xs"] == 1 and not args.get("PACK_NCHW", False)


def nchw_block_s(args: dict[str, Any]) -> int:
    return min(LONG_BLOCK_S if args["S"] >= LONG_ROWS else SHORT_BLOCK_S, args["TILE"])


def block_c(args: dict[str, Any]) -> int:
    if nchw(args):
        return args["TILE"] // nchw_block_s(args)
    return min(pow2(args["CPG"]), args["TILE"])


def fused_block_s(args: dict[str, Any]) -> int:
    if nchw(args):
        return args["TILE"] // args["BLOCK_C"]
    return min(args["TILE"] // args["BLOCK_C"], pow2(args["S"]))


def one_tile(args: dict[str, Any]) -> bool:
    return not nchw(args) and args["CPG"] <= args["BLOCK_C"] and args["S"] <= args["BLOCK_S"]


def prune_tiles(max_block_s: Any) -> Any:
    """Drop configs whose tile exceeds what one program can fill, pow2(CPG) x max_block_s(args) elements (they
    would only repeat a smaller tile)."""

    def prune(configs: list[triton.Config], args: dict[str, Any]) -> list[triton.Config]:
        if nchw(args):
            return configs  # fixed geometry: the biggest tile, whatever the shape
        needed = pow2(args["CPG"]) * max_block_s(args)
        if "chunk_s" in args or needed > configs[0].kwargs["TILE"] * args.get("MAX_GROUPS_PER_PROGRAM", 1):
            # channels_last loops over a group bigger than a tile: with CPG a runtime int the 8192-element tile
            # spills on sm_80/sm_90 (compile report), so loops use the smaller tiles.
            configs = [c for c in configs if c.kwargs["TILE"] <= LOOP_MAX_TILE]
        return [c for c in configs if c.kwargs["TILE"] <= needed] or configs[-1:]  # the last has the smallest tile

    return prune


def groups_per_program(args: dict[str, Any]) -> int:
    """Groups side by side in the fused kernel's tile: as many whole one-tile groups as TILE holds (all powers of
    two, so the tile is exactly full), at most MAX_GROUPS_PER_PROGRAM (the launcher's bound)."""
    if not args["ONE_TILE"]:
        return 1
    return min(args["MAX_GROUPS_PER_PROGRAM"], args["TILE"] // (args["BLOCK_C"] * args["BLOCK_S"]))


def chunk_block(args: dict[str, Any]) -> int:
    return args["chunk_s"] & -args["chunk_s"]  # the largest power of 2 dividing chunk_s: only the last tile is partial


SPLIT_HEURISTICS = {"BLOCK_C": block_c, "BLOCK_S": lambda a: min(a["TILE"] // a["BLOCK_C"], chunk_block(a))}
MIN_BLOCK_SPLIT = 32  # partials merged as one vector of max(32, pow2(SPLIT)) lanes: one kernel for SPLIT <= 32
