"""`python -m sdkernels demo | compile-report | traffic | coldstart | versions | gpu-check [args]`."""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "demo": (
        "sdkernels.testing.demo",
        "patch a tiny offline SD pipeline, print the report and the patched-vs-unpatched difference, save the image",
    ),
    "compile-report": (
        "sdkernels.tools.compile_report",
        "compile every shipped kernel config for sm_80/sm_90 (no GPU "
        "needed) and report registers, spills, shared memory, MMA",
    ),
    "traffic": ("sdkernels.tools.traffic", "bytes each kernel moves on SD shapes vs eager PyTorch and the floor"),
    "coldstart": (
        "sdkernels.tools.coldstart",
        "every distinct Triton compile an SD generation triggers on a GPU arch, computed without a GPU; "
        "--compile compiles them ahead of time",
    ),
    "versions": ("sdkernels._versions", "installed torch/triton/diffusers, supported floors, version paths"),
    "gpu-check": ("sdkernels.tools.gpu_check", "one-command GPU check: tests, op sweep, benches, SD1.5 step"),
}


def _usage() -> str:
    lines = ["usage: python -m sdkernels COMMAND [args]", "", "commands:"]
    lines += [f"  {name:15s} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(_usage(), file=sys.stderr if argv else sys.stdout)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    if argv[0] == "demo" and "TRITON_INTERPRET" not in os.environ:
        import torch

        # Without CUDA the demo still runs the real Triton kernels, through the interpreter. Triton (and sdkernels'
        # dispatch) read the variable once, when first imported, and `python -m sdkernels` has imported the package
        # already, so start afresh with it set.
        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"
            os.execv(sys.executable, [sys.executable, "-m", "sdkernels", *argv])
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
