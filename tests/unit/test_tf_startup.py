"""TensorFlow starts without its C++ start-up noise on the console, and keeps its errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from monolith.tf_startup import _replay

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796674923.071411   10802 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results",
    "I0000 00:00:1796674923.072366   10802 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "E0000 00:00:1796674924.622030   10802 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]
ERROR = "E0000 00:00:1796674924.7   10802 op_kernel.cc:1] OOM when allocating tensor"


def test_replay_drops_the_known_start_up_lines_and_keeps_the_rest(capsys) -> None:
    _replay("\n".join([*NOISE[:2], ERROR, *NOISE[2:], ""]))
    assert capsys.readouterr().err == ERROR + "\n"
    _replay("\n".join(NOISE))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("quiet", [True, False])
def test_starting_tensorflow_prints_no_start_up_noise(quiet: bool) -> None:
    start = "from monolith.tf_startup import start_tensorflow as s; tf = s()"
    plain = "import tensorflow as tf; tf.config.list_physical_devices()"
    code = f"{start if quiet else plain}; import sys; print('after', file=sys.stderr)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    if quiet:
        assert lines == ["after"]
    else:  # what the quiet start removes is really there (on this machine: no GPU)
        assert any("oneDNN" in line or "cuda" in line.lower() for line in lines), lines


def test_the_cli_starts_tensorflow_quietly(tmp_path) -> None:
    from pathlib import Path

    monolith = str(Path(sys.executable).with_name("monolith"))
    out = subprocess.run(
        [monolith, "inspect", str(tmp_path / "no-bundle")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "tensorflow" in subprocess.run(  # the command did start TensorFlow
        [sys.executable, "-c", "import monolith.cli as c; print(c.build_parser().parse_args("
         "['inspect', 'x']).tensorflow and 'tensorflow')"],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
