"""The results folder: every file the tune job leaves in ``results/`` (see the package
docstring), written from the per-trial records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from monolith._atomic import write_bytes_atomically
from monolith.bundle.schema import BEST_CONFIG_FILE
from monolith.config import MonolithConfig, Objective
from monolith.errors import ConfigError
from monolith.results_files import (
    HISTORY_FILE,
    LINEAGE_FILE,
    PARETO_FILE,
    STUDY_FILE,
    SUMMARY_FILE,
    TRIALS_FILE,
)
from monolith.tuning.budgets import ALL_FINISHED
from monolith.tuning.pareto import PARETO_RULE, choose
from monolith.tuning.records import Lineage, TrialRecord
from monolith.tuning.study import export_optuna
from monolith.tuning.tables import history_table, pareto_table, summary_table, trials_table


def best_config(base: MonolithConfig, record: TrialRecord) -> dict[str, Any]:
    """The flat hyperparameters of the best trial (all of them, not only the searched)."""
    return base.with_hyperparameters(record.params).hyperparameters()


def _write_text(path: Path, text: str) -> None:
    """Atomically: a reader never sees half a file."""
    write_bytes_atomically(path, text.encode())


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    _write_text(path, frame.to_csv(index=False))


def write_results(
    directory: str | Path,
    records: list[TrialRecord],
    base: MonolithConfig,
    distributions: dict[str, Any],
    objectives: list[Objective],
    max_epochs: int,
    study_name: str,
    *,
    ended_by: str = ALL_FINISHED,
    planned: int | None = None,
    lineage: Lineage | None = None,
) -> dict[str, Any]:
    """Write the results folder (see the module docstring); returns the summary.

    trials.csv, history.csv and lineage.json are written first, so an experiment in which
    no trial reported a finite objective still leaves them before the ConfigError.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    table = trials_table(records, objectives, max_epochs)
    _write_csv(directory / TRIALS_FILE, table)
    _write_csv(directory / HISTORY_FILE, history_table(records))
    if lineage is not None:
        _write_text(
            directory / LINEAGE_FILE, json.dumps(lineage.to_dict(), indent=2, default=str) + "\n"
        )
    primary = objectives[0]
    summary: dict[str, Any] = {
        "metric": primary.reported,
        "mode": primary.mode,
        "objectives": [o.to_dict() for o in objectives],
        "best_trial": None,
        "best_trial_id": None,
        "best_objective": None,
        "best_values": None,
        "pareto_front": [],
        "trials": len(records),
        "stop_reasons": table["stop_reason"].value_counts().to_dict() if len(table) else {},
        "ended_by": ended_by,
    }
    if len(objectives) > 1:
        summary["pareto_rule"] = PARETO_RULE
    if planned is not None:
        summary["trials_planned"] = planned
    export_optuna(records, distributions, objectives, directory / STUDY_FILE, study_name)
    try:
        choice = choose(records, objectives)
    except ConfigError:
        # Said in summary.json too (best_trial null), so the folder explains itself.
        _write_summary(directory, summary, table, objectives, [])
        raise
    best = choice.chosen
    _write_csv(directory / PARETO_FILE, pareto_table(records, objectives, choice))
    _write_text(
        directory / BEST_CONFIG_FILE,
        json.dumps(best_config(base, best), indent=2, sort_keys=True),
    )
    summary.update(
        best_trial=best.number,
        best_trial_id=best.trial_id,
        best_objective=choice.values[best.number][0],
        best_values=dict(
            zip([o.metric for o in objectives], choice.values[best.number], strict=True)
        ),
        pareto_front=choice.front,
    )
    _write_summary(directory, summary, table, objectives, choice.front)
    return summary


def _write_summary(
    directory: Path,
    summary: dict[str, Any],
    table: pd.DataFrame,
    objectives: list[Objective],
    front: list[int],
) -> None:
    _write_text(directory / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    text = summary_table(table, objectives, front, summary["ended_by"])
    _write_text(directory / "summary.txt", text + "\n")
