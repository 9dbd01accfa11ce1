"""Flash attention for Stable Diffusion head dims, accumulating QKᵀ, the softmax statistics and PV in fp32.

Two kernels share the tile helpers below:
- `_attention_pieces_kernel` (D ≤ 256): D is covered by up to three power-of-two dot widths (80 = 64 + 16,
  160 = 128 + 32, 40 = 32 + 16 masked to 8 real columns), so nothing is padded to the next power of two. Q stays
  in registers and each output piece keeps its own fp32 accumulator.
- `_attention_dv_split_kernel` (D > 256, the VAE's D = 512; and fp32 inputs): one (BLOCK_M, D) fp32 accumulator
  does not fit in registers, so each program owns DV_CHUNK output columns and recomputes QKᵀ over the full D in
  QK_CHUNK slices.
Launch configs live in sdkernels/kernels/attention_configs.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sdkernels._dispatch import poison
from sdkernels.kernels._tuning import AotSpec, Plan, autotune, first_config_plan, jit_fn, launch_plan
from sdkernels.kernels.arch import arch_of
from sdkernels.kernels.attention_configs import (
    DV_SPLIT_CONFIGS,
    PIECES_CONFIGS,
    bias_kind,
    dot_precision,
    head_dim_pieces,
    keep_configs_for,
    shipped_specs,
    uses_pieces_kernel,
)

LOG2E = tl.constexpr(1.4426950408889634)  # the softmax runs in exp2: e^x = 2^(x·log2 e)
_LOG2E = 1.4426950408889634
_EVEN_N = {"EVEN_N": lambda args: args["Lk"] % args["BLOCK_N"] == 0}
_TUNE_KEY = ["Lq", "Lk", "HEAD_DIM", "BIAS"]


@triton.jit
def _load_rows(
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
def _store_rows(base, rows, row_stride, n_rows, cols, tile, HEAD_DIM: tl.constexpr, CHECK_COLS: tl.constexpr):
    ptrs = base + rows[:, None] * row_stride + cols[None, :]
    if CHECK_COLS:
        tl.store(ptrs, tile, mask=(rows[:, None] < n_rows) & (cols[None, :] < HEAD_DIM))
    else:
        tl.store(ptrs, tile, mask=rows[:, None] < n_rows)


@triton.jit
def _softmax_step(
    scores,
    rows,
    keys,
    m_i,
    l_i,
    qk_scale,
    bias_base,
    stride_bm,
    stride_bn,
    Lq,
    Lk,
    BIAS: tl.constexpr,
    EVEN_N: tl.constexpr,
):
    """One online-softmax step in log2 units: returns P = exp2(S - m_new), the rescale factor for the old
    accumulators and the new running max / sum. A row with every key so far at -inf keeps m = -inf but uses 0
    as its reference, so it produces P = 0 instead of exp2(-inf + inf) = NaN."""
    scores = scores * qk_scale
    if BIAS == "per_key":  # one bias row broadcast over the queries (key-padding masks): a 1-D load
        if EVEN_N:
            bias = tl.load(bias_base + keys * stride_bn)
        else:
            bias = tl.load(bias_base + keys * stride_bn, mask=keys < Lk, other=0.0)
        scores += bias.to(tl.float32)[None, :] * LOG2E
    elif BIAS == "per_query_key":
        bias_ptrs = bias_base + rows[:, None] * stride_bm + keys[None, :] * stride_bn
        bias = tl.load(bias_ptrs, mask=(rows[:, None] < Lq) & (keys[None, :] < Lk), other=0.0)
        scores += bias.to(tl.float32) * LOG2E
    if not EVEN_N:
        scores = tl.where(keys[None, :] < Lk, scores, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(scores, 1))
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(scores - m_ref[:, None])
    alpha = tl.math.exp2(m_i - m_ref)
    l_new = l_i * alpha + tl.sum(p, 1)
    return p, alpha, m_new, l_new


@autotune(PIECES_CONFIGS, key=_TUNE_KEY, prune=keep_configs_for)
@triton.heuristics(_EVEN_N)
@triton.jit
def _attention_pieces_kernel(
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
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # For each key tile: S = (Σ_pieces Q[:, piece] K[:, piece]ᵀ)·scale·log2e + bias·log2e, all in fp32.
    # Online softmax: m = max(m, rowmax S), P = exp2(S - m), l = l·α + rowsum P, acc_i = acc_i·α + P V[:, piece_i].
    # Finally O[:, piece_i] = acc_i / l (0 for a row whose every key was masked).
    D_START1: tl.constexpr = D_PIECE0
    D_START2: tl.constexpr = D_PIECE0 + D_PIECE1
    # q/k/v/out strides arrive divided by STRIDE_UNIT (8 when they all divide by 8): multiplying back tells the
    # compiler every row starts 16-byte aligned, so head dims like 40 (stride_h = 40) still get vectorised loads.
    stride_qb, stride_qh, stride_qm = stride_qb * STRIDE_UNIT, stride_qh * STRIDE_UNIT, stride_qm * STRIDE_UNIT
    stride_kb, stride_kh, stride_kn = stride_kb * STRIDE_UNIT, stride_kh * STRIDE_UNIT, stride_kn * STRIDE_UNIT
    stride_vb, stride_vh, stride_vn = stride_vb * STRIDE_UNIT, stride_vh * STRIDE_UNIT, stride_vn * STRIDE_UNIT
    stride_ob, stride_oh, stride_om = stride_ob * STRIDE_UNIT, stride_oh * STRIDE_UNIT, stride_om * STRIDE_UNIT
    off_b = tl.program_id(2).to(tl.int64)
    off_h = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols0 = tl.arange(0, D_PIECE0)
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
    bias_base = Bias + off_b * stride_bb + off_h * stride_bh

    q0 = _load_rows(q_base, rows, stride_qm, Lq, cols0, HEAD_DIM, True, D_PIECE0 > HEAD_DIM)
    acc0 = tl.zeros((BLOCK_M, D_PIECE0), dtype=tl.float32)
    if D_PIECE1 > 0:
        cols1 = D_START1 + tl.arange(0, D_PIECE1)
        q1 = _load_rows(q_base, rows, stride_qm, Lq, cols1, HEAD_DIM, True, D_START2 > HEAD_DIM)
        acc1 = tl.zeros((BLOCK_M, D_PIECE1), dtype=tl.float32)
    if D_PIECE2 > 0:
        cols2 = D_START2 + tl.arange(0, D_PIECE2)
        q2 = _load_rows(q_base, rows, stride_qm, Lq, cols2, HEAD_DIM, True, D_START2 + D_PIECE2 > HEAD_DIM)
        acc2 = tl.zeros((BLOCK_M, D_PIECE2), dtype=tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)

    for start_n in range(0, Lk, BLOCK_N):
        keys = start_n + tl.arange(0, BLOCK_N)
        k0 = _load_rows(k_base, keys, stride_kn, Lk, cols0, HEAD_DIM, not EVEN_N, D_PIECE0 > HEAD_DIM)
        scores = tl.dot(q0, tl.trans(k0), input_precision=DOT_PRECISION)
        if D_PIECE1 > 0:
            k1 = _load_rows(k_base, keys, stride_kn, Lk, cols1, HEAD_DIM, not EVEN_N, D_START2 > HEAD_DIM)
            scores = tl.dot(q1, tl.trans(k1), scores, input_precision=DOT_PRECISION)
        if D_PIECE2 > 0:
            k2 = _load_rows(k_base, keys, stride_kn, Lk, cols2, HEAD_DIM, not EVEN_N, D_START2 + D_PIECE2 > HEAD_DIM)
            scores = tl.dot(q2, tl.trans(k2), scores, input_precision=DOT_PRECISION)
        p, alpha, m_i, l_i = _softmax_step(
            scores, rows, keys, m_i, l_i, qk_scale, bias_base, stride_bm, stride_bn, Lq, Lk, BIAS, EVEN_N
        )
        # P is rounded to the input dtype for the tensor-core PV product, as FlashAttention does.
        p = p.to(V.dtype.element_ty)
        v0 = _load_rows(v_base, keys, stride_vn, Lk, cols0, HEAD_DIM, not EVEN_N, D_PIECE0 > HEAD_DIM)
        acc0 = tl.dot(p, v0, acc0 * alpha[:, None], input_precision=DOT_PRECISION)
        if D_PIECE1 > 0:
            v1 = _load_rows(v_base, keys, stride_vn, Lk, cols1, HEAD_DIM, not EVEN_N, D_START2 > HEAD_DIM)
            acc1 = tl.dot(p, v1, acc1 * alpha[:, None], input_precision=DOT_PRECISION)
        if D_PIECE2 > 0:
            v2 = _load_rows(v_base, keys, stride_vn, Lk, cols2, HEAD_DIM, not EVEN_N, D_START2 + D_PIECE2 > HEAD_DIM)
            acc2 = tl.dot(p, v2, acc2 * alpha[:, None], input_precision=DOT_PRECISION)

    inv_l = 1.0 / tl.where(l_i == 0.0, 1.0, l_i)
    o_base = Out + off_b * stride_ob + off_h * stride_oh
    out_ty = Out.dtype.element_ty
    _store_rows(o_base, rows, stride_om, Lq, cols0, (acc0 * inv_l[:, None]).to(out_ty), HEAD_DIM, D_PIECE0 > HEAD_DIM)
    if D_PIECE1 > 0:
        _store_rows(
            o_base, rows, stride_om, Lq, cols1, (acc1 * inv_l[:, None]).to(out_ty), HEAD_DIM, D_START2 > HEAD_DIM
        )
    if D_PIECE2 > 0:
        _store_rows(
            o_base,
            rows,
            stride_om,
            Lq,
            cols2,
            (acc2 * inv_l[:, None]).to(out_ty),
            HEAD_DIM,
            D_START2 + D_PIECE2 > HEAD_DIM,
        )


@autotune(DV_SPLIT_CONFIGS, key=_TUNE_KEY, prune=keep_configs_for)
@triton.heuristics(_EVEN_N)
@triton.jit
def _attention_dv_split_kernel(
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
    Lq,
    Lk,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BIAS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    STRIDE_UNIT: tl.constexpr,
    EVEN_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    QK_CHUNK: tl.constexpr,
    DV_CHUNK: tl.constexpr,
):
    # Program (m-block, dv-chunk) owns O[rows, dv : dv + DV_CHUNK]. For each key tile:
    # S = Σ_{d in QK_CHUNK slices of D} Q[:, d] K[:, d]ᵀ (fp32, q/k slices re-read per tile: they do not fit registers),
    # then the same online softmax as the pieces kernel, acc = acc·α + P V[:, dv chunk]; O = acc / l.
    NUM_DV_CHUNKS: tl.constexpr = (HEAD_DIM + DV_CHUNK - 1) // DV_CHUNK
    # q/k/v/out strides arrive divided by STRIDE_UNIT (8 when they all divide by 8): multiplying back tells the
    # compiler every row starts 16-byte aligned, so head dims like 40 (stride_h = 40) still get vectorised loads.
    stride_qb, stride_qh, stride_qm = stride_qb * STRIDE_UNIT, stride_qh * STRIDE_UNIT, stride_qm * STRIDE_UNIT
    stride_kb, stride_kh, stride_kn = stride_kb * STRIDE_UNIT, stride_kh * STRIDE_UNIT, stride_kn * STRIDE_UNIT
    stride_vb, stride_vh, stride_vn = stride_vb * STRIDE_UNIT, stride_vh * STRIDE_UNIT, stride_vn * STRIDE_UNIT
    stride_ob, stride_oh, stride_om = stride_ob * STRIDE_UNIT, stride_oh * STRIDE_UNIT, stride_om * STRIDE_UNIT
    off_b = tl.program_id(2).to(tl.int64)
    off_h = tl.program_id(1).to(tl.int64)
    pid_m = tl.program_id(0) // NUM_DV_CHUNKS
    dv_cols = (tl.program_id(0) % NUM_DV_CHUNKS) * DV_CHUNK + tl.arange(0, DV_CHUNK)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
    bias_base = Bias + off_b * stride_bb + off_h * stride_bh

    acc = tl.zeros((BLOCK_M, DV_CHUNK), dtype=tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for start_n in range(0, Lk, BLOCK_N):
        keys = start_n + tl.arange(0, BLOCK_N)
        scores = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for d0 in range(0, HEAD_DIM, QK_CHUNK):
            qk_cols = d0 + tl.arange(0, QK_CHUNK)
            q = _load_rows(q_base, rows, stride_qm, Lq, qk_cols, HEAD_DIM, True, HEAD_DIM % QK_CHUNK != 0)
            k = _load_rows(k_base, keys, stride_kn, Lk, qk_cols, HEAD_DIM, not EVEN_N, HEAD_DIM % QK_CHUNK != 0)
            scores = tl.dot(q, tl.trans(k), scores, input_precision=DOT_PRECISION)
        p, alpha, m_i, l_i = _softmax_step(
            scores, rows, keys, m_i, l_i, qk_scale, bias_base, stride_bm, stride_bn, Lq, Lk, BIAS, EVEN_N
        )
        v = _load_rows(v_base, keys, stride_vn, Lk, dv_cols, HEAD_DIM, not EVEN_N, HEAD_DIM % DV_CHUNK != 0)
        acc = tl.dot(p.to(V.dtype.element_ty), v, acc * alpha[:, None], input_precision=DOT_PRECISION)

    inv_l = 1.0 / tl.where(l_i == 0.0, 1.0, l_i)
    o_base = Out + off_b * stride_ob + off_h * stride_oh
    _store_rows(
        o_base,
        rows,
        stride_om,
        Lq,
        dv_cols,
        (acc * inv_l[:, None]).to(Out.dtype.element_ty),
        HEAD_DIM,
        HEAD_DIM % DV_CHUNK != 0,
    )


def _outer_strides(t: torch.Tensor) -> tuple[int, int, int]:
    # A size-1 dim's stride is never used: report 0 so it cannot spoil the STRIDE_UNIT alignment test.
    return tuple(stride if size > 1 else 0 for size, stride in zip(t.shape[:3], t.stride()[:3], strict=True))


def _unit_last_stride(t: torch.Tensor) -> torch.Tensor:
    # The kernels address the head dim with stride 1 (vectorised loads). Views made by view+transpose of a
    # (B, L, H*D) projection already have it and are read in place; anything else is copied once, here.
    return t if t.stride(-1) == 1 else t.contiguous()


_plans: dict[tuple, Plan] = {}


def _plan(
    q: torch.Tensor, head_dim: int, bias: str, lk: int, unit: int, tensors: tuple, ints: tuple, arch: int
) -> Plan:
    """The kernel, config and constexprs for this call's class: (arch, dtype, head dim, bias kind, whether the keys
    fit one tile of a table config, Lk % BLOCK_N == 0, stride unit). Cached: computed once per class."""
    lk_class = lk if lk <= 128 else 256  # the table prefers a BLOCK_N that covers every key when Lk <= 128
    key = (arch, q.dtype, head_dim, bias, lk_class, unit, lk % 128 == 0, lk % 64 == 0, lk % 32 == 0, lk % 16 == 0)
    plan = _plans.get(key)
    if plan is None:
        pieces = uses_pieces_kernel(head_dim, q.dtype)
        tuned = _attention_pieces_kernel if pieces else _attention_dv_split_kernel
        meta = {"HEAD_DIM": head_dim, "BIAS": bias, "DOT_PRECISION": dot_precision(q.dtype), "STRIDE_UNIT": unit}
        if pieces:
            meta.update(zip(("D_PIECE0", "D_PIECE1", "D_PIECE2"), head_dim_pieces(head_dim), strict=True))
        named = dict(zip(jit_fn(tuned).arg_names, (*tensors, *ints), strict=False))
        plan = _plans[key] = first_config_plan(tuned, named, meta)
    return plan


_calls: dict[tuple, tuple[Plan, tuple[int, int, int], tuple]] = {}


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, attn_bias: torch.Tensor | None
) -> torch.Tensor:
    """softmax(q kᵀ·scale + attn_bias) v. q: (B, H, Lq, D), k/v: (B, H, Lk, D), D % 8 == 0 and D ≤ 512 (checked by
    sdkernels.ops); attn_bias: None or 4-D, broadcastable to (B, H, Lq, Lk), any float dtype, read with stride 0 on
    broadcast dims. Returns (B, H, Lq, D) in q's dtype with the (B, Lq, H, D) memory layout."""
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        q, k, v = _unit_last_stride(q), _unit_last_stride(k), _unit_last_stride(v)
    batch, heads, lq, head_dim = q.shape
    out = poison(torch.empty(batch, lq, heads, head_dim, dtype=q.dtype, device=q.device).transpose(1, 2))
    if batch * heads * lq * head_dim == 0:
        return out
    # Everything but the pointers follows from the call's signature: cached per signature.
    key = (
        q.shape,
        q.stride(),
        k.shape,
        k.stride(),
        v.stride(),
        q.dtype,
        None if attn_bias is None else (attn_bias.shape, attn_bias.stride()),
        scale,
        arch_of(q.device),
    )
    call = _calls.get(key)
    if call is None:
        call = _calls[key] = _prepare(q, k, v, out, scale, attn_bias)
    plan, grid, ints = call
    # (q stands in for a missing bias pointer; never read). A bias is passed as its broadcast view: stride 0 on
    # broadcast dims, the strides the kernel reads it with.
    bias = q if attn_bias is None else attn_bias.expand(batch, heads, lq, k.shape[2])
    launch_plan(plan, grid, (q, k, v, bias, out, *ints), q.device, _tuned_grid(lq, head_dim, heads, batch))
    return out


