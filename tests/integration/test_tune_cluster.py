"""The tune job on a real local Ray cluster (head + worker node, token auth), submitted with
``ray job submit`` as ``make tune-cluster`` does.

One experiment shows the distributed mechanics at once: 2 workers per trial training
together on the gathered global batch, a Train worker killed mid-trial and the trial
resuming from its checkpoint, ASHA stopping a trial that was built to lose, and the
results agreeing with the trials. A second experiment has its job driver killed and is
completed with ``--resume`` without re-running finished trials. A third searches two
objectives until its time budget runs out: a Pareto front and every result file from the
trials finished so far.
"""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml
from ray_cluster import LocalRayCluster, job_id_from

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GOOD_LR = 0.0015562385502385044
# Trials 2 and 3 draw from this space (TPE's random start-up, seeded). A learning rate of
# 1e-9 leaves the encoder untrained: ASHA must stop such a trial at its first rung.
SEARCH_SPACE = {
    "learning_rate": {"type": "categorical", "choices": [GOOD_LR, 1.0e-9]},
    "augmentation_type": {"type": "categorical", "choices": ["scaling", "jitter"]},
}


def tiny_config(
    tmp: Path, *, samples: int, epochs: int, seed: int, steps: int = 12, **tune: object
) -> Path:
    space = tmp / "space.yaml"
    space.write_text(yaml.safe_dump(SEARCH_SPACE))
    base = yaml.safe_load((Path(__file__).parents[2] / "configs" / "local.yaml").read_text())
    base["data"]["synthetic"] = {"symbols": 3, "rows_per_symbol": 1200, "seed": 3}
    base["train"].update(epochs=epochs, max_steps_per_epoch=steps, early_stopping_patience=5)
    base["eval"].update(probe_max_windows=600, reference_batch_size=128)
    base["tune"].update(
        search_space=str(space),
        num_samples=samples,
        n_startup_trials=4,
        seed=seed,
        grace_period=1,
        reduction_factor=2,
        num_workers=2,
        worker_max_failures=2,
    )
    # One 2-worker trial at a time (the laptop default runs two 1-worker trials at once), so
    # ASHA and TPE see every earlier trial's reports; a test may say otherwise.
    base["tune"].update({"max_concurrent_trials": 1, **tune})
    path = tmp / "tune.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def trial_dirs(experiment: Path) -> dict[int, Path]:
    out = {}
    for d in (experiment / "tune").glob("run_trial_*"):
        out[int(d.name.split("_")[3])] = d
    return out


