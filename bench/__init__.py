"""Benchmarks of sdkernels on a CUDA GPU (see bench/README.md). Not part of the installed package."""
