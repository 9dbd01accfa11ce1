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

from sdkernels.kernels._direct import LaunchSite, empty_output
from sdkernels.kernels._tuning import AotSpec, Plan, autotune, first_config_plan, jit_fn
from sdkernels.kernels.arch import arch_of
from sdkernels.kernels.attention_configs import (
    DV_SPLIT_CONFIGS,
    PIECES_CONFIGS,
    bias_kind,
    dot_precision,
    head_dim_pieces,
    keep_configs_for,
    uses_pieces_kernel,
)
from sdkernels.kernels.attention_tiles import load_rows, program_bases, softmax_step, store_rows

# EVEN_N: no key tile is partial. FOLD_SCALE: with no bias and a positive scale the running max is taken on the raw
# scores and the scale enters the exp2 argument as one FFMA (max(s)·c = max(s·c) for c > 0), as in Triton's
# fused-attention tutorial, instead of one FMUL per score.
_LOG2E = 1.4426950408889634
_HEURISTICS = {
    "EVEN_N": lambda args: args["Lk"] % args["BLOCK_N"] == 0,
    "FOLD_SCALE": lambda args: args["BIAS"] == "none" and args["qk_scale"] > 0,
}
_TUNE_KEY = ["Lq", "Lk", "HEAD_DIM", "BIAS"]


@autotune(PIECES_CONFIGS, key=_TUNE_KEY, prune=keep_configs_for)
@triton.heuristics(_HEURISTICS)
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


@autotune(DV_SPLIT_CONFIGS, key=_TUNE_KEY, prune=keep_configs_for)
@triton.heuristics(_HEURISTICS)
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
    key += (ints[-1] > 0,)  # FOLD_SCALE needs a positive scale
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


class AttentionCall:
    """Everything about a call that follows from its signature (shapes, strides, dtypes, scale, bias layout): the
    output's layout and the launch site with its grid and integer arguments. A repeated call only allocates the
    output and launches."""

    __slots__ = ("out_shape", "out_strides", "ints", "site")

    def __init__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, bias: torch.Tensor | None):
        batch, heads, lq, head_dim = q.shape
        lk = k.shape[2]
        self.out_shape = (batch, heads, lq, head_dim)
        self.out_strides = (lq * heads * head_dim, head_dim, heads * head_dim, 1)  # (B, Lq, H, D) memory
        out = torch.empty_strided(self.out_shape, self.out_strides, dtype=q.dtype, device="meta")
        bias_strides = (0, 0, 0, 0) if bias is None else bias.stride()
        qkvo_strides = [*_outer_strides(q), *_outer_strides(k), *_outer_strides(v), *_outer_strides(out)]
        unit = 8 if all(s % 8 == 0 for s in qkvo_strides) else 1
        qkvo_strides = [s // unit for s in qkvo_strides]
        self.ints = (*qkvo_strides[:9], *bias_strides, *qkvo_strides[9:], heads, lq, lk, scale * _LOG2E)
        tensors = (q, k, v, q if bias is None else bias, out)
        kind = "none" if bias is None else bias_kind(bias)
        plan = _plan(q, head_dim, kind, lk, unit, tensors, self.ints, arch_of(q.device))
        programs_m = -(-lq // plan.constexprs["BLOCK_M"])
        if "DV_CHUNK" in plan.constexprs:
            programs_m *= -(-head_dim // plan.constexprs["DV_CHUNK"])
        grid = (programs_m * heads * batch,)  # 1-D: batch·heads may pass grid y/z's 65,535
        self.site = LaunchSite(plan, grid, (*tensors, *self.ints), _tuned_grid(lq, head_dim, heads, batch))

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """`bias`: None or the bias broadcast to (B, H, Lq, Lk) (stride 0 on broadcast dims), as at creation."""
        out = empty_output(self.out_shape, self.out_strides, q)
        self.site((q, k, v, q if bias is None else bias, out, *self.ints), q.device)  # q stands in for no bias
        return out


_calls: dict[tuple, AttentionCall] = {}


def attention_call(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, bias: torch.Tensor | None
) -> AttentionCall | None:
    """The cached call for this signature, or None when the inputs must first be copied (a head dim not laid out
    with unit stride) or are empty. `bias`: None or already broadcast to (B, H, Lq, Lk)."""
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1 or q.numel() == 0:
        return None
    key = (
        q.shape,
        q.stride(),
        k.shape,
        k.stride(),
        v.stride(),
        q.dtype,
        None if bias is None else (bias.shape, bias.stride()),
        scale,
        arch_of(q.device),
    )
    call = _calls.get(key)
    if call is None:
        call = _calls[key] = AttentionCall(q, k, v, scale, bias)
    return call


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, attn_bias: torch.Tensor | None
) -> torch.Tensor:
    """softmax(q kᵀ·scale + attn_bias) v. q: (B, H, Lq, D), k/v: (B, H, Lk, D), D % 8 == 0 and D ≤ 512 (checked by
    sdkernels.ops); attn_bias: None or 4-D, broadcastable to (B, H, Lq, Lk), any float dtype, read with stride 0 on
    broadcast dims. Returns (B, H, Lq, D) in q's dtype with the (B, Lq, H, D) memory layout."""
    batch, heads, lq, head_dim = q.shape
    if batch * heads * lq * head_dim == 0:
        return empty_output(q.shape, (lq * heads * head_dim, head_dim, heads * head_dim, 1), q)
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        q, k, v = _unit_last_stride(q), _unit_last_stride(k), _unit_last_stride(v)
    bias = None if attn_bias is None else attn_bias.expand(batch, heads, lq, k.shape[2])
    return attention_call(q, k, v, scale, bias)(q, k, v, bias)  # type: ignore[misc]


def _tuned_grid(lq: int, head_dim: int, heads: int, batch: int):
    def grid(meta: dict) -> tuple[int, int, int]:
        chunks = -(-head_dim // meta["DV_CHUNK"]) if "DV_CHUNK" in meta else 1
        return (-(-lq // meta["BLOCK_M"]) * chunks * heads * batch, 1, 1)

    return grid


def aot_specs() -> list[AotSpec]:
    """Every shipped (kernel, head dim, dtype, bias kind, EVEN_N, config) for the compile report."""
    from sdkernels.kernels.attention_aot import shipped_specs  # spec building stays out of the launcher's import

    return shipped_specs(jit_fn(_attention_pieces_kernel), jit_fn(_attention_dv_split_kernel))
