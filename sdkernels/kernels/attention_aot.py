"""Ahead-of-time compile specs of every shipped attention configuration (sdkernels/kernels/attention.py), for the
compile report: per head dim, dtype, bias kind, full/ragged key tiles, architecture and config of the tables in
attention_configs.py. Signatures and integer argument names come from the kernels' own parameter lists."""

from __future__ import annotations

import itertools
from typing import Any

import torch

from sdkernels.kernels._tuning import AotSpec, aot_signature, runtime_params
from sdkernels.kernels.attention_configs import (
    BIAS_KINDS,
    DV_SPLIT_TABLE,
    MAX_PIECES_HEAD_DIM,
    PIECES_TABLE,
    dot_precision,
    head_dim_bucket,
    head_dim_pieces,
    uses_pieces_kernel,
)

_POINTERS = ("Q", "K", "V", "Bias", "Out")
AOT_HEAD_DIMS = (40, 64, 80, 160, 512)
_ARCH_OF_KIND = {"sm80": (80,), "sm90": (90,), "small": (86,), "any": (80, 86, 90)}
_TRITON_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def _sd_call_args(kernel: Any, head_dim: int, bias: str, even_n: bool) -> dict[str, int]:
    """Integer arguments of a representative SD call (q/k/v as view+transpose of (B, L, H*D) projections, a
    (B, 1, 1, Lk) key-padding or a full (B, H, Lq, Lk) bias), so the specs get the divisibility / unit-stride
    specialisation the JIT would give them. Named by the kernel's own integer parameters, in its order."""
    heads, lq = (1 if head_dim > MAX_PIECES_HEAD_DIM else 8), 4096
    lk = lq if even_n else 77
    q = torch.empty(2, lq, heads * head_dim, device="meta").view(2, lq, heads, head_dim).transpose(1, 2)
    kv = torch.empty(2, lk, heads * head_dim, device="meta").view(2, lk, heads, head_dim).transpose(1, 2)
    bias_shape = {"none": None, "per_key": (2, 1, 1, lk), "per_query_key": (2, heads, lq, lk)}[bias]
    bias_strides = (
        (0,) * 4 if bias_shape is None else torch.empty(bias_shape, device="meta").expand(2, heads, lq, lk).stride()
    )
    unit = 8  # every SD head dim is a multiple of 8, so the q/k/v/out strides travel divided by 8
    qkv = [s // unit for s in (*q.stride()[:3], *kv.stride()[:3], *kv.stride()[:3])]
    values = [*qkv, *bias_strides, *(s // unit for s in q.stride()[:3]), heads, lq, lk]
    names = [name for name in runtime_params(kernel) if name not in _POINTERS and name != "qk_scale"]
    return dict(zip(names, values, strict=True))


def shipped_specs(pieces_fn: Any, dv_split_fn: Any) -> list[AotSpec]:
    """Every shipped (kernel, head dim, dtype, bias kind, EVEN_N, config), given the two bare jit functions."""
    specs = []
    for dtype_kind, dtypes in (("half", (torch.float16, torch.bfloat16)), ("fp32", (torch.float32,))):
        for head_dim, dtype, bias, even_n in itertools.product(AOT_HEAD_DIMS, dtypes, BIAS_KINDS, (True, False)):
            pieces_kernel = uses_pieces_kernel(head_dim, dtype)
            table = PIECES_TABLE if pieces_kernel else DV_SPLIT_TABLE
            fn = pieces_fn if pieces_kernel else dv_split_fn
            ints = _sd_call_args(fn, head_dim, bias, even_n)
            pointer = f"*{_TRITON_DTYPE[dtype]}"
            signature = aot_signature(fn, dict.fromkeys(_POINTERS, pointer), floats=("qk_scale",))
            constexprs = {
                "HEAD_DIM": head_dim,
                "BIAS": bias,
                "DOT_PRECISION": dot_precision(dtype),
                "STRIDE_UNIT": 8,
                "EVEN_N": even_n,
                "FOLD_SCALE": bias == "none",  # SD's scales are positive
            }
            if pieces_kernel:
                constexprs.update(zip(("D_PIECE0", "D_PIECE1", "D_PIECE2"), head_dim_pieces(head_dim), strict=True))
            wanted = (dtype_kind, head_dim_bucket(head_dim, dtype), bias == "per_query_key")
            for (arch, *kind_bucket_bias), configs in table.items():
                if tuple(kind_bucket_bias) != wanted:
                    continue
                for index, config in enumerate(configs):
                    specs.append(
                        AotSpec(
                            kernel="attention",
                            fn=fn,
                            variant=f"d{head_dim}-{_TRITON_DTYPE[dtype]}-bias_{bias}-"
                            f"{'even' if even_n else 'ragged'}-{arch}-cfg{index}",
                            signature=signature,
                            constexprs={**constexprs, **config.kwargs},
                            num_warps=config.num_warps,
                            num_stages=config.num_stages,
                            maxnreg=config.maxnreg,
                            uses_dot=dtype_kind == "half",
                            divisible_by_16=(
                                "Q",
                                "K",
                                "V",
                                "Bias",
                                "Out",
                                *(name for name, value in ints.items() if value % 16 == 0),
                            ),
                            equal_to_1=tuple(name for name, value in ints.items() if value == 1),
                            archs=_ARCH_OF_KIND[arch],
                            # the dv-split kernel's QKᵀ slices are a loop nested in the key loop
                            notes={} if pieces_kernel else {"inner_trips": -(-head_dim // config.kwargs["QK_CHUNK"])},
                        )
                    )
    return specs
