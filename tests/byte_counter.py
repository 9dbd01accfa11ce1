"""Counts the bytes Triton kernels load and store under the interpreter, per named tensor: what the traffic model
(sdkernels/tools/traffic_model.py, traffic_sd3.py) is checked against."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator

import numpy as np
import torch


class ByteCounter:
    """Every masked load/store the interpreter executes: (is_store, addresses of the mask-true lanes, itemsize).
    `create_load`/`create_store` (unmasked) delegate to the masked builders, so each access is seen once."""

    def __init__(self) -> None:
        self.events: list[tuple[bool, np.ndarray, int]] = []

    def record(self, is_store: bool, ptrs, mask) -> None:
        addresses = np.asarray(ptrs.data).reshape(-1)
        lanes = np.broadcast_to(np.asarray(mask.data), np.shape(ptrs.data)).reshape(-1)
        self.events.append((is_store, addresses[lanes], ptrs.get_element_ty().primitive_bitwidth // 8))

    def by_tensor(self, tensors: dict[str, torch.Tensor]) -> dict[str, int]:
        """Bytes per named tensor (its whole storage's address range); everything else lands in "other"."""
        ranges = {}
        for name, t in tensors.items():
            storage = t.untyped_storage()
            ranges[name] = (storage.data_ptr(), storage.data_ptr() + storage.nbytes())
        assert len({r for r in ranges.values()}) == len(ranges), "tensors must not share storage"
        totals = collections.Counter({name: 0 for name in [*tensors, "other"]})
        for _, addresses, itemsize in self.events:
            claimed = np.zeros(addresses.shape, dtype=bool)
            for name, (lo, hi) in ranges.items():
                inside = (addresses >= lo) & (addresses < hi)
                totals[name] += int(inside.sum()) * itemsize
                claimed |= inside
            totals["other"] += int((~claimed).sum()) * itemsize
        return dict(totals)


@contextlib.contextmanager
def count_bytes() -> Iterator[ByteCounter]:
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    load, store = builder.create_masked_load, builder.create_masked_store
    counter = ByteCounter()

    def counted_load(self, ptrs, mask, other, cache_policy, is_volatile):
        counter.record(False, ptrs, mask)
        return load(self, ptrs, mask, other, cache_policy, is_volatile)

    def counted_store(self, ptrs, value, mask, cache_policy):
        counter.record(True, ptrs, mask)
        return store(self, ptrs, value, mask, cache_policy)

    builder.create_masked_load, builder.create_masked_store = counted_load, counted_store
    try:
        yield counter
    finally:
        builder.create_masked_load, builder.create_masked_store = load, store
