"""Runs a Python snippet in a child process with the Triton interpreter off: `aot_specs()` builds specs from real
JITFunctions, which this test process (TRITON_INTERPRET=1, tests/conftest.py) does not have."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_without_interpreter(script: str) -> subprocess.CompletedProcess[str]:
    """`python -c script` from the repository root with TRITON_INTERPRET=0; the caller checks the return code."""
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "TRITON_INTERPRET": "0"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
