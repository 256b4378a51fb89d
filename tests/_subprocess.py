"""Run a TF script in a fresh interpreter (logical devices must be set before TF starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_script(script: str) -> dict:
    """Run ``script``; return the JSON it prints on a line starting with ``RESULT``."""
    script = script.replace("TESTS_DIR", repr(str(Path(__file__).parent)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line.removeprefix("RESULT"))
