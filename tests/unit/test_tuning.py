"""Tune results: trials.csv, best_config.json, pareto.csv, history.csv, lineage.json, the
Optuna study export, stop reasons, the objectives and budgets of the ``tune:`` section."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from monolith.config import OBJECTIVES, load_config
from monolith.errors import ConfigError
from monolith.search_space import load_search_space
from monolith.tuning import (
    ALL_FINISHED,
    PARETO_RULE,
    Lineage,
    Objective,
    TrialRecord,
    TuneSettings,
    choose,
    choose_from_front,
    dominates,
    history_table,
    pareto_front,
    parse_objectives,
    stop_reason,
    trials_since_improvement,
    tune_settings,
    write_results,
)

REPO = Path(__file__).resolve().parents[2]
NTXENT = Objective("val_ref_ntxent", "min")
LIFT = Objective("val_probe_mean_lift", "max")


def _history(
    values: list[float], early: bool = False, lifts: list[float] | None = None
) -> list[dict]:
    rows, best = [], math.inf
    for i, v in enumerate(values, start=1):
        best = min(best, v)
        row = {"epoch": i, "val_ref_ntxent": v, "best_val_ref_ntxent": best, "loss": v + 1}
        if lifts is not None:
            row["val_probe_mean_lift"] = lifts[i - 1]
            row["best_val_probe_mean_lift"] = max(lifts[:i])
        rows.append(row)
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


def lineage() -> Lineage:
    return Lineage(
        experiment="s",
        config={"train": {"epochs": 3}},
        search_space={"latent_dim": {"type": "int", "low": 16, "high": 128, "step": 16}},
        git_commit=None,
        data_fingerprint="abc123",
        prepared="/tmp/exp/prepared",
        versions={"python": "3.11.9", "ray": "2.60.0", "tensorflow": None},
        started_at="2026-12-01T23:39:45+00:00",
        finished_at="2026-12-01T23:59:45+00:00",
    )


@pytest.fixture(scope="module")
def base():
    return load_config(REPO / "configs" / "local.yaml")


@pytest.fixture(scope="module")
def space():
    return load_search_space(REPO / "configs" / "search_space.yaml")


def test_results_agree_with_the_trials(tmp_path: Path, base, space) -> None:
    summary = write_results(
        tmp_path, records(), base, space.distributions, [NTXENT], 3, "s", lineage=lineage()
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
    assert table.loc[2, "objective/val_ref_ntxent"] == pytest.approx(3.1)
    assert table.loc[2, "best/val_ref_ntxent"] == pytest.approx(3.1)
    assert table.loc[2, "last/val_ref_ntxent"] == pytest.approx(3.3)
    # best_config.json: trial 3's values, every hyperparameter, flat.
    best = json.loads((tmp_path / "best_config.json").read_text())
    assert summary["best_trial"] == 3
    assert best["learning_rate"] == 3e-3 and best["latent_dim"] == 96
    assert best["dense_units"] == base.model.dense_units  # not searched: the base value
    assert set(best) == set(base.hyperparameters())
    # One objective: the summary still lists it, the front is the best trial, no rule.
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["objectives"] == [{"metric": "val_ref_ntxent", "mode": "min"}]
    assert on_disk["pareto_front"] == [3] and "pareto_rule" not in on_disk
    assert on_disk["ended_by"] == ALL_FINISHED == "all trials finished"
    assert on_disk["metric"] == "best_val_ref_ntxent" and on_disk["best_objective"] == 3.1
    pareto = pd.read_csv(tmp_path / "pareto.csv")
    assert list(pareto["trial"]) == [3] and bool(pareto["chosen"].iloc[0])
    # The Optuna study holds every trial, with per-epoch intermediate values.
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 5
    assert study.best_trial.params["latent_dim"] == 96
    assert study.best_value == pytest.approx(3.1)
    assert study.trials[0].intermediate_values == {1: 4.0, 2: 3.5, 3: 3.2}
    assert study.trials[4].state == optuna.trial.TrialState.FAIL
    assert study.metric_names == ["val_ref_ntxent"]
    text = (tmp_path / "summary.txt").read_text()
    assert "stopped by ASHA" in text and "ended by: all trials finished" in text


def test_history_csv_has_one_row_per_report(tmp_path: Path, base, space) -> None:
    recs = records()
    recs[0].history[0]["val_probe_regime_lift"] = 0.25  # a metric only one report has
    recs[0].history[0]["world_size"] = 2  # neither val_ nor loss nor best_: left out
    write_results(tmp_path, recs, base, space.distributions, [NTXENT], 3, "s")
    history = pd.read_csv(tmp_path / "history.csv")
    assert len(history) == 3 + 1 + 3 + 2  # the failed trial reported nothing
    assert list(history.columns) == [
        "trial", "trial_id", "epoch",
        "loss", "val_probe_regime_lift", "val_ref_ntxent", "best_val_ref_ntxent",
    ]  # fmt: skip
    assert list(history["trial"]) == [1, 1, 1, 2, 3, 3, 3, 4, 4]
    assert list(history["epoch"]) == [1, 2, 3, 1, 1, 2, 3, 1, 2]
    first = history.iloc[0]
    assert first["trial_id"] == "aaaa0001" and first["val_probe_regime_lift"] == 0.25
    assert history["val_probe_regime_lift"].isna().sum() == 8
    assert list(history.loc[history["trial"] == 3, "best_val_ref_ntxent"]) == [3.9, 3.1, 3.1]
    assert history_table([]).columns.tolist() == ["trial", "trial_id", "epoch"]


def test_lineage_json(tmp_path: Path, base, space) -> None:
    write_results(
        tmp_path, records(), base, space.distributions, [NTXENT], 3, "s", lineage=lineage()
    )
    written = json.loads((tmp_path / "lineage.json").read_text())
    assert set(written) == {
        "experiment", "config", "search_space", "git_commit", "data_fingerprint",
        "prepared", "versions", "started_at", "finished_at",
    }  # fmt: skip
    assert written["git_commit"] is None and written["data_fingerprint"] == "abc123"
    assert written["versions"]["tensorflow"] is None
    assert written["search_space"]["latent_dim"]["step"] == 16
    assert written["started_at"].endswith("+00:00")


def test_max_mode_picks_the_highest(tmp_path: Path, base, space) -> None:
    lift = Objective("val_probe_mean_lift", "max")
    recs = [
        TrialRecord("b1", 1, {"latent_dim": 16}, [{"epoch": 1, lift.metric: 0.1}], "TERMINATED"),
        TrialRecord("b2", 2, {"latent_dim": 32}, [{"epoch": 1, lift.metric: 0.3}], "TERMINATED"),
    ]
    summary = write_results(tmp_path, recs, base, space.distributions, [lift], 1, "s")
    assert summary["best_trial"] == 2


def test_no_finite_objective_is_an_error_yet_the_folder_says_so(tmp_path: Path, base) -> None:
    recs = [TrialRecord("c1", 1, {}, [{"epoch": 1, "best_val_ref_ntxent": math.nan}], "TERMINATED")]
    with pytest.raises(ConfigError, match="no trial reported a finite val_ref_ntxent"):
        write_results(tmp_path, recs, base, {}, [NTXENT], 1, "s", ended_by="time budget 60 s")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_trial"] is None and summary["ended_by"] == "time budget 60 s"
    assert (tmp_path / "trials.csv").is_file() and (tmp_path / "history.csv").is_file()
    assert not (tmp_path / "best_config.json").exists()


# ---- several objectives -----------------------------------------------------------------


def multi_records() -> list[TrialRecord]:
    """Best (ntxent, lift): 1 (3.0, 0.00)  2 (3.5, 0.10)  3 (3.2, 0.04)  4 (3.6, 0.02)
    dominated by 2; 5 failed; 6 (3.0, 0.00) equals 1; 7 ran out of budget after an epoch."""
    return [
        TrialRecord("t1", 1, {"latent_dim": 16}, _history([3.4, 3.0], lifts=[-0.1, 0.0]), "TERMINATED"),
        TrialRecord("t2", 2, {"latent_dim": 32}, _history([3.9, 3.5], lifts=[0.1, 0.05]), "TERMINATED"),
        TrialRecord("t3", 3, {"latent_dim": 48}, _history([3.2, 3.3], lifts=[0.04, 0.01]), "TERMINATED"),
        TrialRecord("t4", 4, {"latent_dim": 64}, _history([3.6, 3.7], lifts=[0.02, 0.0]), "TERMINATED"),
        TrialRecord("t5", 5, {"latent_dim": 80}, [], "ERROR", error="boom"),
        TrialRecord("t6", 6, {"latent_dim": 96}, _history([3.0, 3.1], lifts=[0.0, -0.2]), "TERMINATED"),
        TrialRecord("t7", 7, {"latent_dim": 112}, _history([3.8], lifts=[0.01]), "TERMINATED", stopped_by_budget=True),
        TrialRecord("t8", 8, {"latent_dim": 128}, [], "PENDING", stopped_by_budget=True),
    ]  # fmt: skip


def test_multi_objective_results(tmp_path: Path, base, space) -> None:
    summary = write_results(
        tmp_path, multi_records(), base, space.distributions, [NTXENT, LIFT], 2, "m",
        ended_by="time budget 90 s", planned=12, lineage=lineage(),
    )  # fmt: skip
    pareto = pd.read_csv(tmp_path / "pareto.csv")
    assert list(pareto.columns[:5]) == [
        "trial", "trial_id", "val_ref_ntxent", "val_probe_mean_lift", "chosen",
    ]  # fmt: skip
    assert "config/latent_dim" in pareto.columns
    # Front: 1 and 6 (equal: both kept), 2, 3. Normalised over it, 3 is (0.4, 0.6) short of
    # the ideal (distance 0.72): the closest; 1 and 6 are (0, 1) short, 2 is (1, 0).
    assert list(pareto["trial"]) == [1, 2, 3, 6]
    assert list(pareto.loc[pareto["chosen"], "trial"]) == [3]
    assert summary["best_trial"] == 3 and summary["pareto_front"] == [1, 2, 3, 6]
    assert summary["objectives"] == [
        {"metric": "val_ref_ntxent", "mode": "min"},
        {"metric": "val_probe_mean_lift", "mode": "max"},
    ]
    assert summary["pareto_rule"] == PARETO_RULE
    assert summary["ended_by"] == "time budget 90 s" and summary["trials_planned"] == 12
    assert summary["best_values"] == {"val_ref_ntxent": 3.2, "val_probe_mean_lift": 0.04}
    best = json.loads((tmp_path / "best_config.json").read_text())
    assert best["latent_dim"] == pareto.loc[pareto["chosen"], "config/latent_dim"].item() == 48
    table = pd.read_csv(tmp_path / "trials.csv").set_index("trial")
    assert table.loc[2, "objective/val_probe_mean_lift"] == pytest.approx(0.1)
    assert table.loc[2, "objective"] == table.loc[2, "objective/val_ref_ntxent"] == 3.5
    assert table.loc[7, "stop_reason"] == "stopped by budget"
    assert table.loc[8, "stop_reason"] == "not started"
    # The study is multi-objective: directions, both values, names; no intermediate values.
    study = optuna.load_study(study_name="m", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.directions == [
        optuna.study.StudyDirection.MINIMIZE,
        optuna.study.StudyDirection.MAXIMIZE,
    ]
    assert study.metric_names == ["val_ref_ntxent", "val_probe_mean_lift"]
    assert study.trials[1].values == [3.5, 0.1] and study.trials[1].intermediate_values == {}
    assert study.trials[4].state == optuna.trial.TrialState.FAIL
    assert sorted(t.number + 1 for t in study.best_trials) == [1, 2, 3, 6]
    text = (tmp_path / "summary.txt").read_text()
    assert "Pareto front (*) first" in text and "ended by: time budget 90 s" in text


def _rule(points: dict[int, list[float]], front: list[int], modes: list[str]) -> int:
    """PARETO_RULE, written again independently with numpy."""
    values = np.array([points[k] for k in front], dtype=float)
    signed = values * np.array([1.0 if m == "min" else -1.0 for m in modes])
    best, worst = signed.min(axis=0), signed.max(axis=0)
    span = np.where(worst > best, worst - best, 1.0)
    gap = np.where(worst > best, (signed - best) / span, 0.0)  # 0 = best, 1 = worst
    distance = np.round(np.sqrt((gap**2).sum(axis=1)), 12)
    order = sorted(range(len(front)), key=lambda i: (distance[i], signed[i, 0], front[i]))
    return front[order[0]]


@pytest.mark.parametrize("seed", range(12))
def test_pareto_front_and_choice_on_random_trials(seed: int) -> None:
    rng = random.Random(seed)
    modes = rng.choice([["min", "max"], ["max", "min", "max"], ["min"]])
    # Rounded values: ties and duplicates happen.
    points = {n: [round(rng.random(), 1) for _ in modes] for n in range(1, 16)}
    front = pareto_front(points, modes)
    for k in front:  # every row of the front is non-dominated
        assert not any(dominates(points[j], points[k], modes) for j in points if j != k)
    for k in set(points) - set(front):  # every dominated trial is left out
        assert any(dominates(points[j], points[k], modes) for j in front)
    objectives = [Objective(f"m{i}", m) for i, m in enumerate(modes)]
    assert choose_from_front(points, front, objectives) == _rule(points, front, modes)


def test_choice_ties() -> None:
    objectives = [NTXENT, LIFT]
    # Symmetric about the ideal point: equal distances, the better primary wins...
    points = {1: [1.0, 0.0], 2: [2.0, 1.0], 3: [0.0, -1.0]}
    front = pareto_front(points, ["min", "max"])
    assert front == [1, 2, 3]
    assert choose_from_front(points, front, objectives) == 1  # (0.5, 0.5) vs (1,0)/(0,1)
    two = {2: [2.0, 1.0], 3: [0.0, -1.0]}
    assert choose_from_front(two, [2, 3], objectives) == 3  # equal distance: better ntxent
    # ... and equal points go to the lower trial number.
    same = {4: [1.0, 0.5], 2: [1.0, 0.5]}
    assert pareto_front(same, ["min", "max"]) == [2, 4]
    assert choose_from_front(same, [2, 4], objectives) == 2


def test_choose_skips_failed_and_incomplete_trials() -> None:
    recs = multi_records()
    recs[0].history[-1]["val_probe_mean_lift"] = math.nan  # still finite earlier
    recs.append(TrialRecord("t9", 9, {}, [{"epoch": 1, "val_ref_ntxent": 1.0}], "TERMINATED"))
    choice = choose(recs, [NTXENT, LIFT])
    assert 9 not in choice.values  # no lift at all: not comparable on both objectives
    assert 5 not in choice.values and 8 not in choice.values
    assert choice.values[1] == [3.0, 0.0]


# ---- budgets and stop reasons -----------------------------------------------------------


def test_trials_since_improvement() -> None:
    assert trials_since_improvement([], "min") == 0
    assert trials_since_improvement([3.0], "min") == 0
    assert trials_since_improvement([3.0, 3.5, 3.0, 4.0], "min") == 3  # equal is no better
    assert trials_since_improvement([3.0, 3.5, 2.9, 4.0], "min") == 1
    assert trials_since_improvement([0.1, 0.3, 0.2], "max") == 1
    assert trials_since_improvement([math.nan, math.nan], "min") == 2  # failures count
    assert trials_since_improvement([math.nan, 3.0, math.nan], "min") == 1


def test_stop_reasons_of_a_budget() -> None:
    cut = TrialRecord("x", 1, {}, [{"epoch": 1}], "TERMINATED", stopped_by_budget=True)
    assert stop_reason(cut, 3) == "stopped by budget"
    cut.history = [{"epoch": 3}]
    assert stop_reason(cut, 3) == "completed (max epochs)"  # it had finished anyway
    early = TrialRecord("y", 2, {}, [], "TERMINATED", stopped_by_budget=True)
    assert stop_reason(early, 3) == "stopped by budget"  # started, cut before a report
    never = TrialRecord("w", 2, {}, [], "PENDING", stopped_by_budget=True)
    assert stop_reason(never, 3) == "not started"
    assert stop_reason(TrialRecord("z", 3, {}, [], "PENDING"), 3) == "not started"


# ---- the tune: section --------------------------------------------------------------------


def test_tune_settings_validation() -> None:
    cfg = load_config(REPO / "configs" / "local.yaml")
    settings = tune_settings(cfg, num_samples=3)
    # The laptop default: two 1-worker trials at once on a 2-core machine.
    assert settings.num_samples == 3 and settings.num_workers == 1
    assert settings.max_concurrent_trials == 2
    # A local cluster for it: both trials' workers and drivers (3 logical CPUs on 2 cores).
    assert settings.trial_needs() == {"CPU": 1.1}
    assert settings.concurrent_trials() == 2
    assert settings.concurrent_cpus() == pytest.approx(2.2)
    assert tune_settings(cfg, num_samples=1).concurrent_cpus() == pytest.approx(1.1)
    two = TuneSettings(num_workers=2, gpus_per_worker=1, use_gpu=True).validate()
    assert two.trial_needs() == {"CPU": 2.1, "GPU": 2.0}
    assert settings.resources_per_worker() == {"CPU": 1.0}
    assert settings.objectives_for(cfg) == [NTXENT]
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


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("time_budget_s", 0, r"tune.time_budget_s = 0 is invalid: expected a number of seconds > 0"),
        ("time_budget_s", -5.0, r"tune.time_budget_s = -5.0 is invalid"),
        ("time_budget_s", "1h", r"tune.time_budget_s = '1h' is invalid"),
        ("time_budget_s", True, r"tune.time_budget_s = True is invalid"),
        ("stop_after_no_improvement", 0, r"tune.stop_after_no_improvement = 0 is invalid: expected an integer >= 1"),
        ("stop_after_no_improvement", 2.5, r"tune.stop_after_no_improvement = 2.5 is invalid"),
        ("multi_objective_stopping", "asha", r"tune.multi_objective_stopping = 'asha' is invalid: allowed values \['none', 'primary'\]"),
    ],
)  # fmt: skip
def test_budget_settings_are_checked(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TuneSettings(**{key: value}).validate()


def test_budget_settings_accepted() -> None:
    s = TuneSettings(time_budget_s=90, stop_after_no_improvement=3).validate()
    assert s.time_budget_s == 90 and s.stop_after_no_improvement == 3


def test_objectives_parse() -> None:
    assert parse_objectives(["val_ref_ntxent:min", {"metric": "val_probe_mean_lift"}]) == [
        NTXENT,
        LIFT,
    ]
    assert parse_objectives([{"metric": "val_probe_mean_lift", "mode": "max"}]) == [LIFT]
    assert parse_objectives(["val_probe_regime_lift"]) == [
        Objective("val_probe_regime_lift", "max")
    ]
    cfg = load_config(REPO / "configs" / "local.yaml")
    settings = TuneSettings(objectives=["val_probe_mean_lift", "val_ref_ntxent"]).validate()
    assert settings.objectives_for(cfg) == [LIFT, NTXENT]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], r"tune.objectives = \[\] is invalid: expected a non-empty list"),
        ("val_ref_ntxent", r"tune.objectives = 'val_ref_ntxent' is invalid: expected a non-empty list"),
        (["val_loss"], r"tune.objectives\[0\] = 'val_loss' is invalid: unknown metric 'val_loss'"),
        (["val_ref_ntxent", "val_ref_ntxent:min"], r"tune.objectives\[1\] .* listed twice"),
        (["val_ref_ntxent:max"], r"tune.objectives\[0\] = 'val_ref_ntxent:max' is invalid: val_ref_ntxent is optimised in mode 'min', not 'max'"),
        ([{"metric": "val_ref_ntxent", "goal": "min"}], r"tune.objectives\[0\] = .* is invalid: expected"),
        ([3], r"tune.objectives\[0\] = 3 is invalid"),
    ],
)  # fmt: skip
def test_objectives_errors_name_the_entry_and_what_is_allowed(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        TuneSettings(objectives=value).validate()
    assert all(f"{m}:{d}" in str(caught.value) for m, d in OBJECTIVES.items())
