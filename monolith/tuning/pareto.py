"""Several objectives to one trial: the Pareto front over the finished trials and the
trial ``PARETO_RULE`` chooses from it (with one objective: the best value).

The front is ours, not Optuna's: Optuna's public front is ``Study.best_trials``, which needs
a study of completed trials built for each call; the point-level function it uses
(``optuna.study._multi_objective``) is private."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from monolith.config import Objective
from monolith.errors import ConfigError
from monolith.tuning.records import TrialRecord, best_of, objective_value

# How several objectives become the one best_config.json (summary.json's ``pareto_rule``).
PARETO_RULE = (
    "among the Pareto front (trials no other trial beats on every objective), each objective "
    "is min-max normalised over the front so that 1 is the front's best and 0 its worst "
    "(1 for all when the front agrees); the chosen trial is the one closest (Euclidean) to "
    "the ideal point (1, ..., 1); ties go to the better primary (first) objective, then to "
    "the lower trial number"
)


def _primary_key(objective: Objective, value: float) -> float:
    """Smaller is better, for sorting."""
    return value if objective.mode == "min" else -value


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """``a`` is no worse than ``b`` on every objective and better on at least one."""
    signed = [(x, y) if m == "min" else (-x, -y) for x, y, m in zip(a, b, modes, strict=True)]
    return all(x <= y for x, y in signed) and any(x < y for x, y in signed)


def pareto_front(points: dict[int, Sequence[float]], modes: Sequence[str]) -> list[int]:
    """The keys of ``points`` (trial number -> objective values) no other point dominates;
    equal points are all kept."""
    return sorted(
        k
        for k, p in points.items()
        if not any(dominates(q, p, modes) for j, q in points.items() if j != k)
    )


def choose_from_front(
    points: dict[int, Sequence[float]], front: list[int], objectives: list[Objective]
) -> int:
    """The trial of ``front`` that ``PARETO_RULE`` chooses."""
    if not front:
        raise ValueError("an empty Pareto front")
    scores: dict[int, float] = {k: 0.0 for k in front}
    for j, objective in enumerate(objectives):
        column = [points[k][j] for k in front]
        best = best_of(column, objective.mode)
        worst = max(column) if objective.mode == "min" else min(column)
        for k in front:
            score = 1.0 if best == worst else (points[k][j] - worst) / (best - worst)
            scores[k] += (1.0 - score) ** 2
    return min(
        front,
        key=lambda k: (
            round(math.sqrt(scores[k]), 12),  # equal up to float noise = a tie
            _primary_key(objectives[0], points[k][0]),
            k,
        ),
    )


@dataclass
class Choice:
    """The Pareto front over the finished trials and the one trial chosen from it."""

    values: dict[int, list[float]]  # trial number -> its value of every objective
    front: list[int]
    chosen: TrialRecord


def choose(records: list[TrialRecord], objectives: list[Objective]) -> Choice:
    """The front over trials with a finite value of every objective, and the chosen trial
    (with one objective: the best value, ties to the lowest trial number)."""
    by_number = {r.number: r for r in records if r.status != "ERROR"}
    values = {n: [objective_value(r, o) for o in objectives] for n, r in by_number.items()}
    values = {n: v for n, v in values.items() if all(math.isfinite(x) for x in v)}
    if not values:
        names = ", ".join(o.metric for o in objectives)
        raise ConfigError(f"no trial reported a finite {names}: nothing to choose from")
    front = pareto_front(values, [o.mode for o in objectives])
    return Choice(values, front, by_number[choose_from_front(values, front, objectives)])


def best_trial(records: list[TrialRecord], objectives: list[Objective]) -> TrialRecord:
    return choose(records, objectives).chosen
