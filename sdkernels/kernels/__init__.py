"""Triton kernels, one module per op. Importing this package applies the interpreter fixes when
TRITON_INTERPRET=1, so bf16 runs right on CPU too."""

from sdkernels._dispatch import INTERPRET

if INTERPRET:
    from sdkernels._interpreter import apply_interpreter_fixes

    apply_interpreter_fixes()
