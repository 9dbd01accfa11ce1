"""Flash attention for Stable Diffusion head dims, accumulating QKᵀ, the softmax statistics and PV in fp32: the
launcher. Everything a call's signature fixes (kernel, config, grid, integer arguments) is computed once into an
`AttentionCall`; a repeated call only allocates the output and launches.

Two kernels share the tile helpers of attention_tiles.py:
- `attention_pieces_kernel` (attention_pieces.py, D ≤ 256 in fp16/bf16): D covered by power-of-two dot widths.
- `attention_dv_split_kernel` (attention_dv_split.py, D > 256 - the VAE's D = 512 - and fp32 inputs): each
  program owns DV_CHUNK output columns and recomputes QKᵀ over the full D.
Launch configs live in attention_configs.py, compile specs in attention_aot.py.
"""

from __future__ import annotations

import torch

from sdkernels.kernels._direct import LaunchSite, cached, empty_output
from sdkernels.kernels._tuning import AotSpec, Plan, first_config_plan, jit_fn
from sdkernels.kernels.arch import arch_of
from sdkernels.kernels.attention_configs import bias_kind, dot_precision, head_dim_pieces, uses_pieces_kernel
from sdkernels.kernels.attention_dv_split import attention_dv_split_kernel
from sdkernels.kernels.attention_pieces import attention_pieces_kernel

_LOG2E = 1.4426950408889634  # the kernels run the softmax in exp2: they take the scale times log2(e)


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
        tuned = attention_pieces_kernel if pieces else attention_dv_split_kernel
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
    return cached(_calls, key, lambda: AttentionCall(q, k, v, scale, bias))


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

    return shipped_specs(jit_fn(attention_pieces_kernel), jit_fn(attention_dv_split_kernel))
