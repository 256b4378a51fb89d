"""One trial as the tune job saw it (its config, reports and end), what produced the
experiment (lineage), and the values read off a trial: its best objective, its stop reason."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from monolith.config import Objective


def utc_now() -> str:
    """Now, as ISO 8601 UTC (lineage.json's timestamps)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class TrialRecord:
    """One trial as the tune job saw it: its config, every report, its end."""

    trial_id: str
    number: int  # 1-based, in the order trials were created (trial 1 = the warm start)
    params: dict[str, Any]
    history: list[dict[str, Any]]
    status: str  # TERMINATED / ERROR / RUNNING / PENDING
    error: str | None = None
    wall_seconds: float | None = None
    # Still running (or waiting to start) when a budget ended the experiment.
    stopped_by_budget: bool = False


@dataclass
class Lineage:
    """What produced an experiment's results (lineage.json), as plain values."""

    experiment: str
    config: dict[str, Any]  # the base config, as a dict
    search_space: dict[str, Any] | str  # the search space YAML, as a mapping (or its text)
    git_commit: str | None  # the checkout's HEAD; None when not run from a git checkout
    data_fingerprint: str | None  # prepared.json's key: data config + source files
    prepared: str | None  # the prepared dataset's URI
    versions: dict[str, str | None]  # python, monolith, ray, tensorflow, keras, ...
    started_at: str  # ISO 8601 UTC
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def stop_reason(record: TrialRecord, max_epochs: int) -> str:
    if record.status == "ERROR":
        return f"error: {record.error or 'unknown'}"
    if not record.history:
        if record.status == "PENDING":
            return "not started"
        return "stopped by budget" if record.stopped_by_budget else "no report"
    last = record.history[-1]
    epochs = int(last.get("epoch", len(record.history)))
    if record.status not in ("TERMINATED",):
        return record.status.lower()
    if last.get("early_stopped"):
        return "early stopping (patience)"
    if epochs >= max_epochs:
        return "completed (max epochs)"
    if record.stopped_by_budget:
        return "stopped by budget"
    return "stopped by ASHA"


def best_of(values: list[float], mode: str) -> float:
    """The best finite value of ``values`` in ``mode`` (nan when none is finite)."""
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not finite:
        return math.nan
    return min(finite) if mode == "min" else max(finite)


def objective_value(record: TrialRecord, objective: Objective) -> float:
    """The trial's best ``objective`` over its reports (its running best and raw values)."""
    values = [
        h.get(key, math.nan)
        for h in record.history
        for key in (objective.reported, objective.metric)
    ]
    return best_of(values, objective.mode)
