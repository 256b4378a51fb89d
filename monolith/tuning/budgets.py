"""The experiment's budgets: how long it may run and how many finished trials in a row
may fail to improve, in the words summary.json records for how it ended."""

from __future__ import annotations

import math
from collections.abc import Sequence

# summary.json's ``ended_by`` when no budget cut the experiment short.
ALL_FINISHED = "all trials finished"


def trials_since_improvement(values: Sequence[float], mode: str) -> int:
    """How many of the latest finished trials did not beat the best before them.

    ``values`` are the finished trials' primary objective (their best over epochs), in the
    order they finished; a non-finite value (a failed trial) never improves. The first
    finite value is an improvement over nothing.
    """
    best, since = math.nan, 0
    for value in values:
        better = math.isfinite(value) and (
            not math.isfinite(best) or (value < best if mode == "min" else value > best)
        )
        if better:
            best, since = value, 0
        else:
            since += 1
    return since


def ended_by_time_budget(seconds: float) -> str:
    return f"time budget {seconds:g} s"


def ended_by_no_improvement(trials: int) -> str:
    return f"no improvement in {trials} trials"
