"""TensorFlow's start-up, without its C++ start-up noise on the console.

Importing TensorFlow and finding its devices writes lines straight to the process's stderr
from C++ before any log level applies (``TF_CPP_MIN_LOG_LEVEL`` does not reach them): that
oneDNN is on, that no CUDA driver was found, and, on every machine without a GPU, an
``E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)`` that is no error at all. The CLI
and the jobs start TensorFlow here: those known lines are dropped, every other line (a real
error) is written to stderr as it came."""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from typing import Any

# Lines TensorFlow writes at start-up on a healthy machine, GPU or not.
STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|failed call to cuInit: .*(UNKNOWN ERROR \(303\)|CUDA_ERROR_NO_DEVICE)"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow"
    r"|TF-TRT Warning: Could not find TensorRT"
)
_LOCK = threading.Lock()
_started: Any = None


def start_tensorflow() -> Any:
    """``import tensorflow`` with its devices found, the start-up noise dropped; the module.

    Only the first call in a process does anything; a process that imported TensorFlow
    before gets it as it is."""
    global _started
    with _LOCK:
        if _started is not None:
            return _started
        if "tensorflow" in sys.modules:
            _started = sys.modules["tensorflow"]
            return _started
        _started = _import_quietly()
        return _started


def _import_quietly() -> Any:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # where cuInit runs and complains
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            _replay(captured.read().decode("utf-8", "replace"))
    return tf


def _replay(text: str) -> None:
    """Write what TensorFlow printed to stderr, less the known start-up noise."""
    kept = [line for line in text.splitlines() if line.strip() and not STARTUP_NOISE.search(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr)
