"""The attention kernel for D ≤ 256 (fp16/bf16): D is covered by up to three power-of-two dot widths (80 = 64 + 16,
160 = 128 + 32, 40 = 32 + 16 masked to 8 real columns), so nothing is padded to the next power of two. Q stays in
registers and each output piece keeps its own fp32 accumulator. Launched by sdkernels/kernels/attention.py."""

from __future__ import annotations

import triton
import triton.language as tl

from sdkernels.kernels._tuning import autotune
from sdkernels.kernels.attention_configs import PIECES_CONFIGS, keep_configs_for
from sdkernels.kernels.attention_tiles import HEURISTICS, TUNE_KEY, load_rows, program_bases, softmax_step, store_rows


@autotune(PIECES_CONFIGS, key=TUNE_KEY, prune=keep_configs_for)
@triton.heuristics(HEURISTICS)
@triton.jit
def attention_pieces_kernel(
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
    D_PIECE0: tl.constexpr,
    D_PIECE1: tl.constexpr,
    D_PIECE2: tl.constexpr,
    BIAS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    STRIDE_UNIT: tl.constexpr,
    EVEN_N: tl.constexpr,
    FOLD_SCALE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # For each key tile: S = (Σ_pieces Q[:, piece] K[:, piece]ᵀ)·scale·log2e + bias·log2e, all in fp32.
    # Online softmax: m = max(m, rowmax S), P = exp2(S - m), l = l·α + rowsum P, acc_i = acc_i·α + P V[:, piece_i].
    # Finally O[:, piece_i] = acc_i / l (0 for a row whose every key was masked).
    D_START1: tl.constexpr = D_PIECE0
    D_START2: tl.constexpr = D_PIECE0 + D_PIECE1
    m0, _, q_base, k_base, v_base, o_base, bias_base = program_bases(
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
        1,
    )
    stride_qm, stride_kn, stride_vn, stride_om = (
        stride_qm * STRIDE_UNIT,
        stride_kn * STRIDE_UNIT,
        stride_vn * STRIDE_UNIT,
        stride_om * STRIDE_UNIT,
    )
    rows = tl.arange(0, BLOCK_M)  # in-tile offsets, int32
    n_rows = Lq - m0
    cols0 = tl.arange(0, D_PIECE0)

    q0 = load_rows(q_base, rows, stride_qm, n_rows, cols0, HEAD_DIM, True, D_PIECE0 > HEAD_DIM)
    acc0 = tl.zeros((BLOCK_M, D_PIECE0), dtype=tl.float32)
    if D_PIECE1 > 0:
        cols1 = D_START1 + tl.arange(0, D_PIECE1)
        q1 = load_rows(q_base, rows, stride_qm, n_rows, cols1, HEAD_DIM, True, D_START2 > HEAD_DIM)
        acc1 = tl.zeros((BLOCK_M, D_PIECE1), dtype=tl.float32)
    if D_PIECE2 > 0:
        cols2 = D_START2 + tl.arange(0, D_PIECE2)
        q2 = load_rows(q_base, rows, stride_qm, n_rows, cols2, HEAD_DIM, True, D_START2 + D_PIECE2 > HEAD_DIM)
        acc2 = tl.zeros((BLOCK_M, D_PIECE2), dtype=tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)

    keys = tl.arange(0, BLOCK_N)
    for start_n in range(0, Lk, BLOCK_N):
        n_keys = Lk - start_n
        # 64-bit pointers at the key tile's first key (tl.cast: the interpreter's loop index is a Python int)
        tile_start = tl.cast(start_n, tl.int64)
        k_tile = k_base + tile_start * stride_kn
        v_tile = v_base + tile_start * stride_vn
        bias_tile = bias_base + tile_start * stride_bn
        k0 = load_rows(k_tile, keys, stride_kn, n_keys, cols0, HEAD_DIM, not EVEN_N, D_PIECE0 > HEAD_DIM)
        scores = tl.dot(q0, tl.trans(k0), input_precision=DOT_PRECISION)
        if D_PIECE1 > 0:
            k1 = load_rows(k_tile, keys, stride_kn, n_keys, cols1, HEAD_DIM, not EVEN_N, D_START2 > HEAD_DIM)
            scores = tl.dot(q1, tl.trans(k1), scores, input_precision=DOT_PRECISION)
        if D_PIECE2 > 0:
            k2 = load_rows(k_tile, keys, stride_kn, n_keys, cols2, HEAD_DIM, not EVEN_N, D_START2 + D_PIECE2 > HEAD_DIM)
            scores = tl.dot(q2, tl.trans(k2), scores, input_precision=DOT_PRECISION)
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
        # P is rounded to the input dtype for the tensor-core PV product, as FlashAttention does.
        p = p.to(V.dtype.element_ty)
        v0 = load_rows(v_tile, keys, stride_vn, n_keys, cols0, HEAD_DIM, not EVEN_N, D_PIECE0 > HEAD_DIM)
        acc0 = tl.dot(p, v0, acc0 * alpha[:, None], input_precision=DOT_PRECISION)
        if D_PIECE1 > 0:
            v1 = load_rows(v_tile, keys, stride_vn, n_keys, cols1, HEAD_DIM, not EVEN_N, D_START2 > HEAD_DIM)
            acc1 = tl.dot(p, v1, acc1 * alpha[:, None], input_precision=DOT_PRECISION)
        if D_PIECE2 > 0:
            v2 = load_rows(v_tile, keys, stride_vn, n_keys, cols2, HEAD_DIM, not EVEN_N, D_START2 + D_PIECE2 > HEAD_DIM)
            acc2 = tl.dot(p, v2, acc2 * alpha[:, None], input_precision=DOT_PRECISION)

    inv_l = 1.0 / tl.where(l_i == 0.0, 1.0, l_i)
    out_ty = Out.dtype.element_ty
    store_rows(
        o_base, rows, stride_om, n_rows, cols0, (acc0 * inv_l[:, None]).to(out_ty), HEAD_DIM, D_PIECE0 > HEAD_DIM
    )
    if D_PIECE1 > 0:
        store_rows(
            o_base, rows, stride_om, n_rows, cols1, (acc1 * inv_l[:, None]).to(out_ty), HEAD_DIM, D_START2 > HEAD_DIM
        )
    if D_PIECE2 > 0:
        store_rows(
            o_base,
            rows,
            stride_om,
            n_rows,
            cols2,
            (acc2 * inv_l[:, None]).to(out_ty),
            HEAD_DIM,
            D_START2 + D_PIECE2 > HEAD_DIM,
        )
