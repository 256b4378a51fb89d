"""The benchmark's arithmetic (bench/figures.py), on hand-made report timelines."""

from __future__ import annotations

import math

import pytest

from bench.figures import (
    best_value,
    best_within,
    better_or_equal,
    first_reaching,
    floor_overheads,
    mirrored,
    per_layout,
    spread,
    steady_epoch,
    trial_overheads,
)


def _r(time, trial, epoch, value, epoch_s=2.0, elapsed=None):
    return {
        "time": time,
        "trial": trial,
        "epoch": epoch,
        "value": value,
        "epoch_seconds": epoch_s,
        "elapsed_seconds": elapsed if elapsed is not None else epoch * epoch_s,
    }


REPORTS = [
    _r(10, 1, 1, 5.0),
    _r(12, 1, 2, 4.0),
    _r(30, 2, 1, math.nan),
    _r(35, 2, 2, 3.5),
    _r(50, 3, 1, 3.9),
]


def test_best_and_best_within_a_deadline():
    assert best_value(REPORTS, "min") == 3.5
    assert best_value(REPORTS, "max") == 5.0
    assert best_within(REPORTS, 12, "min") == 4.0
    assert best_within(REPORTS, 34.9, "min") == 4.0
    assert math.isnan(best_within(REPORTS, 5, "min"))


def test_first_reaching_a_target():
    assert first_reaching(REPORTS, 4.0, "min") == 12
    assert first_reaching(REPORTS, 3.6, "min") == 35
    assert first_reaching(REPORTS, 1.0, "min") is None
    assert first_reaching(REPORTS, 5.0, "max") == 10
    with pytest.raises(ValueError):
        first_reaching(REPORTS, 1.0, "lowest")


def test_steady_epoch_leaves_the_first_epoch_out():
    reports = [_r(20, 1, 1, 1.0, epoch_s=15.0), _r(23, 1, 2, 1.0, 3.0), _r(27, 1, 3, 1.0, 4.0)]
    assert steady_epoch(reports) == 3.5
    assert steady_epoch(reports[:1]) is None


def test_trial_overheads_count_from_the_previous_trials_end():
    trials = [
        # trial 1 starts at 0, its loop at 8 (first report at 20 after 12 s in the loop)
        {"trial": 1, "start": 0.0, "reports": [_r(20, 1, 1, 1.0, 12.0, 12.0), _r(23, 1, 2, 1.0, 3.0, 15.0)]},
        # trial 2 was started early (pipelined) at 15, computes after trial 1's end at 23
        {"trial": 2, "start": 15.0, "reports": [_r(40, 2, 1, 1.0, 10.0, 10.0), _r(44, 2, 2, 1.0, 4.0, 14.0)]},
        # one-epoch trial: no steady epoch, no overhead figure
        {"trial": 3, "start": 44.0, "reports": [_r(60, 3, 1, 1.0, 9.0, 9.0)]},
    ]  # fmt: skip
    rows = {r["trial"]: r for r in trial_overheads(trials)}
    assert rows[1]["wall_s"] == 23 and rows[1]["overhead_s"] == 23 - 2 * 3.0
    assert rows[1]["ray_start_s"] == 8 and rows[1]["worker_start_s"] == 17 - 8
    assert rows[2]["wall_s"] == 44 - 23 and rows[2]["overhead_s"] == 21 - 2 * 4.0
    assert rows[2]["ray_start_s"] == 30 - 23 and not rows[2]["overlapped"]
    assert "overhead_s" not in rows[3] and rows[3]["wall_s"] == 16


def test_overlapping_trials_are_flagged():
    trials = [
        {"trial": 1, "start": 0.0, "reports": [_r(20, 1, 1, 1.0, 10.0, 10.0), _r(30, 1, 2, 1.0, 10.0, 20.0)]},
        {"trial": 2, "start": 5.0, "reports": [_r(35, 2, 1, 1.0, 5.0, 15.0), _r(40, 2, 2, 1.0, 5.0, 20.0)]},
    ]  # fmt: skip
    rows = {r["trial"]: r for r in trial_overheads(trials)}
    assert rows[2]["overlapped"]  # its loop began at 20, before trial 1 ended at 30


