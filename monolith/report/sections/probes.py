"""The report's probe lifts: the best trial's probe scores against both baselines."""

from __future__ import annotations

import math

import pandas as pd

from monolith.report.load import ExperimentResults
from monolith.report.markup import figure, fmt, frame_table, note
from monolith.results_files import TRIALS_FILE


def probe_targets(columns: list[str] | pd.Index) -> list[str]:
    """Probe targets with both baselines: ``best/val_probe_<t>`` with ``_random`` and ``_raw``
    siblings (so lift columns and ``mean_lift`` are never mistaken for targets)."""
    names = set(columns)
    found = []
    for column in sorted(names):
        if not column.startswith("best/val_probe_"):
            continue
        target = column.removeprefix("best/val_probe_")
        if {f"{column}_random", f"{column}_raw"} <= names:
            found.append(target)
    return found


def probes_section(exp: ExperimentResults) -> str:
    import plotly.graph_objects as go

    targets = probe_targets(exp.trials.columns)
    if not targets:
        return note(f"no probe metrics with both baselines in {TRIALS_FILE}")
    best = exp.best_trial()
    if best is None or best not in set(exp.trials["trial"]):
        return note("no best trial to show")
    row = exp.trials.set_index("trial").loc[best]

    def value(target: str, suffix: str = "") -> float:
        column = f"best/val_probe_{target}{suffix}"
        return float(row[column]) if column in row else math.nan

    table = pd.DataFrame(
        {
            "target": targets,
            "trained": [value(t) for t in targets],
            "random encoder": [value(t, "_random") for t in targets],
            "raw features": [value(t, "_raw") for t in targets],
            "lift vs random": [value(t, "_lift_vs_random") for t in targets],
            "lift vs raw": [value(t, "_lift_vs_raw") for t in targets],
            "lift": [value(t, "_lift") for t in targets],
        }
    )
    fig = go.Figure()
    for column, colour in (
        ("trained", "#1f77b4"),
        ("random encoder", "#9aa0a6"),
        ("raw features", "#ff7f0e"),
    ):
        fig.add_trace(
            go.Bar(
                x=targets,
                y=table[column].tolist(),
                name=column,
                marker_color=colour,
                text=[fmt(v) for v in table[column]],
                textposition="outside",
            )
        )
    for target, lift, top in zip(
        targets,
        table["lift"],
        table[["trained", "random encoder", "raw features"]].max(axis=1),
        strict=True,
    ):
        if math.isfinite(lift):
            fig.add_annotation(
                x=target,
                y=top,
                text=f"lift {lift:+.3f}",
                showarrow=False,
                yshift=32,
                font={"color": "#2ca02c" if lift > 0 else "#d62728", "size": 13},
            )
    fig.update_layout(
        barmode="group",
        yaxis_title="probe score (validation)",
        title=f"trial {best}",
        margin={"t": 80},
    )
    fig.update_yaxes(rangemode="tozero")
    mean = row.get("best/val_probe_mean_lift")
    parts = [figure(fig, height=440), frame_table(table)]
    if mean is not None:
        parts.append(note(f"mean lift over targets (val_probe_mean_lift): {fmt(float(mean))}"))
    return "".join(parts)
