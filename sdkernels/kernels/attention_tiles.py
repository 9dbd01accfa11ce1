"""Tile helpers of the attention kernels (attention_pieces.py, attention_dv_split.py): per-program base pointers,
masked row loads/stores and one online-softmax step; the heuristics and autotune key both kernels are wrapped with."""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # the softmax runs in exp2: e^x = 2^(x·log2 e)


@triton.jit
def load_rows(
    base, rows, row_stride, n_rows, cols, HEAD_DIM: tl.constexpr, CHECK_ROWS: tl.constexpr, CHECK_COLS: tl.constexpr
):
    """Load the (rows, cols) tile of a row-major matrix with unit column stride; masked lanes read 0."""
    ptrs = base + rows[:, None] * row_stride + cols[None, :]
    if CHECK_ROWS:
        if CHECK_COLS:
            tile = tl.load(ptrs, mask=(rows[:, None] < n_rows) & (cols[None, :] < HEAD_DIM), other=0.0)
        else:
            tile = tl.load(ptrs, mask=rows[:, None] < n_rows, other=0.0)
    else:
        if CHECK_COLS:
            tile = tl.load(ptrs, mask=cols[None, :] < HEAD_DIM, other=0.0)
        else:
            tile = tl.load(ptrs)
    return tile


@triton.jit
def store_rows(base, rows, row_stride, n_rows, cols, tile, HEAD_DIM: tl.constexpr, CHECK_COLS: tl.constexpr):
    ptrs = base + rows[:, None] * row_stride + cols[None, :]
    if CHECK_COLS:
        tl.store(ptrs, tile, mask=(rows[:, None] < n_rows) & (cols[None, :] < HEAD_DIM))
    else:
        tl.store(ptrs, tile, mask=rows[:, None] < n_rows)


@triton.jit
def program_bases(
    Q,
    K,
    V,
    Bias,
    Out,
    stride_qb,
    stride_qh,
    stride_qm,
    stride_kb,
    stride_kh,
    stride_vb,
    stride_vh,
    stride_bb,
    stride_bh,
    stride_bm,
    stride_ob,
    stride_oh,
    stride_om,
    H,
    Lq,
    STRIDE_UNIT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    NUM_CHUNKS: tl.constexpr,
):
    """Which (query block, column chunk, batch, head) this program owns, and its 64-bit base pointers. The grid is
    1-D (query blocks fastest, so the programs of one head run together and share K/V in L2): no batch·heads
    count can pass CUDA's 65,535 limit of grid y/z. Batch, head and query-block offsets are added here in int64
    (B·H·L·D and Lq·Lk pass 2³¹ at SD sizes: a (B, H, Lq, Lk) bias at L = 65,536 has 4.3·10⁹ elements); the
    offsets inside a tile stay int32. q/k/v/out strides arrive divided by STRIDE_UNIT (8 when they all divide by 8):
    multiplying back tells the compiler every row starts 16-byte aligned, so head dims like 40 get vector loads."""
    pid = tl.program_id(0)
    blocks = tl.cdiv(Lq, BLOCK_M) * NUM_CHUNKS
    bh = pid // blocks
    chunk = pid % NUM_CHUNKS
    m0 = (pid % blocks) // NUM_CHUNKS * BLOCK_M
    off_b = (bh // H).to(tl.int64)
    off_h = (bh % H).to(tl.int64)
    m0_64 = m0.to(tl.int64)
    unit = STRIDE_UNIT
    q_base = Q + (off_b * stride_qb + off_h * stride_qh + m0_64 * stride_qm) * unit
    k_base = K + (off_b * stride_kb + off_h * stride_kh) * unit
    v_base = V + (off_b * stride_vb + off_h * stride_vh) * unit
    o_base = Out + (off_b * stride_ob + off_h * stride_oh + m0_64 * stride_om) * unit
    bias_base = Bias + off_b * stride_bb + off_h * stride_bh + m0_64 * stride_bm
    return m0, chunk, q_base, k_base, v_base, o_base, bias_base


@triton.jit
def softmax_step(
    scores,
    rows,
    keys,
    m_i,
    l_i,
    qk_scale,
    bias_tile,
    stride_bm,
    stride_bn,
    n_rows,
    n_keys,
    BIAS: tl.constexpr,
    EVEN_N: tl.constexpr,
    FOLD_SCALE: tl.constexpr,
):
    """One online-softmax step in log2 units: returns P = exp2(S - m_new), the rescale factor for the old
    accumulators and the new running max / sum. A row with every key so far at -inf keeps m = -inf but uses 0
    as its reference, so it produces P = 0 instead of exp2(-inf + inf) = NaN. With FOLD_SCALE, `scores` and the
    running max stay in raw (unscaled) units and P = exp2(S·c - m·c) is one FFMA per score.
    `rows`/`keys` count from the tile's first query/key, `bias_tile` points at its bias element and `n_rows`/`n_keys`
    are the queries/keys left from there (the 64-bit part of the offset lives in the pointer)."""
    if FOLD_SCALE:
        if not EVEN_N:
            scores = tl.where(keys[None, :] < n_keys, scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        m_scaled = tl.where(m_new == float("-inf"), 0.0, m_new) * qk_scale
        p = tl.math.exp2(scores * qk_scale - m_scaled[:, None])
        alpha = tl.math.exp2(m_i * qk_scale - m_scaled)
        return p, alpha, m_new, l_i * alpha + tl.sum(p, 1)
    scores = scores * qk_scale
    if BIAS == "per_key":  # one bias row broadcast over the queries (key-padding masks): a 1-D load
        if EVEN_N:
            bias = tl.load(bias_tile + keys * stride_bn)
        else:
            bias = tl.load(bias_tile + keys * stride_bn, mask=keys < n_keys, other=0.0)
        scores += bias.to(tl.float32)[None, :] * LOG2E
    elif BIAS == "per_query_key":
        bias_ptrs = bias_tile + rows[:, None] * stride_bm + keys[None, :] * stride_bn
        bias = tl.load(bias_ptrs, mask=(rows[:, None] < n_rows) & (keys[None, :] < n_keys), other=0.0)
        scores += bias.to(tl.float32) * LOG2E
    if not EVEN_N:
        scores = tl.where(keys[None, :] < n_keys, scores, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(scores, 1))
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(scores - m_ref[:, None])
    alpha = tl.math.exp2(m_i - m_ref)
    l_new = l_i * alpha + tl.sum(p, 1)
    return p, alpha, m_new, l_new


# ------------------------------------------------------------------- decorator arguments shared by both kernels
# EVEN_N: no key tile is partial. FOLD_SCALE: with no bias and a positive scale the running max is taken on the raw
# scores and the scale enters the exp2 argument as one FFMA (max(s)·c = max(s·c) for c > 0), as in Triton's
# fused-attention tutorial, instead of one FMUL per score.
HEURISTICS = {
    "EVEN_N": lambda args: args["Lk"] % args["BLOCK_N"] == 0,
    "FOLD_SCALE": lambda args: args["BIAS"] == "none" and args["qk_scale"] > 0,
}
TUNE_KEY = ["Lq", "Lk", "HEAD_DIM", "BIAS"]
