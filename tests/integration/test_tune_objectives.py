"""The tune job's Ray side of objectives and budgets, without starting Ray: the budget
stopper, the running-best callback, the multi-objective searcher, the scheduler choice, the
plan's checks, lineage helpers and the console's table."""

from __future__ import annotations

import io
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from monolith.errors import ConfigError
from monolith.tuning import Objective
from ray_jobs import tune as job
from ray_jobs.console import TrialTable

REPO = Path(__file__).resolve().parents[2]
NTXENT = Objective("val_ref_ntxent", "min")
LIFT = Objective("val_probe_mean_lift", "max")


def trial(trial_id: str, last: dict | None = None, tag: str = "1_x") -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, last_result=last or {}, experiment_tag=tag, config={})


# ---- ExperimentBudget ---------------------------------------------------------------------


def finish(budget: job.ExperimentBudget, trial_id: str, best: float) -> None:
    budget.on_trial_complete(0, [], trial(trial_id, {"best_val_ref_ntxent": best}))


def test_no_improvement_ends_the_experiment_and_names_the_cut_trials() -> None:
    budget = job.ExperimentBudget(NTXENT, None, 2)
    assert budget("t1", {"epoch": 1}) is False  # per-trial stopping is ASHA's
    finish(budget, "t1", 3.0)
    finish(budget, "t2", 2.5)  # improves
    assert not budget.stop_all()
    finish(budget, "t3", 2.6)
    assert not budget.stop_all()
    budget.on_trial_error(0, [], trial("t4"))  # a failure does not improve either
    assert budget.stop_all() and budget.ended_by == "no improvement in 2 trials"
    # Trials stopped by the end (running, or created but not started) are "cut".
    budget.on_trial_start(0, [], trial("t5"))
    budget.on_trial_complete(0, [], trial("t5", {"best_val_ref_ntxent": 1.0}))
    budget.on_trial_complete(0, [], trial("t6"))
    assert budget.was_cut("t5") and budget.was_cut("t6")
    assert "t5" in budget.started and "t6" not in budget.started
    assert budget.finished[:3] == [3.0, 2.5, 2.6] and math.isnan(budget.finished[3])
    assert budget.stop_all()  # stays ended
    # A trial running at the end whose completion Tune never reported is cut too; those
    # that ended first (finished, stopped by ASHA, failed) are not.
    assert budget.was_cut("t7") and budget.was_cut("t5")
    assert not any(budget.was_cut(t) for t in ("t1", "t2", "t3", "t4"))


def test_nothing_is_cut_while_the_experiment_runs() -> None:
    budget = job.ExperimentBudget(NTXENT, None, 5)
    finish(budget, "t1", 3.0)
    budget.on_trial_start(0, [], trial("t2"))
    assert not budget.was_cut("t1") and not budget.was_cut("t2")


def test_time_budget_ends_the_experiment(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray.tune.stopper.timeout as timeout

    clock = [1000.0]
    monkeypatch.setattr(timeout.time, "time", lambda: clock[0])
    budget = job.ExperimentBudget(NTXENT, 90, 5)
    assert not budget.stop_all()  # the clock starts at the first check (Ray's own rule)
    clock[0] += 89
    assert not budget.stop_all()
    clock[0] += 2
    assert budget.stop_all() and budget.ended_by == "time budget 90 s"


def test_budget_state_survives_a_resume_and_one_pickle_keeps_one_object() -> None:
    budget = job.ExperimentBudget(NTXENT, 60.0, 3)
    finish(budget, "t1", 3.0)
    again = job.ExperimentBudget(NTXENT, 60.0, 3)
    again.set_state(budget.get_state())
    assert again.finished == [3.0] and again.done == {"t1"}
    # Tune pickles the stopper and the callbacks together (tuner.pkl): still one object.
    stop, callbacks = pickle.loads(pickle.dumps((budget, [budget])))
    assert stop is callbacks[0]


# ---- RunningBest and the multi-objective searcher ---------------------------------------


def test_running_best_adds_the_objectives_the_workers_do_not_report() -> None:
    callback = job.RunningBest([NTXENT, LIFT])
    t = trial("t1")
    first = {"val_ref_ntxent": 4.0, "best_val_ref_ntxent": 4.0, "val_probe_mean_lift": 0.02}
    callback.on_trial_result(0, [], t, first)
    assert first["best_val_probe_mean_lift"] == 0.02
    t.last_result = first
    second = {"val_ref_ntxent": 3.0, "best_val_ref_ntxent": 3.5, "val_probe_mean_lift": -0.1}
    callback.on_trial_result(0, [], t, second)
    assert second["best_val_probe_mean_lift"] == 0.02  # the running best, not the last
    assert second["best_val_ref_ntxent"] == 3.5  # the workers' own value is kept
    t.last_result = second
    third = {"val_ref_ntxent": 3.0, "best_val_ref_ntxent": 3.0, "val_probe_mean_lift": math.nan}
    callback.on_trial_result(0, [], t, third)
    assert third["best_val_probe_mean_lift"] == 0.02


def test_the_searcher_is_told_each_objectives_best_over_epochs() -> None:
    import optuna

    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    searcher = job.BestOverEpochsSearch(
        space=space, metric=["val_ref_ntxent", "val_probe_mean_lift"], mode=["min", "max"]
    )
    assert searcher.suggest("t1") is not None
    last = {
        "val_ref_ntxent": 3.4,
        "best_val_ref_ntxent": 3.1,
        "val_probe_mean_lift": -0.2,
        "best_val_probe_mean_lift": 0.05,
    }
    searcher.on_trial_complete("t1", result=last)
    (done,) = searcher._ot_study.get_trials()
    assert done.values == [3.1, 0.05]


def plan_for(tmp_path: Path, **tune: object) -> job.Plan:
    base = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    base["tune"].update(tune)
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(base))
    args = job.build_parser().parse_args(
        ["--config", str(config), "--storage", str(tmp_path / "exp"), "--name", "n"]
    )
    return job.plan(args)