def reports(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_submission_without_the_token_is_refused(cluster: LocalRayCluster, tmp_path) -> None:
    entry = ["python", "-c", "print('should never run')"]
    missing = cluster.submit(entry, token=None, timeout=120)
    assert missing.returncode != 0
    assert "token" in (missing.stdout + missing.stderr).lower()
    wrong = cluster.submit(entry, token="not-the-cluster-token", timeout=120)
    assert wrong.returncode != 0
    text = (wrong.stdout + wrong.stderr).lower()
    assert "unauthenticated" in text or "token" in text
    assert "should never run" not in wrong.stdout


def _kill_a_train_worker_after_first_checkpoint(
    cluster: LocalRayCluster, experiment: Path, deadline: float
) -> int:
    """SIGKILL one of this cluster's RayTrainWorkers during trial 1's second epoch.

    The kill waits for Tune to have trial 1's first report, so Ray Train has registered that
    epoch's checkpoint (a worker lost earlier loses the epoch too); epochs last seconds.
    """
    while time.monotonic() < deadline:
        dirs = trial_dirs(experiment) if (experiment / "tune").is_dir() else {}
        if 1 in dirs and reports(dirs[1]):
            for proc in cluster.processes():
                try:
                    cmd = " ".join(proc.cmdline())
                except psutil.NoSuchProcess:
                    continue
                if cmd.startswith("ray::RayTrainWorker"):
                    proc.send_signal(signal.SIGKILL)
                    return proc.pid
        time.sleep(0.2)
    raise AssertionError("no Train worker to kill before the deadline")


def test_tune_job_on_the_cluster(cluster: LocalRayCluster, tmp_path: Path) -> None:
    # Epochs of up to 40 steps (~2.3 s with 2 workers here): 5 of them, so the worker kill,
    # which waits for epoch 1 in Tune's result.json, lands before trial 1's last epoch.
    config = tiny_config(tmp_path, samples=3, epochs=5, seed=3, steps=40)
    storage = tmp_path / "experiments"
    entry = ["python", "-m", "ray_jobs.tune", "--config", str(config), "--name", "it"]
    entry += ["--storage", str(storage)]
    submitted = cluster.submit(entry, wait=False, timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    job = job_id_from(submitted.stdout + submitted.stderr)
    killed = _kill_a_train_worker_after_first_checkpoint(
        cluster, storage / "it", time.monotonic() + 300
    )
    status = cluster.wait_job(job, timeout=900)
    logs = cluster.job_logs(job)
    assert status == "SUCCEEDED", logs[-5000:]

    experiment = storage / "it"
    trials = pd.read_csv(experiment / "results" / "trials.csv")
    assert list(trials["trial"]) == [1, 2, 3]
    by_number = trial_dirs(experiment)
    first = reports(by_number[1])

    # 2 workers trained together: world size 2, and each worker's NT-Xent saw the gathered
    # global batch (not its own half).
    for number in (1, 2, 3):
        for row in reports(by_number[number]):
            assert row["world_size"] == 2
            assert row["loss_windows_gathered"] == row["global_batch"] == row["samples_per_step"]

    # The killed worker's trial resumed from its checkpoint: a later report says so, and
    # the epochs run once each, in order, to the end.
    assert killed > 0
    assert [r["epoch"] for r in first] == [1, 2, 3, 4, 5]
    assert max(r["resumed_at_epoch"] for r in first) >= 1, first
    # The workers' logs are under the experiment (one folder per Train run), not in the
    # job's console; the restarted worker group's say where it resumed from.
    worker_logs = sorted((experiment / "logs").glob("trial-*/worker-*.log"))
    assert len(worker_logs) >= 6, worker_logs  # 3 trials x 2 workers
    assert any("resumes from" in p.read_text() for p in worker_logs)

    # The console: a line per trial event and the final table, not the workers' chatter.
    ours = [ln for ln in logs.splitlines() if " cli.py:" not in ln and " sdk.py:" not in ln]
    assert len(ours) < 60, "\n".join(ours)
    assert not any("RayTrainWorker" in ln or "tensorflow" in ln.lower() for ln in ours), ours
    assert any(ln.startswith("trial  1 completed") for ln in ours), ours
    assert any("stopped" in ln for ln in ours if ln.startswith("trial")), ours

    # The warm start (the base config's hyperparameters) is trial 1.
    row1 = trials.loc[trials["trial"] == 1].iloc[0]
    assert math.isclose(row1["config/learning_rate"], GOOD_LR)
    assert row1["config/augmentation_type"] == "scaling"

    # ASHA stopped the trial built to lose, at its first rung.
    stopped = trials[trials["stop_reason"] == "stopped by ASHA"]
    assert len(stopped) >= 1, trials[["trial", "config/learning_rate", "stop_reason"]]
    assert (stopped["epochs_run"] < 5).all()
    losers = trials[trials["config/learning_rate"] < 1e-6]
    assert (losers["stop_reason"] != "completed (max epochs)").all()
    assert (losers["epochs_run"] < 3).all()  # at the rung of epoch 1 or 2, not later

    # best_config.json is the best trial of trials.csv, in the original's flat format.
    best_cfg = json.loads((experiment / "results" / "best_config.json").read_text())
    best_row = trials.loc[trials["objective"].idxmin()]
    assert math.isclose(best_cfg["learning_rate"], best_row["config/learning_rate"])
    assert best_cfg["augmentation_type"] == best_row["config/augmentation_type"]
    assert {"dense_units", "lstm_units", "batch_size", "latent_dim"} <= set(best_cfg)
    summary = json.loads((experiment / "results" / "summary.json").read_text())
    assert summary["best_trial"] == int(best_row["trial"])

    import optuna

    study = optuna.load_study(
        study_name="it", storage=f"sqlite:///{experiment / 'results' / 'optuna.db'}"
    )
    assert len(study.trials) == 3
    assert math.isclose(study.best_value, best_row["objective"], rel_tol=1e-6)
    assert list((by_number[1]).glob("events.out.tfevents.*")), "no TensorBoard log"


def test_killed_driver_then_resume_keeps_finished_trials(
    cluster: LocalRayCluster, tmp_path: Path
) -> None:
    config = tiny_config(tmp_path, samples=3, epochs=2, seed=5)
    storage = tmp_path / "experiments"
    entry = ["python", "-m", "ray_jobs.tune", "--config", str(config), "--name", "res"]
    entry += ["--storage", str(storage)]
    submitted = cluster.submit(entry, wait=False, timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    job = job_id_from(submitted.stdout + submitted.stderr)
    experiment = storage / "res"

    # Wait until trial 1 has finished and the experiment snapshot (every 5 s) has seen it.
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        dirs = trial_dirs(experiment) if (experiment / "tune").is_dir() else {}
        if 1 in dirs and any(r.get("done") for r in reports(dirs[1])):
            break
        time.sleep(1)
    else:
        raise AssertionError(cluster.job_logs(job)[-4000:])
    time.sleep(8)
    finished_before = (trial_dirs(experiment)[1] / "result.json").read_text()
    drivers = []
    for proc in cluster.processes():
        try:
            cmd = proc.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "ray_jobs.tune" in cmd and str(config) in cmd and "python" in cmd[0]:
            drivers.append(proc)
    assert drivers, "the tune job's driver process was not found"
    for proc in drivers:
        proc.send_signal(signal.SIGKILL)
    assert cluster.wait_job(job, timeout=120) in ("FAILED", "STOPPED")
    assert not (experiment / "results" / "best_config.json").exists()

    resumed = cluster.submit([*entry, "--resume"], wait=True, timeout=900)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-5000:]
    trials = pd.read_csv(experiment / "results" / "trials.csv")
    assert len(trials) == 3 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"TERMINATED"}
    # The trial finished before the kill was kept, not re-run: its reports are unchanged.
    assert (trial_dirs(experiment)[1] / "result.json").read_text() == finished_before
    assert len(trial_dirs(experiment)) == 3
    assert (experiment / "results" / "best_config.json").is_file()


# Long enough for a few tiny trials on 2 shared cores, short enough to end the search long
# before its 20 trials: the budget, not the trial count, ends it.
TIME_BUDGET_S = 75


def _dominates(a: list[float], b: list[float], modes: list[str]) -> bool:
    signed = [(x, y) if m == "min" else (-x, -y) for x, y, m in zip(a, b, modes, strict=True)]
    return all(x <= y for x, y in signed) and any(x < y for x, y in signed)


def test_multi_objective_search_within_a_time_budget(
    cluster: LocalRayCluster, tmp_path: Path
) -> None:
    objectives = ["val_ref_ntxent:min", "val_probe_mean_lift:max"]
    config = tiny_config(
        tmp_path, samples=20, epochs=2, seed=11, steps=6,
        objectives=objectives, time_budget_s=TIME_BUDGET_S,
    )  # fmt: skip
    storage = tmp_path / "experiments"
    entry = ["python", "-m", "ray_jobs.tune", "--config", str(config), "--name", "mo"]
    entry += ["--storage", str(storage)]
    # The job runs from an uploaded copy without .git: the submitter names the commit.
    commit = "0123456789abcdef0123456789abcdef01234567"
    done = cluster.submit(entry, wait=True, timeout=600, env_vars={"MONOLITH_GIT_COMMIT": commit})
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs[-5000:]
    results = storage / "mo" / "results"

    # The budget ended the search, cleanly, and the console said so.
    summary = json.loads((results / "summary.json").read_text())
    assert summary["ended_by"] == f"time budget {TIME_BUDGET_S} s", summary
    assert f"the experiment ended: time budget {TIME_BUDGET_S} s" in logs
    trials = pd.read_csv(results / "trials.csv")
    assert 1 <= len(trials) < 20 and summary["trials_planned"] == 20
    assert set(trials["stop_reason"]) <= {
        "completed (max epochs)", "early stopping (patience)", "stopped by budget", "not started",
    }, trials["stop_reason"]  # fmt: skip
    assert summary["objectives"] == [
        {"metric": "val_ref_ntxent", "mode": "min"},
        {"metric": "val_probe_mean_lift", "mode": "max"},
    ]
    assert "pareto_rule" in summary

    # The Pareto front: every row non-dominated, every other finished trial dominated.
    metrics, modes = ["val_ref_ntxent", "val_probe_mean_lift"], ["min", "max"]
    pareto = pd.read_csv(results / "pareto.csv")
    values = {
        int(r["trial"]): [r[f"objective/{m}"] for m in metrics]
        for _, r in trials.iterrows()
        if all(math.isfinite(r[f"objective/{m}"]) for m in metrics)
    }
    front = sorted(pareto["trial"].astype(int))
    assert front == summary["pareto_front"] and front
    for k in front:
        assert not any(_dominates(values[j], values[k], modes) for j in values if j != k)
        row = pareto.loc[pareto["trial"] == k].iloc[0]
        assert [row[m] for m in metrics] == pytest.approx(values[k])
    for k in set(values) - set(front):
        assert any(_dominates(values[j], values[k], modes) for j in front)
    # best_config.json is the chosen row's config.
    assert pareto["chosen"].sum() == 1
    chosen = pareto.loc[pareto["chosen"]].iloc[0]
    assert int(chosen["trial"]) == summary["best_trial"]
    best_cfg = json.loads((results / "best_config.json").read_text())
    for column in (c for c in pareto.columns if c.startswith("config/")):
        expected = chosen[column]
        got = best_cfg[column.removeprefix("config/")]
        assert got == pytest.approx(expected) if isinstance(got, float) else got == expected

    # Every trial reported both objectives' running best (the workers report only the
    # primary's): the searcher, the loggers and history.csv saw them.
    history = pd.read_csv(results / "history.csv")
    assert {"trial", "trial_id", "epoch", "best_val_probe_mean_lift"} <= set(history.columns)
    assert set(history["trial"]) == set(trials.loc[trials["epochs_run"] > 0, "trial"])
    lifts = history.groupby("trial")["val_probe_mean_lift"].cummax()
    assert list(history["best_val_probe_mean_lift"]) == pytest.approx(list(lifts))

    import optuna

    study = optuna.load_study(study_name="mo", storage=f"sqlite:///{results / 'optuna.db'}")
    assert len(study.directions) == 2 and len(study.trials) == len(trials)
    lineage = json.loads((results / "lineage.json").read_text())
    prepared_key = json.loads((storage / "mo" / "prepared.json").read_text())["key"]
    assert lineage["data_fingerprint"] == prepared_key
    assert lineage["experiment"] == "mo" and lineage["config"]["eval"]["objective"] == metrics[0]
    assert lineage["git_commit"] == commit

    # The experiment report was written with the results, every section in it.
    from monolith.report import SECTIONS

    page = (results / "report.html").read_text()
    for section, _title in SECTIONS:
        assert f'id="{section}"' in page, section
    assert "report: " in logs and "report.html" in logs
    assert lineage["versions"]["ray"] and lineage["finished_at"] >= lineage["started_at"]
