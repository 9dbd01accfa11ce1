"""Experimental, opt-in attention kernel for sm_90 (fp16/bf16, no bias, D in {64, 128}): the pieces kernel's
algorithm (attention_pieces.py) with one dot width, K/V read through device-side tensor descriptors (TMA on
Hopper) and the key loop marked for warp specialisation (`tl.range(..., warp_specialize=True)`). It is NOT on the
default path (attention.py, ops, patch): it exists so the compile report can show what Triton 3.9 makes of TMA +
warp specialisation for our layout, and the interpreter verifies the same source the compile report measures.

Device-side descriptors need a per-launch global scratch (128 bytes per descriptor per program); the launcher sets
a torch-backed allocator inside a copied contextvars context, so the caller's own `triton.set_allocator` (a
ContextVar) is never touched. Host-side `TensorDescriptor`s would avoid the scratch, but the compile report's
binder (sdkernels.tools.jit_binding) only fakes pointer/int/float arguments, so it could not measure them."""

from __future__ import annotations

import contextvars
import itertools
from typing import Any

import torch
import triton
import triton.language as tl

from sdkernels._dispatch import poison
from sdkernels.kernels._launch import launch
from sdkernels.kernels._tuning import AotSpec, aot_signature
from sdkernels.kernels.attention_tiles import program_bases, softmax_step, store_rows

TMA_HEAD_DIMS = (64, 128)
_LOG2E = 1.4426950408889634


