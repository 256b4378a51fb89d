"""The report's view of the hyperparameters: fANOVA importances and parallel coordinates."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from monolith.report.load import ExperimentResults
from monolith.report.markup import figure, note

# Fewer finished trials than this and an importance is noise, not a measurement.
MIN_TRIALS_FOR_IMPORTANCE = 3


def importances_section(exp: ExperimentResults) -> str:
    import optuna
    import plotly.graph_objects as go

    if exp.study is None:
        return note(f"importances need the Optuna study: {exp.study_note}")
    complete = exp.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return note(
            f"not enough finished trials: {len(complete)} complete, importances need at least "
            f"{MIN_TRIALS_FOR_IMPORTANCE}"
        )
    fig = go.Figure()
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        for i, objective in enumerate(exp.objectives[: len(exp.study.directions)]):
            # fANOVA with a small, seeded forest: a few hundred ms, the same figure every time.
            evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=32, max_depth=8, seed=0)
            target = (lambda t, i=i: t.values[i]) if exp.multi_objective else None
            importances = optuna.importance.get_param_importances(
                exp.study, evaluator=evaluator, target=target
            )
            names = list(importances)[::-1]  # plotly draws the first bar at the bottom
            fig.add_trace(
                go.Bar(
                    x=[float(importances[n]) for n in names],
                    y=names,
                    orientation="h",
                    name=objective.metric,
                )
            )
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return note(f"importances could not be computed: {exc}")
    finally:
        optuna.logging.set_verbosity(verbosity)
    n_params = max(len(t.y) for t in fig.data) if fig.data else 0
    fig.update_layout(
        barmode="group",
        xaxis_title="share of the objective's variance (fANOVA)",
        showlegend=exp.multi_objective,
        legend={"traceorder": "reversed"},  # the same order as each group's bars
        margin={"l": 200},
    )
    return note(f"from {len(complete)} complete trials") + figure(
        fig, height=max(300, 40 + 28 * n_params * len(fig.data))
    )


def _dimension(label: str, column: pd.Series) -> dict[str, Any]:
    """A parallel-coordinates axis: categories as ticks, a wide positive range on log10."""
    numeric = pd.to_numeric(column, errors="coerce")
    if column.dtype == bool or numeric.isna().any():
        categories = sorted(column.astype(str).unique())
        codes = column.astype(str).map({c: i for i, c in enumerate(categories)})
        return {
            "label": label,
            "values": codes.tolist(),
            "tickvals": list(range(len(categories))),
            "ticktext": categories,
        }
    positive = numeric[numeric > 0]
    if len(positive) == len(numeric) and len(numeric) and positive.max() / positive.min() >= 100:
        logs = np.log10(numeric)
        # The ends and the whole decades between them: a tick outside the data's range would
        # be drawn beyond the axis, over the labels.
        decades = np.arange(math.ceil(logs.min()), math.floor(logs.max()) + 1)
        ticks = sorted({float(logs.min()), *decades.tolist(), float(logs.max())})
        return {
            "label": f"{label} (log)",
            "values": logs.tolist(),
            "tickvals": ticks,
            "ticktext": [f"{10**t:.2g}" for t in ticks],
        }
    return {"label": label, "values": numeric.tolist()}


def parallel_section(exp: ExperimentResults) -> str:
    import plotly.graph_objects as go

    first = exp.objectives[0]
    values = exp.values[first.metric]
    trials = exp.trials.set_index("trial")
    keep = values.dropna().index
    if len(keep) < 2:
        return note("fewer than two trials with an objective value: nothing to compare")
    params = [c for c in exp.param_columns if trials.loc[keep, c].notna().all()]
    dims = [_dimension(c.removeprefix("config/"), trials.loc[keep, c]) for c in params]
    for objective in exp.objectives:
        dims.append(
            {"label": objective.metric, "values": exp.values[objective.metric][keep].tolist()}
        )
    fig = go.Figure(
        go.Parcoords(
            dimensions=dims,
            labelangle=-30,
            labelfont={"size": 11},
            tickfont={"size": 10},
            line={
                "color": values[keep].tolist(),
                "colorscale": "Viridis",
                # Best trials in the bright colour, whichever the direction.
                "reversescale": first.mode == "min",
                "showscale": True,
                "colorbar": {"title": {"text": first.metric}},
            },
        )
    )
    # Room above the axes for the slanted parameter names.
    fig.update_layout(margin={"l": 70, "r": 60, "t": 140, "b": 30})
    dropped = len(exp.trials) - len(keep)
    counted = f"{len(keep)} trials with a value" + (
        f"; {dropped} without one left out" if dropped else ""
    )
    return note(counted) + figure(fig, height=520)
