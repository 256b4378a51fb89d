"""The trials as tables: trials.csv (one row per trial), history.csv (one row per report),
pareto.csv (the front) and summary.txt's fixed-width table."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from monolith.config import Objective
from monolith.tuning.pareto import Choice
from monolith.tuning.records import TrialRecord, best_of, objective_value, stop_reason


def trials_table(
    records: list[TrialRecord], objectives: list[Objective], max_epochs: int
) -> pd.DataFrame:
    """One row per trial: params, per-metric best and last, every objective's value (the
    primary's also as ``objective``), epochs run, status, stop reason."""
    rows = []
    for rec in sorted(records, key=lambda r: r.number):
        row: dict[str, Any] = {"trial": rec.number, "trial_id": rec.trial_id}
        row.update({f"config/{k}": v for k, v in rec.params.items()})
        metric_names = sorted(
            {k for h in rec.history for k, v in h.items() if k.startswith(("val_", "loss"))}
        )
        for name in metric_names:
            series = [h.get(name, math.nan) for h in rec.history]
            row[f"last/{name}"] = series[-1]
            # Probe accuracies and lifts: higher is better; losses and geometry: lower.
            row[f"best/{name}"] = best_of(series, "max" if "_probe_" in name else "min")
        row["objective"] = objective_value(rec, objectives[0])
        for objective in objectives:
            row[f"objective/{objective.metric}"] = objective_value(rec, objective)
        row["epochs_run"] = int(rec.history[-1].get("epoch", 0)) if rec.history else 0
        row["status"] = rec.status
        row["stop_reason"] = stop_reason(rec, max_epochs)
        row["wall_seconds"] = rec.wall_seconds
        rows.append(row)
    if not rows:  # a budget spent before any trial was created: the columns still say what
        objective_columns = ["objective", *(f"objective/{o.metric}" for o in objectives)]
        fixed = ["epochs_run", "status", "stop_reason", "wall_seconds"]
        return pd.DataFrame(columns=["trial", "trial_id", *objective_columns, *fixed])
    return pd.DataFrame(rows)


def history_table(records: list[TrialRecord]) -> pd.DataFrame:
    """One row per report: trial, trial_id, epoch, then every ``val_*``/``loss*`` metric and
    every ``best_*`` value (a metric a report lacks is empty)."""
    reported = {k for r in records for h in r.history for k in h}
    metrics = sorted(k for k in reported if k.startswith(("val_", "loss")))
    bests = sorted(k for k in reported if k.startswith("best_"))
    rows = [
        {
            "trial": rec.number,
            "trial_id": rec.trial_id,
            "epoch": int(h.get("epoch", i)),
            **{k: h.get(k, math.nan) for k in metrics + bests},
        }
        for rec in sorted(records, key=lambda r: r.number)
        for i, h in enumerate(rec.history, start=1)
    ]
    return pd.DataFrame(rows, columns=["trial", "trial_id", "epoch", *metrics, *bests])


def pareto_table(
    records: list[TrialRecord], objectives: list[Objective], choice: Choice
) -> pd.DataFrame:
    """pareto.csv: trial, trial_id, one column per objective metric (the trial's best
    value), chosen, then the trial's ``config/<param>`` values."""
    by_number = {r.number: r for r in records}
    rows = []
    for number in choice.front:
        rec = by_number[number]
        row: dict[str, Any] = {"trial": number, "trial_id": rec.trial_id}
        row.update({o.metric: v for o, v in zip(objectives, choice.values[number], strict=True)})
        row["chosen"] = number == choice.chosen.number
        row.update({f"config/{k}": v for k, v in rec.params.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(
    table: pd.DataFrame,
    objectives: list[Objective],
    front: list[int] | None = None,
    ended_by: str | None = None,
) -> str:
    """The trials as a fixed-width table: with one objective best first; with several the
    Pareto front first (marked ``*``), each part by the primary objective."""
    primary = objectives[0]
    foot = f"\nended by: {ended_by}" if ended_by else ""
    if table.empty:
        return "no trials" + foot
    view = table.copy()
    columns = ["trial"]
    if len(objectives) == 1:
        columns.append("objective")
    else:
        view["pareto"] = view["trial"].isin(front or []).map({True: "*", False: ""})
        columns.append("pareto")
        for o in objectives:
            view[o.metric] = view[f"objective/{o.metric}"]
        columns += [o.metric for o in objectives]
    params = [c for c in table.columns if c.startswith("config/")]
    view["_front"] = ~view["trial"].isin(front or [])
    view = view.sort_values(
        ["_front", "objective"] if len(objectives) > 1 else ["objective"],
        ascending=[True, primary.mode == "min"] if len(objectives) > 1 else primary.mode == "min",
        na_position="last",
    )
    view = view[columns + ["epochs_run", "stop_reason"] + params]
    view.columns = [c.removeprefix("config/") for c in view.columns]
    if len(objectives) == 1:
        head = f"{primary.reported} ({primary.mode}), best first:"
    else:
        names = ", ".join(f"{o.metric} ({o.mode})" for o in objectives)
        head = f"objectives {names}; Pareto front (*) first, by {primary.metric}:"
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        return head + "\n" + view.to_string(index=False, float_format=lambda v: f"{v:.4g}") + foot