@triton.jit
def attention_tma_kernel(
    Q,
    K,
    V,
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
    stride_ob,
    stride_oh,
    stride_om,
    H,
    Lq,
    Lk,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    STRIDE_UNIT: tl.constexpr,
    EVEN_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # For each key tile: S = Q Kᵀ (raw, fp32); m = max(m, rowmax S); P = exp2(S·c - m·c) with c = scale·log2e
    # (one FFMA per score); l = l·α + rowsum P; acc = acc·α + P V. Finally O = acc / l.
    # K/V tiles come from per-(batch, head) tensor descriptors of shape (Lk, HEAD_DIM): rows past Lk read as 0
    # (TMA's out-of-bounds fill), and a ragged last tile's scores are masked to -inf.
    m0, _, q_base, k_base, v_base, o_base, _ = program_bases(
        Q,
        K,
        V,
        Q,  # no bias: program_bases' bias pointer is unused
        Out,
        stride_qb,
        stride_qh,
        stride_qm,
        stride_kb,
        stride_kh,
        stride_vb,
        stride_vh,
        0,
        0,
        0,
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
    k_desc = tl.make_tensor_descriptor(k_base, [Lk, HEAD_DIM], [stride_kn, 1], [BLOCK_N, HEAD_DIM])
    v_desc = tl.make_tensor_descriptor(v_base, [Lk, HEAD_DIM], [stride_vn, 1], [BLOCK_N, HEAD_DIM])
    rows = tl.arange(0, BLOCK_M)
    n_rows = Lq - m0
    cols = tl.arange(0, HEAD_DIM)
    # Q through a descriptor too: the warp-specialisation pass hands every load feeding the dots to the producer
    # warps, and its producer only commits TMA loads (a pointer load fails "unsupported load type for producer commit")
    q_desc = tl.make_tensor_descriptor(q_base, [n_rows, HEAD_DIM], [stride_qm, 1], [BLOCK_M, HEAD_DIM])
    q = q_desc.load([0, 0])
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    keys = tl.arange(0, BLOCK_N)
    for start_n in tl.range(0, Lk, BLOCK_N, warp_specialize=True):
        k = k_desc.load([start_n, 0])
        scores = tl.dot(q, k.T)
        # FOLD_SCALE=True, BIAS="none": the bias arguments are unused (the launcher requires scale > 0)
        p, alpha, m_i, l_i = softmax_step(
            scores, rows, keys, m_i, l_i, qk_scale, Q, 0, 0, n_rows, Lk - start_n, "none", EVEN_N, True
        )
        v = v_desc.load([start_n, 0])
        # P is rounded to the input dtype for the tensor-core PV product, as FlashAttention does.
        acc = tl.dot(p.to(V.dtype.element_ty), v, acc * alpha[:, None])
    inv_l = 1.0 / tl.where(l_i == 0.0, 1.0, l_i)
    store_rows(o_base, rows, stride_om, n_rows, cols, (acc * inv_l[:, None]).to(Out.dtype.element_ty), HEAD_DIM, False)


# Configs. Hopper's warp-specialisation pass splits the loop only at num_warps=4: it launches 12 warps (a producer
# warpgroup issuing the TMA loads, and one consumer warpgroup per 64 query rows, registers moved to the consumers
# by setmaxnreg); at num_warps=8 it leaves the loop unsplit (cfg2 is kept so the compile report shows that).
# Measured (Triton 3.9 AOT, sm_90, fp16, D = 64, full tiles; per warp): cfg0's consumer loop 429 instructions per
# 128-key tile (214.5 per 64 keys; the shipped kernel: 493 per 128), cfg1's 277 per 64-key tile, cfg2's 308. The
# compile report's loop and CTAs/SM columns misread split builds: they take the span of both consumer loops and
# num_warps=4 (168 registers x 384 threads: 1 CTA/SM, not 2).
TMA_CONFIGS = (
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3),
)


def _scratch_allocator(device: torch.device) -> Any:
    """Global scratch for the device-side descriptors, from torch's caching allocator on the inputs' device."""

    def allocate(size: int, alignment: int, stream: int | None) -> torch.Tensor:
        return torch.empty(size, dtype=torch.int8, device=device)

    return allocate


def attention_tma(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    config: triton.Config = TMA_CONFIGS[0],
) -> torch.Tensor:
    """softmax(q kᵀ · scale) v for (B, H, L, D) fp16/bf16 tensors with unit last stride, D in {64, 128}, scale > 0."""
    batch, heads, lq, head_dim = q.shape
    lk = k.shape[2]
    if head_dim not in TMA_HEAD_DIMS or q.dtype not in (torch.float16, torch.bfloat16) or not scale > 0:
        raise ValueError(f"attention_tma: D in {TMA_HEAD_DIMS}, fp16/bf16 and scale > 0 (got {head_dim}, {q.dtype})")
    if k.shape != (batch, heads, lk, head_dim) or v.shape != k.shape or not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"attention_tma: k and v must be (B, H, Lk, D) of q's dtype, got {k.shape}, {v.shape}")
    # The shipped kernel's output layout: (B, Lq, H, D) in memory, seen as (B, H, Lq, D)
    out = poison(torch.empty(batch, lq, heads, head_dim, dtype=q.dtype, device=q.device).transpose(1, 2))
    tensors = (q, k, v, out)
    if any(t.stride(3) != 1 or any(s % 8 for s in t.stride()[:3]) or t.data_ptr() % 16 for t in tensors):
        raise ValueError("attention_tma: 16-byte aligned tensors, unit last stride, outer strides divisible by 8")
    strides = [s // 8 for t in tensors for s in t.stride()[:3]]
    block_m, block_n = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
    grid = (batch * heads * -(-lq // block_m),)

    def launch_with_scratch_allocator() -> None:
        if q.device.type == "cuda":  # the interpreter builds its descriptors on the host and allocates nothing
            triton.set_allocator(_scratch_allocator(q.device))  # a ContextVar: set only in this copied context
        constexprs = {"HEAD_DIM": head_dim, "STRIDE_UNIT": 8, "EVEN_N": lk % block_n == 0, **config.kwargs}
        args = (*tensors, *strides, heads, lq, lk, scale * _LOG2E)
        launch(attention_tma_kernel, grid, args, constexprs, config.num_warps, config.num_stages, q.device)

    contextvars.copy_context().run(launch_with_scratch_allocator)
    return out


def aot_specs() -> list[AotSpec]:
    """sm_90 builds of every TMA config at D = 64/128, fp16/bf16, full and ragged key tiles, SD's layout (q/k/v as
    views of (B, L, H·D) projections: strides divisible by 16 elements, so the JIT marks them divisible)."""
    specs = []
    ints = [n for n in aot_signature(attention_tma_kernel, {}) if n.startswith("stride") or n in ("H", "Lq", "Lk")]
    for head_dim, dtype, even_n, (index, config) in itertools.product(
        TMA_HEAD_DIMS, ("fp16", "bf16"), (True, False), enumerate(TMA_CONFIGS)
    ):
        pointers = dict.fromkeys(("Q", "K", "V", "Out"), f"*{dtype}")
        lk = 4096 if even_n else 77
        # H = 8 heads is not a multiple of 16; every stride (in units of 8 elements) and Lq = 4096 are
        divisible = [n for n in ints if n != "H" and (n != "Lk" or lk % 16 == 0)]
        specs.append(
            AotSpec(
                kernel="attention_tma",
                fn=attention_tma_kernel,
                variant=f"d{head_dim}-{dtype}-{'even' if even_n else 'ragged'}-sm90-cfg{index}",
                signature=aot_signature(attention_tma_kernel, pointers, floats=("qk_scale",)),
                constexprs={"HEAD_DIM": head_dim, "STRIDE_UNIT": 8, "EVEN_N": even_n, **config.kwargs},
                num_warps=config.num_warps,
                num_stages=config.num_stages,
                uses_dot=True,
                divisible_by_16=("Q", "K", "V", "Out", *divisible),
                archs=(90,),
            )
        )
    return specs