def _tuned_grid(lq: int, head_dim: int, heads: int, batch: int):
    def grid(meta: dict) -> tuple[int, int, int]:
        chunks = -(-head_dim // meta["DV_CHUNK"]) if "DV_CHUNK" in meta else 1
        return (-(-lq // meta["BLOCK_M"]) * chunks, heads, batch)

    return grid


def _prepare(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    scale: float,
    attn_bias: torch.Tensor | None,
) -> tuple[Plan, tuple[int, int, int], tuple]:
    """(plan, grid, integer arguments) of a call signature."""
    batch, heads, lq, head_dim = q.shape
    lk = k.shape[2]
    bias = None if attn_bias is None else attn_bias.expand(batch, heads, lq, lk)  # broadcast dims get stride 0
    bias_strides = (0, 0, 0, 0) if bias is None else bias.stride()
    qkvo_strides = [*_outer_strides(q), *_outer_strides(k), *_outer_strides(v), *_outer_strides(out)]
    unit = 8 if all(s % 8 == 0 for s in qkvo_strides) else 1
    qkvo_strides = [s // unit for s in qkvo_strides]
    ints = (*qkvo_strides[:9], *bias_strides, *qkvo_strides[9:], lq, lk, scale * _LOG2E)
    tensors = (q, k, v, q if bias is None else bias, out)
    kind = "none" if bias is None else bias_kind(bias)
    plan = _plan(q, head_dim, kind, lk, unit, tensors, ints, arch_of(q.device))
    block_m = plan.constexprs["BLOCK_M"]
    programs_m = -(-lq // block_m)
    if "DV_CHUNK" in plan.constexprs:
        programs_m *= -(-head_dim // plan.constexprs["DV_CHUNK"])
    return plan, (programs_m, heads, batch), ints


def aot_specs() -> list[AotSpec]:
    """Every shipped (kernel, head dim, dtype, bias kind, EVEN_N, config) for the compile report."""
    return shipped_specs(jit_fn(_attention_pieces_kernel), jit_fn(_attention_dv_split_kernel))
