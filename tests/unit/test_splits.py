"""Purged chronological splits, train-only scalers, and window validity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monolith.data.splits import (
    affine_parameters,
    apply_scalers_json,
    assign_splits,
    fit_scalers,
    plan_split,
    scalers_to_json,
    sklearn_scalers,
)
from monolith.data.windows import valid_window_ends
from monolith.errors import DataError


def _frame(rows_per_symbol=(200, 150), seed=0):
    rng = np.random.default_rng(seed)
    parts = []
    for i, n in enumerate(rows_per_symbol):
        parts.append(
            pd.DataFrame(
                {
                    "timestamp": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
                    "symbol": f"S{i}",
                    "a": rng.normal(10 * (i + 1), 1 + i, n),
                    "b": rng.lognormal(i, 1, n),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def test_split_layout_is_chronological_with_purge_gaps():
    frame = _frame()
    labels, bounds = assign_splits(
        frame, val_fraction=0.15, test_fraction=0.15, purge_bars=20, min_split_rows=10
    )
    for sym, idx in frame.groupby("symbol").indices.items():
        seq = labels[idx]
        # runs in order: train, purge, val, purge, test
        runs = [seq[0]] + [b for a, b in zip(seq[:-1], seq[1:], strict=True) if a != b]
        assert runs == ["train", "purge", "val", "purge", "test"]
        assert (seq == "purge").sum() == 40
        ts = frame["timestamp"].iloc[idx]
        train_end = ts[seq == "train"].max()
        val_start = ts[seq == "val"].min()
        assert val_start - train_end == pd.Timedelta(hours=21)  # 20 purged bars between
        assert bounds[sym]["val"]["rows"] == int(len(idx) * 0.15)


def test_too_short_symbol_is_a_clear_error():
    with pytest.raises(DataError, match=r"symbol 'X': 60 usable rows .* too few"):
        plan_split(
            60, val_fraction=0.15, test_fraction=0.15, purge_bars=20, min_split_rows=10, symbol="X"
        )


@pytest.mark.parametrize("kind", ["standard", "robust", "minmax"])
def test_scalers_fit_on_train_rows_only_and_json_matches_sklearn(kind):
    frame = _frame()
    labels, _ = assign_splits(
        frame, val_fraction=0.2, test_fraction=0.2, purge_bars=5, min_split_rows=5
    )
    # poison val/test rows: a leak would move the fitted statistics
    frame.loc[labels != "train", ["a", "b"]] = 1e9
    fits = fit_scalers(frame, labels, ["a", "b"], kind)
    scalers = sklearn_scalers(fits)
    for sym, idx in frame.groupby("symbol").indices.items():
        train_rows = frame.loc[idx[labels[idx] == "train"], ["a", "b"]].to_numpy()
        scaler = scalers[sym]
        if kind == "standard":
            np.testing.assert_allclose(scaler.mean_, train_rows.mean(axis=0))
            np.testing.assert_allclose(scaler.scale_, train_rows.std(axis=0))
        elif kind == "robust":
            np.testing.assert_allclose(scaler.center_, np.median(train_rows, axis=0))
        else:
            np.testing.assert_allclose(scaler.data_max_, train_rows.max(axis=0))
        offset, scale = affine_parameters(scaler)
        np.testing.assert_allclose(
            (train_rows - offset) / scale, scaler.transform(train_rows), rtol=1e-9, atol=1e-9
        )
    from_sklearn = scalers_to_json(scalers, ["a", "b"], kind)["symbols"]
    for sym, entry in scalers_to_json(fits, ["a", "b"], kind)["symbols"].items():
        assert entry["offset"] == from_sklearn[sym]["offset"]
        assert entry["scale"] == from_sklearn[sym]["scale"]
        assert entry["n_samples_seen"] == (labels[frame["symbol"] == sym] == "train").sum()
    params = scalers_to_json(fits, ["a", "b"], kind)
    values = frame[["a", "b"]].to_numpy()
    scaled = apply_scalers_json(values, frame["symbol"].to_numpy(), params)
    for sym, idx in frame.groupby("symbol").indices.items():
        np.testing.assert_allclose(
            scaled[idx], scalers[sym].transform(values[idx]), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("kind", ["standard", "robust", "minmax"])
def test_numpy_fit_is_scikit_learns_fit(kind):
    """Workers fit without importing scikit-learn: the same statistics, the same objects."""
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    from monolith.data.scalers import fit_scaler

    rng = np.random.default_rng(11)
    values = np.column_stack(
        [
            rng.normal(1e4, 30.0, 5000),  # large offset, small spread
            rng.lognormal(0.0, 2.0, 5000),  # heavy tail
            np.full(5000, 3.25),  # constant: scale 1, as scikit-learn does
            1.0 + 1e-12 * rng.standard_normal(5000),  # near constant
        ]
    )
    reference = {"standard": StandardScaler, "robust": RobustScaler, "minmax": MinMaxScaler}
    expected = reference[kind]().fit(values)
    ours = fit_scaler(values, kind).to_sklearn()
    for name, value in vars(expected).items():
        if name.endswith("_") and not name.startswith("_"):
            np.testing.assert_allclose(getattr(ours, name), value, rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(ours.transform(values), expected.transform(values), rtol=1e-12)
    # the affine form (x - offset) / scale; the near-constant column is left out, where
    # scikit-learn's own x * scale_ + min_ cancels catastrophically
    np.testing.assert_allclose(
        fit_scaler(values, kind).transform(values)[:, :3],
        expected.transform(values)[:, :3],
        rtol=1e-9,
        atol=1e-12,
    )


def test_scaler_parameters_for_an_unknown_symbol_are_an_error():
    frame = _frame()
    labels, _ = assign_splits(
        frame, val_fraction=0.2, test_fraction=0.2, purge_bars=5, min_split_rows=5
    )
    params = scalers_to_json(fit_scalers(frame, labels, ["a"], "standard"), ["a"], "standard")
    with pytest.raises(DataError, match="no scaler parameters for symbol"):
        apply_scalers_json(np.ones((2, 1)), np.array(["S0", "ZZZ"]), params)


def test_windows_never_cross_symbol_split_segment_or_missing_target():
    rng = np.random.default_rng(3)
    n = 400
    instrument = np.repeat([0, 1], n // 2)
    segment = np.zeros(n, dtype=int)
    segment[120:200] = 1  # a gap inside instrument 0
    split = np.zeros(n, dtype=np.int8)
    split[150:160] = 3  # purge
    split[160:200] = 1
    split[300:] = 2
    has_target = rng.random(n) > 0.05
    L = 12
    ends = valid_window_ends(instrument, segment, split, has_target, L)
    assert len(ends) > 0
    for e in ends:
        rows = np.arange(e - L + 1, e + 1)
        assert rows[0] >= 0
        assert len(set(instrument[rows])) == 1
        assert len(set(segment[rows])) == 1
        assert len(set(split[rows])) == 1 and split[e] != 3
        assert has_target[e]
    # and every admissible end is found (nothing dropped beyond the rules)
    brute = [
        e
        for e in range(L - 1, n)
        if len(set(instrument[e - L + 1 : e + 1])) == 1
        and len(set(segment[e - L + 1 : e + 1])) == 1
        and len(set(split[e - L + 1 : e + 1])) == 1
        and split[e] != 3
        and has_target[e]
    ]
    assert list(ends) == brute


def test_sequence_length_one_is_row_mode():
    n = 50
    ends = valid_window_ends(
        np.zeros(n, int), np.zeros(n, int), np.zeros(n, np.int8), np.ones(n, bool), 1
    )
    assert list(ends) == list(range(n))
