"""The user-facing examples run as a user would run them (a fresh process, no arguments: the tiny offline pipelines,
PyTorch reference ops on CPU) and save an image after printing the patch report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script", ["txt2img.py", "controlnet.py"])
def test_example_runs_and_saves_an_image(script: str, tmp_path: Path) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "0", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "image.png"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sdkernels patch report" in done.stdout
    assert Image.open(out).size == (64, 64)
