"""Triton kernels, one module per op: the kernel, its launcher and its configs."""
