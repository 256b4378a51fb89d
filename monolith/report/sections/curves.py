"""The report's curves: the optimisation history over trials and every trial's learning curve
over epochs, with the epochs where ASHA (or the budget) stopped trials."""

from __future__ import annotations

import html

import pandas as pd

from monolith.experiment import TUNE_DIR
from monolith.report.load import ExperimentResults
from monolith.report.markup import figure, note, trial_colour
from monolith.results_files import ASHA_STOPPED, BUDGET_STOPPED, HISTORY_FILE


def history_section(exp: ExperimentResults) -> str:
    import plotly.graph_objects as go

    reasons = exp.stop_reasons()
    parts = []
    for objective in exp.objectives:
        values = exp.values[objective.metric]
        fig = go.Figure()
        for reason in sorted(reasons.unique()):
            numbers = reasons.index[reasons == reason]
            fig.add_trace(
                go.Scatter(
                    x=list(numbers),
                    y=values.reindex(numbers).tolist(),
                    mode="markers",
                    name=reason,
                    marker={"size": 10},
                    hovertemplate="trial %{x}: %{y:.4g}<extra>" + html.escape(reason) + "</extra>",
                )
            )
        finite = values.dropna()
        running = finite.cummin() if objective.mode == "min" else finite.cummax()
        fig.add_trace(
            go.Scatter(
                x=list(running.index),
                y=running.tolist(),
                mode="lines",
                line={"shape": "hv", "color": "black", "width": 2},
                name="running best",
            )
        )
        fig.update_layout(
            title=objective.label,
            xaxis_title="trial (in creation order)",
            yaxis_title=objective.metric,
        )
        fig.update_xaxes(dtick=1 if len(values) <= 30 else None)
        parts.append(figure(fig))
        if finite.empty:
            parts.append(note(f"no trial reported a finite {objective.metric}"))
        parts.append(note(f"values from {exp.value_sources[objective.metric]}"))
    return "".join(parts)


def _history_column(history: pd.DataFrame, metric: str) -> str | None:
    """The per-epoch column of ``metric``: its raw value rather than the running best that
    the search ranks (``best_<metric>``), since a running best hides how training went."""
    for column in (metric.removeprefix("best_"), metric, f"best_{metric}"):
        if column in history:
            return column
    return None


def learning_curves_section(exp: ExperimentResults) -> str:
    import plotly.graph_objects as go

    if exp.history is None or exp.history.empty:
        return note(
            f"no per-epoch history recorded (no {HISTORY_FILE}, and no {TUNE_DIR}/ folder with "
            "the trials' result.json beside the results)"
        )
    history = exp.history.sort_values(["trial", "epoch"])
    reasons = exp.stop_reasons()
    best = exp.best_trial()
    parts = [note(f"per-epoch reports from {exp.history_source}")]
    for objective in exp.objectives:
        column = _history_column(history, objective.metric)
        if column is None:
            parts.append(note(f"the history has no column {objective.metric}"))
            continue
        fig = go.Figure()
        stops: dict[str, tuple[list, list, list]] = {
            ASHA_STOPPED: ([], [], []),
            BUDGET_STOPPED: ([], [], []),
        }
        for number, curve in history.groupby("trial", sort=True):
            curve = curve.dropna(subset=[column])
            if curve.empty:
                continue
            reason = reasons.get(number, "unknown")
            fig.add_trace(
                go.Scatter(
                    x=curve["epoch"].tolist(),
                    y=curve[column].tolist(),
                    mode="lines+markers",
                    name=f"trial {number}" + (" (best)" if number == best else ""),
                    line={"width": 4 if number == best else 1.5, "color": trial_colour(number)},
                    marker={"size": 5},
                    hovertemplate=f"trial {number}, epoch %{{x}}: %{{y:.4g}}<extra>"
                    f"{html.escape(reason)}</extra>",
                )
            )
            if reason in stops:
                xs, ys, texts = stops[reason]
                xs.append(curve["epoch"].iloc[-1])
                ys.append(curve[column].iloc[-1])
                texts.append(f"trial {number}")
        for reason, symbol, colour in (
            (ASHA_STOPPED, "x", "#d62728"),
            (BUDGET_STOPPED, "square", "#5f6368"),
        ):
            xs, ys, texts = stops[reason]
            if xs:
                fig.add_trace(
                    go.Scatter(
                        x=xs,
                        y=ys,
                        text=texts,
                        mode="markers",
                        name=reason,
                        marker={
                            "symbol": symbol,
                            "size": 14,
                            "color": colour,
                            "line": {"width": 1},
                        },
                        hovertemplate=f"%{{text}} {reason} after epoch %{{x}}<extra></extra>",
                    )
                )
        fig.update_layout(title=f"{column} per epoch", xaxis_title="epoch", yaxis_title=column)
        fig.update_xaxes(dtick=1 if history["epoch"].max() <= 30 else None)
        parts.append(figure(fig, height=460))
    return "".join(parts)