def test_floor_overheads_and_spread():
    trials = [
        {"trial": 1, "start": 0.0, "reports": [_r(9, 1, 1, 0.0)]},
        {"trial": 2, "start": 3.0, "reports": [_r(17, 2, 1, 0.0)]},
        {"trial": 3, "start": 17.0, "reports": [_r(28, 3, 1, 0.0)]},
    ]
    assert floor_overheads(trials) == [9.0, 8.0, 11.0]
    assert spread([3.0, None, 1.0, math.nan, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "n": 3,
    }
    assert spread([None])["median"] is None


def test_better_or_equal():
    assert better_or_equal(3.0, 3.0, "min") and better_or_equal(2.9, 3.0, "min")
    assert not better_or_equal(3.1, 3.0, "min")
    assert better_or_equal(0.2, 0.1, "max")
    assert not better_or_equal(None, 3.0, "min") and not better_or_equal(math.nan, 3.0, "min")


def test_concurrent_trials_are_measured_in_their_own_lane():
    # Two lanes: trials 1 and 2 start together; 3 takes the lane trial 2 freed at 30, 4 the
    # one trial 1 freed at 40. The other lane's epochs never shorten a trial's window.
    trials = [
        {"trial": 1, "start": 0.0, "reports": [_r(30, 1, 1, 1.0, 14.0, 20.0), _r(40, 1, 2, 1.0, 10.0, 30.0)]},
        {"trial": 2, "start": 1.0, "reports": [_r(25, 2, 1, 1.0, 9.0, 15.0), _r(30, 2, 2, 1.0, 5.0, 20.0)]},
        {"trial": 3, "start": 30.0, "reports": [_r(55, 3, 1, 1.0, 8.0, 12.0), _r(60, 3, 2, 1.0, 5.0, 17.0)]},
        {"trial": 4, "start": 41.0, "reports": [_r(62, 4, 1, 0.0)]},
    ]  # fmt: skip
    rows = {r["trial"]: r for r in trial_overheads(trials, lanes=2)}
    assert rows[1]["wall_s"] == 40 and rows[1]["overhead_s"] == 40 - 2 * 10.0
    assert rows[2]["wall_s"] == 29 and rows[2]["overhead_s"] == 29 - 2 * 5.0
    assert rows[3]["wall_s"] == 30 and rows[3]["ray_start_s"] == 55 - 12 - 30
    assert not any(r["overlapped"] for r in rows.values())
    # Counted as one lane, trial 2 would look like it started its workers while trial 1 ran.
    assert {r["trial"]: r["overlapped"] for r in trial_overheads(trials)}[2]
    assert floor_overheads(trials, lanes=2) == [40.0, 29.0, 30.0, 21.0]


def test_layouts_are_measured_forward_then_backward_and_averaged():
    layouts = [(1, 1), (2, 1), (1, 2)]
    order = mirrored(layouts)
    assert order == [(1, 1), (2, 1), (1, 2), (1, 2), (2, 1), (1, 1)]
    # A machine slowing by 100 windows/s per launch: every layout's mean moves alike.
    true = {(1, 1): 1700.0, (2, 1): 1300.0, (1, 2): 1300.0}
    rows = [
        {"workers": w, "cpus_per_worker": c, "windows_per_s": true[(w, c)] - 100.0 * i}
        for i, (w, c) in enumerate(order)
    ]
    got = per_layout(rows)
    assert set(got) == {(1, 1.0), (2, 1.0), (1, 2.0)}
    assert got[(2, 1.0)]["launches"] == [1200.0, 900.0]
    assert got[(2, 1.0)]["windows_per_s"] / got[(1, 2.0)]["windows_per_s"] == pytest.approx(1.0)
    assert got[(1, 1.0)]["windows_per_s"] == pytest.approx(1700.0 - 250.0)
    # Measured once each in that order, the drift alone would make 2x1 look 8% faster.
    assert rows[1]["windows_per_s"] / rows[2]["windows_per_s"] == pytest.approx(1200 / 1100)
