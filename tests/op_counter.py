"""Count calls of torch.ops.sdkernels.* (as a profiler or an outside check would see them)."""

from __future__ import annotations

import collections

from torch.utils._python_dispatch import TorchDispatchMode


class SdkernelsOpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "sdkernels":
            self.counts[func._opname] += 1
        return func(*args, **(kwargs or {}))
