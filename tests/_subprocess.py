"""Run a TF script in a fresh interpreter (logical devices must be set before TF starts)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path


def run_script(script: str) -> dict:
    """Run ``script``; return the JSON it prints on a line starting with ``RESULT``."""
    # TESTS_DIR: the folder of the test that runs the script (its module imports from there).
    caller = Path(inspect.stack()[1].filename).resolve().parent
    script = script.replace("TESTS_DIR", repr(str(caller)))
    # The shared helpers beside this file (the caller's module imports them) on the path too.
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": path,
    }
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line.removeprefix("RESULT"))
