"""The experiment as an Optuna study in a SQLite file (``optuna-dashboard sqlite:///optuna.db``)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from monolith.config import Objective
from monolith.tuning.records import TrialRecord, objective_value


def export_optuna(
    records: list[TrialRecord],
    distributions: dict[str, Any],
    objectives: list[Objective],
    path: str | Path,
    study_name: str,
) -> Path:
    """Write the study to a SQLite file: params, state, the objectives' values (a
    multi-objective study with several) and, with one objective, per-epoch intermediate
    values (Optuna records those for single-objective studies only)."""
    import optuna

    path = Path(path)
    if path.exists():
        path.unlink()
    study = optuna.create_study(
        study_name=study_name,
        storage=f"sqlite:///{path.resolve()}",
        directions=["minimize" if o.mode == "min" else "maximize" for o in objectives],
    )
    with warnings.catch_warnings():
        # set_metric_names is "experimental" since Optuna 3.2: the dashboard shows the names.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.metric for o in objectives])
    single = len(objectives) == 1
    for rec in sorted(records, key=lambda r: r.number):
        values = [objective_value(rec, o) for o in objectives]
        finished = rec.status == "TERMINATED" and all(math.isfinite(v) for v in values)
        params = {k: v for k, v in rec.params.items() if k in distributions}
        intermediate = {}
        if single:
            o = objectives[0]
            for i, h in enumerate(rec.history, start=1):
                v = h.get(o.reported, h.get(o.metric, math.nan))
                if isinstance(v, int | float) and math.isfinite(v):
                    intermediate[int(h.get("epoch", i))] = float(v)
        trial = optuna.trial.create_trial(
            params=params,
            distributions={k: distributions[k] for k in params},
            values=values if finished else None,
            intermediate_values=intermediate,
            state=optuna.trial.TrialState.COMPLETE if finished else optuna.trial.TrialState.FAIL,
            user_attrs={"trial_id": rec.trial_id, "status": rec.status},
        )
        study.add_trial(trial)
    return path