def test_plan_with_several_objectives_and_the_scheduler_it_gets(tmp_path: Path) -> None:
    p = plan_for(tmp_path, objectives=["val_probe_mean_lift", "val_ref_ntxent:min"])
    assert p.objectives == [LIFT, NTXENT] and p.multi_objective
    # The primary is the trials' own objective: they report its running best for ASHA.
    assert p.cfg.eval.objective == "val_probe_mean_lift"
    assert (p.metric, p.mode) == ("best_val_probe_mean_lift", "max")
    assert isinstance(job._scheduler(p), FIFOScheduler)  # the default: no ASHA
    assert "no early stopping" in job._describe_search(p)
    searcher = job._searcher(p)
    assert isinstance(searcher, job.BestOverEpochsSearch)
    assert searcher.metric == ["val_probe_mean_lift", "val_ref_ntxent"]
    assert searcher.mode == ["max", "min"]

    p.settings.multi_objective_stopping = "primary"
    asha = job._scheduler(p)
    assert isinstance(asha, ASHAScheduler)
    # Tune gives it TuneConfig's metric, the primary's running best (it must have none).
    assert asha.metric is None and asha.set_search_properties(p.metric, p.mode)
    assert (asha.metric, asha._mode) == ("best_val_probe_mean_lift", "max")


def test_plan_with_one_objective_keeps_asha_and_names_the_budgets(tmp_path: Path) -> None:
    p = plan_for(tmp_path, time_budget_s=600, stop_after_no_improvement=4)
    assert p.objectives == [NTXENT] and not p.multi_objective
    asha = job._scheduler(p)
    assert isinstance(asha, ASHAScheduler) and asha.metric is None
    assert p.metric == "best_val_ref_ntxent"
    assert type(job._searcher(p)).__name__ == "OptunaSearch"
    described = job._describe_search(p)
    assert "ASHA on best_val_ref_ntxent" in described
    assert "time budget 600 s" in described and "stop after 4 trials" in described


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ({"objectives": ["val_ref_ntxent:max"]}, r"tune.objectives\[0\] = 'val_ref_ntxent:max'"),
        ({"time_budget_s": 0}, r"tune.time_budget_s = 0 is invalid"),
        ({"stop_after_no_improvement": -1}, r"tune.stop_after_no_improvement = -1 is invalid"),
    ],
)
def test_plan_refuses_bad_objectives_and_budgets_before_ray(
    tmp_path: Path, tune: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_for(tmp_path, **tune)
    assert not (tmp_path / "exp").exists()


# ---- lineage helpers ----------------------------------------------------------------------


def test_package_versions_without_importing_tensorflow() -> None:
    code = (
        "import json, sys\n"
        "from monolith.lineage import package_versions\n"
        "print(json.dumps([package_versions(), 'tensorflow' in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    versions, imported = json.loads(done.stdout)
    assert set(versions) == {
        "python", "monolith", "ray", "tensorflow", "keras", "optuna", "numpy", "pandas",
    }  # fmt: skip
    assert versions["ray"] and versions["python"].count(".") == 2
    assert not imported  # read from the metadata, not imported


def test_the_trial_table_shows_every_objective() -> None:
    out = io.StringIO()
    table = TrialTable([NTXENT, LIFT], 2, ["learning_rate"], stream=out)
    t = trial("t1", tag="1_lr=0.1")
    table.on_trial_start(0, [], t)
    table.on_trial_result(
        0,
        [],
        t,
        {
            "epoch": 1,
            "val_ref_ntxent": 3.5,
            "best_val_ref_ntxent": 3.5,
            "val_probe_mean_lift": 0.03,
            "best_val_probe_mean_lift": 0.03,
        },
    )
    line = out.getvalue().splitlines()[-1]
    assert "val_ref_ntxent 3.5 (trial best 3.5)" in line
    assert "val_probe_mean_lift 0.03 (trial best 0.03)" in line
    text = table.table()
    assert "best ref_ntxent" in text and "best probe_mean_lift" in text
    assert "best so far: val_ref_ntxent 3.5 (trial 1); val_probe_mean_lift 0.03 (trial 1)" in text


def test_a_pickled_single_objective_table_still_loads() -> None:
    table = TrialTable([NTXENT], 2, ["learning_rate"])
    state = table.__getstate__()
    state.pop("objectives")
    state.update(metric="best_val_ref_ntxent", mode="min")
    old = TrialTable.__new__(TrialTable)
    old.__setstate__(state)
    assert old.objectives == [NTXENT]
