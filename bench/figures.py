"""The arithmetic of ``bench/tune_efficiency.py``: from per-report times to the figures it
prints. Pure functions on plain rows (tested in ``tests/unit/test_bench_figures.py``).

A report row: ``{"time": seconds since the side's launch, "trial": n, "epoch": e, "value":
objective, "epoch_seconds": s, "elapsed_seconds": s since the worker loop began}``.
"""

from __future__ import annotations

import math
import statistics
from typing import Any


def sign_of(mode: str) -> float:
    """+1 when lower is better, -1 when higher is."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode {mode!r}: 'min' or 'max'")
    return 1.0 if mode == "min" else -1.0


def best_value(reports: list[dict[str, Any]], mode: str) -> float:
    """The best finite objective among ``reports`` (NaN when there is none)."""
    sign = sign_of(mode)
    values = [r["value"] for r in reports if math.isfinite(r["value"])]
    return min(values, key=lambda v: sign * v) if values else math.nan


def best_within(reports: list[dict[str, Any]], seconds: float, mode: str) -> float:
    """The best objective reported no later than ``seconds`` after launch."""
    return best_value([r for r in reports if r["time"] <= seconds], mode)


def first_reaching(reports: list[dict[str, Any]], target: float, mode: str) -> float | None:
    """Time of the first report at least as good as ``target`` (None: never)."""
    sign = sign_of(mode)
    for report in sorted(reports, key=lambda r: r["time"]):
        if math.isfinite(report["value"]) and sign * report["value"] <= sign * target:
            return report["time"]
    return None


def steady_epoch(reports: list[dict[str, Any]]) -> float | None:
    """Median seconds of a trial's epochs 2..n: steps + evaluation + report, nothing else."""
    later = [r["epoch_seconds"] for r in reports if r["epoch"] >= 2]
    return statistics.median(later) if later else None


def _windows(
    trials: list[dict[str, Any]], lanes: int
) -> list[tuple[dict[str, Any], float, float | None]]:
    """Each trial with the start of its window and the end of its lane's previous trial.

    ``lanes`` trials run at once (Tune's ``max_concurrent_trials``). Trials are taken in the
    order they started; each takes the lane that came free first, and its window runs from
    that lane's previous trial's last report (or its own start, if later) to its own last
    report. With one lane this is the previous trial's end, so start-up pipelined behind it
    is not counted; with two, the other lane's trial computing meanwhile does not shorten it.
    """
    ends: list[float | None] = [None] * max(1, lanes)
    out = []
    for trial in sorted(trials, key=lambda t: (t["start"], t["trial"])):
        lane = min(range(len(ends)), key=lambda i: -math.inf if ends[i] is None else ends[i])
        previous = ends[lane]
        start = trial["start"] if previous is None else max(previous, trial["start"])
        out.append((trial, start, previous))
        ends[lane] = trial["reports"][-1]["time"]
    return out


def trial_overheads(trials: list[dict[str, Any]], lanes: int = 1) -> list[dict[str, Any]]:
    """Per trial: the wall it adds to its lane minus its epoch compute, and where it goes.

    A trial's window (``_windows``) runs from its lane's previous trial's last report (the
    first: its own start) to its own last report. Its overhead is that window minus epochs x
    its steady epoch (so epoch 1's excess over a steady epoch, tracing, counts); known only
    for trials of >= 2 epochs. ``ray_start_s``: window start -> its workers enter the worker
    loop (first report time minus the worker's ``elapsed_seconds``); the rest is
    ``worker_start_s``. A trial with ``overlapped`` started its workers before its lane's
    previous trial's last report (two computing in one lane), where the split does not hold.

    Each trial: ``{"trial", "start", "reports"}``.
    """
    out = []
    for trial, window_start, previous_end in _windows(trials, lanes):
        reports = trial["reports"]
        first, last = reports[0], reports[-1]
        loop_start = first["time"] - first["elapsed_seconds"]
        steady = steady_epoch(reports)
        row: dict[str, Any] = {
            "trial": trial["trial"],
            "epochs": len(reports),
            "wall_s": last["time"] - window_start,
            "ray_start_s": loop_start - window_start,
            "steady_epoch_s": steady,
            "overlapped": previous_end is not None and loop_start < previous_end,
        }
        if steady is not None:
            row["overhead_s"] = row["wall_s"] - len(reports) * steady
            row["worker_start_s"] = row["overhead_s"] - row["ray_start_s"]
        out.append(row)
    return sorted(out, key=lambda r: r["trial"])


def floor_overheads(trials: list[dict[str, Any]], lanes: int = 1) -> list[float]:
    """Per trivial trial (one report, no model): the wall it adds to its lane, measured like
    ``trial_overheads`` (its lane's previous trial's report -> its own; the first from its
    start), in the order the trials started."""
    return [t["reports"][-1]["time"] - start for t, start, _ in _windows(trials, lanes)]


def spread(values: list[float | None]) -> dict[str, float | None]:
    """Median and range of the finite values (None when there is none)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": statistics.median(finite),
        "min": min(finite),
        "max": max(finite),
        "n": len(finite),
    }


def median_of(rows: list[dict[str, Any]], key: str) -> float | None:
    return spread([r.get(key) for r in rows])["median"]


def better_or_equal(mine: float | None, theirs: float | None, mode: str) -> bool:
    """Whether ``mine`` is at least as good as ``theirs`` (False when either is missing)."""
    if mine is None or theirs is None or not (math.isfinite(mine) and math.isfinite(theirs)):
        return False
    return sign_of(mode) * mine <= sign_of(mode) * theirs


def mirrored(layouts: list[Any]) -> list[Any]:
    """The order to measure ``layouts`` in: each once forward, then once backward (A B C C B
    A), so a machine whose speed drifts steadily during the measurement moves every layout's
    mean alike instead of favouring the ones measured first."""
    return list(layouts) + list(reversed(layouts))


def per_layout(rows: list[dict[str, Any]]) -> dict[tuple[int, float], dict[str, Any]]:
    """Windows/s rows (``workers``, ``cpus_per_worker``, ``windows_per_s``), one per launch,
    gathered by layout: each layout's mean over its launches and the launches' own figures,
    in the order they ran."""
    out: dict[tuple[int, float], dict[str, Any]] = {}
    for row in rows:
        key = (int(row["workers"]), float(row["cpus_per_worker"]))
        out.setdefault(key, {"launches": []})["launches"].append(float(row["windows_per_s"]))
    for entry in out.values():
        entry["windows_per_s"] = statistics.fmean(entry["launches"])
    return out
