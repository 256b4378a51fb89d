"""A Ray job that hits an unexpected exception exits promptly, non-zero, with the error in
full, and leaves no Ray process of its own behind (a job once stayed alive 120 s after a
pyarrow traceback)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]

# Loaded by the job's interpreter at start (PYTHONPATH): the failure strikes after the job
# has started its local Ray instance, where a real bug would.
INJECT = """
import os, sys, time
if os.environ.get("MONOLITH_INJECT_FAILURE"):
    import monolith.experiment as experiment

    def broken(*args, **kwargs):
        print(f"INJECTED {time.time()}", file=sys.stderr, flush=True)
        raise RuntimeError("injected: an unexpected bug after Ray started")

    experiment.prepare_for_experiment = broken
"""


def _ray_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_unexpected_error_exits_within_seconds_and_stops_ray(tmp_path: Path) -> None:
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(INJECT)
    config = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    config["tune"]["search_space"] = str(REPO / "configs" / "search_space.yaml")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    ray_tmp = tempfile.mkdtemp(prefix="mtf-", dir="/tmp")  # Ray's socket paths must be short
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
        "PYTHONPATH": f"{inject}{os.pathsep}{REPO}",
        "RAY_TMPDIR": ray_tmp,
        "MONOLITH_INJECT_FAILURE": "1",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ray_jobs.tune", "--config", str(path), "--name", "boom",
             "--storage", str(tmp_path / "experiments")],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240,
        )  # fmt: skip
        ended = time.time()
        assert done.returncode == 1, done.stderr[-3000:]
        injected = next(
            float(line.split()[1])
            for line in done.stderr.splitlines()
            if line.startswith("INJECTED ")
        )
        assert ended - injected < 20, f"exited {ended - injected:.1f} s after the failure"
        assert "Traceback" in done.stderr
        assert "RuntimeError: injected: an unexpected bug after Ray started" in done.stderr
        assert "error: the job failed unexpectedly" in done.stderr
        deadline = time.monotonic() + 15
        while _ray_processes(ray_tmp) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _ray_processes(ray_tmp), "the job's Ray processes outlived it"
    finally:
        for proc in _ray_processes(ray_tmp):
            proc.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
