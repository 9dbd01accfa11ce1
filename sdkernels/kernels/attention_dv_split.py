"""The attention kernel for D > 256 (the VAE's D = 512) and fp32 inputs: one (BLOCK_M, D) fp32 accumulator does not
fit in registers, so each program owns DV_CHUNK output columns and recomputes QKᵀ over the full D in QK_CHUNK
slices. Launched by sdkernels/kernels/attention.py."""

from __future__ import annotations

import triton
import triton.language as tl

from sdkernels.kernels._tuning import autotune
from sdkernels.kernels.attention_configs import DV_SPLIT_CONFIGS, keep_configs_for
from sdkernels.kernels.attention_tiles import HEURISTICS, TUNE_KEY, load_rows, program_bases, softmax_step, store_rows


@autotune(DV_SPLIT_CONFIGS, key=TUNE_KEY, prune=keep_configs_for)
@triton.heuristics(HEURISTICS)
@triton.jit
def attention_dv_split_kernel(
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
    stride_kn,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_bb,
    stride_bh,
    stride_bm,
    stride_bn,
    stride_ob,
    stride_oh,
    stride_om,
    H,
    Lq,
    Lk,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BIAS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    STRIDE_UNIT: tl.constexpr,
    EVEN_N: tl.constexpr,
    FOLD_SCALE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    QK_CHUNK: tl.constexpr,
    DV_CHUNK: tl.constexpr,
):
    # Program (m-block, dv-chunk) owns O[rows, dv : dv + DV_CHUNK]. For each key tile:
    # S = Σ_{d in QK_CHUNK slices of D} Q[:, d] K[:, d]ᵀ (fp32, q/k slices re-read per tile: they do not fit registers),
    # then the same online softmax as the pieces kernel, acc = acc·α + P V[:, dv chunk]; O = acc / l.
    NUM_DV_CHUNKS: tl.constexpr = (HEAD_DIM + DV_CHUNK - 1) // DV_CHUNK
    m0, chunk, q_base, k_base, v_base, o_base, bias_base = program_bases(
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
        STRIDE_UNIT,
        BLOCK_M,
        NUM_DV_CHUNKS,
    )
    stride_qm, stride_kn, stride_vn, stride_om = (
        stride_qm * STRIDE_UNIT,
        stride_kn * STRIDE_UNIT,
        stride_vn * STRIDE_UNIT,
        stride_om * STRIDE_UNIT,
    )
    dv_cols = chunk * DV_CHUNK + tl.arange(0, DV_CHUNK)
    rows = tl.arange(0, BLOCK_M)  # in-tile offsets, int32
    n_rows = Lq - m0

    acc = tl.zeros((BLOCK_M, DV_CHUNK), dtype=tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for start_n in range(0, Lk, BLOCK_N):
        # Key offsets stay int32 from the (batch, head) base here (Lk · row stride < 2³¹): per-tile 64-bit pointers
        # cost this kernel the registers it lacks next to 256 accumulator columns (a 16-20 B spill at ragged Lk).
        keys = start_n + tl.arange(0, BLOCK_N)
        n_keys = Lk
        k_tile, v_tile, bias_tile = k_base, v_base, bias_base
        scores = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for d0 in range(0, HEAD_DIM, QK_CHUNK):
            qk_cols = d0 + tl.arange(0, QK_CHUNK)
            q = load_rows(q_base, rows, stride_qm, n_rows, qk_cols, HEAD_DIM, True, HEAD_DIM % QK_CHUNK != 0)
            k = load_rows(k_tile, keys, stride_kn, n_keys, qk_cols, HEAD_DIM, not EVEN_N, HEAD_DIM % QK_CHUNK != 0)
            scores = tl.dot(q, tl.trans(k), scores, input_precision=DOT_PRECISION)
        p, alpha, m_i, l_i = softmax_step(
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
            BIAS,
            EVEN_N,
            FOLD_SCALE,
        )
        v = load_rows(v_tile, keys, stride_vn, n_keys, dv_cols, HEAD_DIM, not EVEN_N, HEAD_DIM % DV_CHUNK != 0)
        acc = tl.dot(p.to(V.dtype.element_ty), v, acc * alpha[:, None], input_precision=DOT_PRECISION)

    inv_l = 1.0 / tl.where(l_i == 0.0, 1.0, l_i)
    store_rows(
        o_base,
        rows,
        stride_om,
        n_rows,
        dv_cols,
        (acc * inv_l[:, None]).to(Out.dtype.element_ty),
        HEAD_DIM,
        HEAD_DIM % DV_CHUNK != 0,
    )
