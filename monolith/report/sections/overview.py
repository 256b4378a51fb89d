"""The report's tables: the summary, the lineage and the trials."""

from __future__ import annotations

import html
import json
from typing import Any

from monolith.report.load import ExperimentResults
from monolith.report.markup import frame_table, note, table
from monolith.results_files import LINEAGE_FILE, SUMMARY_FILE


def summary_section(exp: ExperimentResults) -> str:
    best = exp.best_trial()
    trials = exp.trials.set_index("trial")
    rows: list[tuple[str, Any]] = [("experiment", exp.name)]
    for objective in exp.objectives:
        rows.append(("objective", objective.label))
    if exp.multi_objective:
        rows.append(("Pareto rule", exp.summary.get("pareto_rule", "not recorded")))
    if best is not None and best in trials.index:
        rows.append(("best trial", f"{best} (id {trials.loc[best, 'trial_id']})"))
        for objective in exp.objectives:
            value = exp.values[objective.metric].get(best)
            rows.append((f"{objective.metric} of the best trial", value))
    else:
        rows.append(("best trial", "none (no trial reported a finite objective)"))
    planned = exp.summary.get("trials_planned")
    count = exp.summary.get("trials", len(exp.trials))
    rows.append(("trials", f"{count} (of {planned} planned)" if planned else count))
    if exp.multi_objective and exp.summary.get("pareto_front"):
        rows.append(("Pareto front", ", ".join(f"trial {n}" for n in exp.summary["pareto_front"])))
    reasons = exp.stop_reasons().value_counts()
    rows.append(("stop reasons", ", ".join(f"{r}: {n}" for r, n in reasons.items())))
    rows.append(("how it ended", exp.summary.get("ended_by", "not recorded")))
    if "wall_seconds" in exp.trials:
        rows.append(("trial time (sum)", f"{exp.trials['wall_seconds'].sum():.0f} s"))
    if not exp.summary:
        rows.append(("note", f"no {SUMMARY_FILE}: objective and best trial inferred"))
    config = ""
    if best is not None and best in trials.index:
        params = {c.removeprefix("config/"): trials.loc[best, c] for c in exp.param_columns}
        config = "<h3>Best trial's hyperparameters</h3>" + table(sorted(params.items()))
    return table(rows) + config


def lineage_section(exp: ExperimentResults) -> str:
    if not exp.lineage:
        return note(
            f"not recorded: this experiment has no {LINEAGE_FILE} (run before lineage was kept)"
        )
    lineage = exp.lineage
    rows = [
        ("git commit", lineage.get("git_commit") or "not recorded"),
        ("data fingerprint", lineage.get("data_fingerprint") or "not recorded"),
        ("prepared dataset", lineage.get("prepared") or "not recorded"),
        ("started", lineage.get("started_at") or "not recorded"),
        ("finished", lineage.get("finished_at") or "not recorded"),
    ]
    versions = lineage.get("versions") or {}
    parts = [table(rows), "<h3>Library versions</h3>"]
    parts.append(table(sorted(versions.items())) if versions else note("not recorded"))
    for key, title in (("config", "Config"), ("search_space", "Search space")):
        body = html.escape(
            json.dumps(lineage.get(key) or {}, indent=2, sort_keys=True, default=str)
        )
        parts.append(f"<details><summary>{title}</summary><pre>{body}</pre></details>")
    return "".join(parts)


def trials_section(exp: ExperimentResults) -> str:
    trials = exp.trials.copy()
    front = ["trial", "trial_id"]
    for objective in exp.objectives:
        if exp.multi_objective or "objective" not in trials:
            trials[objective.metric] = trials["trial"].map(exp.values[objective.metric])
            front.append(objective.metric)
    if not exp.multi_objective and "objective" in trials:
        front.append("objective")
    front += [c for c in ("epochs_run", "status", "stop_reason", "wall_seconds") if c in trials]
    params = exp.param_columns
    view = trials[front + params].rename(columns={c: c.removeprefix("config/") for c in params})
    return frame_table(view, highlight=exp.best_trial())
