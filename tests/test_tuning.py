"""Tune results: trials.csv, best_config.json, the Optuna study export, stop reasons."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest

from monolith.config import load_config
from monolith.errors import ConfigError
from monolith.search_space import load_search_space
from monolith.tuning import TrialRecord, TuneSettings, tune_settings, write_results

REPO = Path(__file__).resolve().parents[1]
METRIC = "best_val_ref_ntxent"


def _history(values: list[float], early: bool = False) -> list[dict]:
    rows, best = [], math.inf
    for i, v in enumerate(values, start=1):
        best = min(best, v)
        rows.append({"epoch": i, "val_ref_ntxent": v, METRIC: best, "loss": v + 1})
    if early:
        rows[-1]["early_stopped"] = 1
    return rows


def records() -> list[TrialRecord]:
    return [
        TrialRecord("aaaa0001", 1, {"learning_rate": 1e-3, "latent_dim": 80}, _history([4, 3.5, 3.2]), "TERMINATED"),
        TrialRecord("aaaa0002", 2, {"learning_rate": 1e-5, "latent_dim": 16}, _history([5.0]), "TERMINATED"),
        TrialRecord("aaaa0003", 3, {"learning_rate": 3e-3, "latent_dim": 96}, _history([3.9, 3.1, 3.3]), "TERMINATED"),
        TrialRecord("aaaa0004", 4, {"learning_rate": 2e-3, "latent_dim": 32}, _history([4.2, 4.4], early=True), "TERMINATED"),
        TrialRecord("aaaa0005", 5, {"learning_rate": 1e-2, "latent_dim": 48}, [], "ERROR", error="boom"),
    ]  # fmt: skip


def test_results_agree_with_the_trials(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "local.yaml")
    space = load_search_space(REPO / "configs" / "search_space.yaml")
    summary = write_results(
        tmp_path, records(), cfg, space.distributions, METRIC, "min", 3, study_name="s"
    )
    table = pd.read_csv(tmp_path / "trials.csv")
    assert list(table["trial"]) == [1, 2, 3, 4, 5]
    assert list(table["stop_reason"]) == [
        "completed (max epochs)",
        "stopped by ASHA",
        "completed (max epochs)",
        "early stopping (patience)",
        "error: boom",
    ]
    assert list(table["epochs_run"]) == [3, 1, 3, 2, 0]
    assert table.loc[2, "objective"] == pytest.approx(3.1)
    assert table.loc[2, "best/val_ref_ntxent"] == pytest.approx(3.1)
    assert table.loc[2, "last/val_ref_ntxent"] == pytest.approx(3.3)
    # best_config.json: trial 3's values, every hyperparameter, flat.
    best = json.loads((tmp_path / "best_config.json").read_text())
    assert summary["best_trial"] == 3
    assert best["learning_rate"] == 3e-3 and best["latent_dim"] == 96
    assert best["dense_units"] == cfg.model.dense_units  # not searched: the base value
    assert set(best) == set(cfg.hyperparameters())
    # The Optuna study holds every trial, with per-epoch intermediate values.
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 5
    assert study.best_trial.params["latent_dim"] == 96
    assert study.best_value == pytest.approx(3.1)
    assert study.trials[0].intermediate_values == {1: 4.0, 2: 3.5, 3: 3.2}
    assert study.trials[4].state == optuna.trial.TrialState.FAIL
    assert "stopped by ASHA" in (tmp_path / "summary.txt").read_text()


def test_max_mode_picks_the_highest(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "local.yaml")
    space = load_search_space(REPO / "configs" / "search_space.yaml")
    recs = [
        TrialRecord("b1", 1, {"latent_dim": 16}, [{"epoch": 1, "m": 0.1}], "TERMINATED"),
        TrialRecord("b2", 2, {"latent_dim": 32}, [{"epoch": 1, "m": 0.3}], "TERMINATED"),
    ]
    summary = write_results(tmp_path, recs, cfg, space.distributions, "m", "max", 1, "s")
    assert summary["best_trial"] == 2


def test_no_finite_objective_is_an_error(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "local.yaml")
    recs = [TrialRecord("c1", 1, {}, [{"epoch": 1, METRIC: math.nan}], "TERMINATED")]
    with pytest.raises(ConfigError, match="no trial reported a finite"):
        write_results(tmp_path, recs, cfg, {}, METRIC, "min", 1, "s")


def test_tune_settings_validation() -> None:
    cfg = load_config(REPO / "configs" / "local.yaml")
    settings = tune_settings(cfg, num_samples=3)
    assert settings.num_samples == 3 and settings.num_workers == 2
    assert settings.resources_per_worker() == {"CPU": 1.0}
    gpu = TuneSettings(use_gpu=True).validate()
    assert gpu.resources_per_worker() == {"CPU": 1.0, "GPU": 1.0}
    with pytest.raises(ConfigError, match="tune.gpus_per_worker"):
        TuneSettings(gpus_per_worker=1).validate()
    with pytest.raises(ConfigError, match="tune.name"):
        TuneSettings(name="a/b").validate()
    with pytest.raises(
        ConfigError, match=r"tune.train_poll_interval_s = 0 is invalid: must be > 0"
    ):
        TuneSettings(train_poll_interval_s=0).validate()
    with pytest.raises(ConfigError, match=r"tune.worker_start_timeout_s = -1 is invalid"):
        TuneSettings(worker_start_timeout_s=-1).validate()
    with pytest.raises(ConfigError, match=r"tune.driver_cpus = 0 .*zero CPU share"):
        TuneSettings(driver_cpus=0).validate()
