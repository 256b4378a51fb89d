"""The laptop default (configs/local.yaml) on the embedded local cluster: two 1-worker trials
at once, each with the CPUs it asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_two_one_worker_trials_train_at_once_on_the_embedded_cluster(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    assert cfg["tune"]["num_workers"] == 1 and cfg["tune"]["max_concurrent_trials"] == 2
    cfg["data"]["synthetic"] = {"symbols": 3, "rows_per_symbol": 1200, "seed": 3}
    cfg["train"].update(epochs=3, max_steps_per_epoch=10)
    cfg["eval"].update(probe_max_windows=300)
    # No ASHA rung before the last epoch: both trials run all their epochs.
    cfg["tune"].update(
        num_samples=2, grace_period=3, search_space=str(REPO / "configs" / "search_space.yaml")
    )
    config = tmp_path / "laptop.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
        "PYTHONPATH": str(REPO),
        "RAY_TMPDIR": tempfile.mkdtemp(prefix="mtl-", dir="/tmp"),  # short socket paths
    }
    done = subprocess.run(
        [sys.executable, "-m", "ray_jobs.tune", "--config", str(config), "--name", "laptop",
         "--storage", str(tmp_path / "experiments")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 worker(s) x 1 CPU each, 2 at a time" in done.stdout
    results = sorted((tmp_path / "experiments" / "laptop" / "tune").glob("*/result.json"))
    trials = [[json.loads(x) for x in p.read_text().splitlines() if x.strip()] for p in results]
    assert len(trials) == 2 and all(len(t) == 3 for t in trials)
    assert {r["world_size"] for t in trials for r in t} == {1}
    # Each trial's worker loop began before the other's last report: they trained at once
    # (with too few logical CPUs the second trial's worker would wait for the first's).
    loop_start = [t[0]["timestamp"] - t[0]["elapsed_seconds"] for t in trials]
    last_report = [t[-1]["timestamp"] for t in trials]
    assert max(loop_start) < min(last_report), (loop_start, last_report)
