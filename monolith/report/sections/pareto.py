"""The report's Pareto front of a multi-objective experiment, and the trial chosen on it."""

from __future__ import annotations

import pandas as pd

from monolith.report.load import ExperimentResults
from monolith.report.markup import figure, note, table
from monolith.results_files import PARETO_FILE
from monolith.tuning import pareto_front


def pareto_section(exp: ExperimentResults) -> str:
    import plotly.graph_objects as go

    if not exp.multi_objective:
        objective = exp.objectives[0]
        return note(
            f"single-objective experiment ({objective.label}): there is no Pareto front; the "
            "best trial is the one with the best value"
        )
    x_obj, y_obj = exp.objectives[:2]
    metrics = [o.metric for o in exp.objectives]
    frame = pd.DataFrame({m: exp.values[m] for m in metrics})
    if exp.pareto is not None:
        # pareto.csv is the tune job's own front: trust it over a recomputation.
        on_front = set(exp.pareto["trial"].astype(int))
        if set(metrics) <= set(exp.pareto.columns):
            frame = frame.combine_first(exp.pareto.set_index("trial")[metrics])
        frame = frame.dropna()
        source = PARETO_FILE
    else:
        frame = frame.dropna()
        points = {int(k): list(row) for k, row in zip(frame.index, frame.to_numpy(), strict=True)}
        on_front = set(pareto_front(points, [o.mode for o in exp.objectives]))
        source = "recomputed from the trials' values (no pareto.csv)"
    chosen = exp.best_trial()
    front = frame[frame.index.isin(on_front)].sort_values(x_obj.metric)
    rest = frame[~frame.index.isin(on_front)]
    fig = go.Figure()
    for subset, name, marker in (
        (rest, "dominated", {"color": "#9aa0a6", "size": 9}),
        (front, "Pareto front", {"color": "#1f77b4", "size": 12}),
    ):
        fig.add_trace(
            go.Scatter(
                x=subset[x_obj.metric].tolist(),
                y=subset[y_obj.metric].tolist(),
                text=[f"trial {n}" for n in subset.index],
                mode="lines+markers" if name == "Pareto front" else "markers",
                line={"shape": "hv", "dash": "dot"},
                name=name,
                marker=marker,
                hovertemplate="%{text}: (%{x:.4g}, %{y:.4g})<extra></extra>",
            )
        )
    if chosen is not None and chosen in frame.index:
        fig.add_trace(
            go.Scatter(
                x=[frame.loc[chosen, x_obj.metric]],
                y=[frame.loc[chosen, y_obj.metric]],
                mode="markers",
                name=f"chosen: trial {chosen}",
                # Open, so the front's own marker stays visible inside it.
                marker={
                    "symbol": "star-open",
                    "size": 26,
                    "color": "#d62728",
                    "line": {"width": 2},
                },
            )
        )
    fig.update_layout(xaxis_title=x_obj.label, yaxis_title=y_obj.label)
    rule = exp.summary.get("pareto_rule", "not recorded")
    parts = [
        table([("rule for the chosen trial", rule), ("front", source)]),
        figure(fig, height=480),
    ]
    if len(exp.objectives) > 2:
        parts.append(note(f"showing the first two of {len(exp.objectives)} objectives"))
    return "".join(parts)
