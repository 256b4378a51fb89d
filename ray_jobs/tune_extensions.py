"""The tune job's extensions of Ray Tune: the running best of every objective, a searcher
told each objective's best over a trial's epochs, and the experiment's budgets.

Tune's extension points are classes to subclass, so Ray is imported here at module level
(the library never imports it).

The budgets are one ``ExperimentBudget``, not Ray's ``CombinedStopper(TimeoutStopper(...),
...)``: the results record which budget ended the experiment and which trials it cut
(``ended_by``, ``was_cut``), which a combined stopper does not say; the time budget itself
is Ray's ``TimeoutStopper``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch
from ray.tune.stopper import Stopper, TimeoutStopper

from monolith.tuning import (
    Objective,
    ended_by_no_improvement,
    ended_by_time_budget,
    trials_since_improvement,
)

log = logging.getLogger("ray_jobs.tune")


class RunningBest(Callback):
    """Adds ``best_<metric>``, the running best over the trial's reports, for each objective
    its workers do not report (they report only their ``eval.objective``'s, the primary's).

    Listed before the loggers: result.json, the searcher and the console see it. Stateless:
    the previous best rides in the trial's last result, which Tune keeps across --resume.
    """

    def __init__(self, objectives: list[Objective]) -> None:
        self.objectives = list(objectives)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        previous = getattr(trial, "last_result", None) or {}
        for o in self.objectives:
            if o.reported not in result:
                result[o.reported] = _better(result.get(o.metric), previous.get(o.reported), o.mode)


def _better(a: Any, b: Any, mode: str) -> float:
    finite = [float(v) for v in (a, b) if isinstance(v, int | float) and math.isfinite(v)]
    if not finite:
        return math.nan
    return min(finite) if mode == "min" else max(finite)


class BestOverEpochsSearch(OptunaSearch):
    """OptunaSearch over several objectives, told each one's best over the trial's epochs.

    Its metrics are the per-epoch names (``val_ref_ntxent``, ...): Tune checks every report
    for a searcher's metrics before callbacks run, and only the primary's ``best_`` value
    comes from the workers (``RunningBest`` adds the others'). When a trial ends, each
    objective is read from the trial's ``best_<metric>`` instead of its last epoch.
    """

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if result:
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            best = {m: result[f"best_{m}"] for m in metrics if f"best_{m}" in result}
            result = {**result, **best}
        super().on_trial_complete(trial_id, result=result, error=error)


class ExperimentBudget(Stopper, Callback):
    """Ends the whole experiment when a budget is spent: ``tune.time_budget_s`` (Ray's
    TimeoutStopper, what ``TuneConfig(time_budget_s=...)`` builds) or
    ``tune.stop_after_no_improvement`` finished trials in a row without a better primary
    objective. Trials still running are stopped (their reports so far are kept), those not
    started never start, and the results are written from what finished.

    One object is the experiment's stopper and one of its callbacks: it sees trials finish,
    in order, and knows which trials the end cut (``was_cut``) and why (``ended_by``).
    """

    def __init__(
        self, primary: Objective, time_budget_s: float | None, no_improvement: int | None
    ) -> None:
        self.primary = primary
        self.time_budget_s = time_budget_s
        self.no_improvement = no_improvement
        self._timeout = TimeoutStopper(time_budget_s) if time_budget_s else None
        self.finished: list[float] = []  # each finished trial's primary objective, in order
        self.ended_by: str | None = None
        self.started: set[str] = set()
        self.done: set[str] = set()  # trials that ended on their own (or by ASHA) first

    # -- Stopper: per-trial stopping is ASHA's; this one stops everything or nothing --------
    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        if self.ended_by is None:
            if self._timeout is not None and self._timeout.stop_all():
                self.ended_by = ended_by_time_budget(self.time_budget_s)
            elif (
                self.no_improvement
                and trials_since_improvement(self.finished, self.primary.mode)
                >= self.no_improvement
            ):
                self.ended_by = ended_by_no_improvement(self.no_improvement)
            if self.ended_by is not None:
                log.info("ending the experiment: %s", self.ended_by)
        return self.ended_by is not None

    # -- Callback ------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started.add(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.ended_by is not None:
            return  # stopped (or never started) by the end: ``was_cut``
        self.done.add(trial.trial_id)
        last = getattr(trial, "last_result", None) or {}
        value = last.get(self.primary.reported, math.nan)
        self.finished.append(float(value) if isinstance(value, int | float) else math.nan)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.ended_by is None:
            self.done.add(trial.trial_id)
            self.finished.append(math.nan)  # a failed trial did not improve the best

    def was_cut(self, trial_id: str) -> bool:
        """Whether the end stopped this trial (or kept it from starting): every trial that
        had not ended before it. Not only those whose completion Tune reports after the end:
        it does not always report one it stops there (seen here: a trial whose first report
        arrived as the time budget ran out)."""
        return self.ended_by is not None and trial_id not in self.done

    # Kept with the experiment's snapshots: a --resume counts on from the trials before it
    # (the time budget starts afresh, as Ray's own does).
    def get_state(self) -> dict | None:
        return {"finished": list(self.finished), "done": sorted(self.done)}

    def set_state(self, state: dict) -> None:
        self.finished = list(state.get("finished", []))
        self.done = set(state.get("done", []))
