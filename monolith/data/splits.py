"""Chronological, purged train/val/test splits per symbol, and scalers fitted on train rows.

Layout of each symbol's rows (after indicator warm-up is dropped)::

    [ train ........ | purge | val .... | purge | test .... ]

The purge gap is ``sequence_length + label_horizon`` bars, so no window or label of one split
ever touches a row of the next. Scalers are fitted per symbol on that symbol's train rows only
(prices of different instruments live on different scales), and every fitted scaler is an
affine map ``(x - offset) / scale`` whose parameters are saved as plain JSON.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

from monolith.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PURGE = "purge"

_SCALERS = {"standard": StandardScaler, "robust": RobustScaler, "minmax": MinMaxScaler}


@dataclass(frozen=True)
class SplitPlan:
    """Row counts of one symbol's splits."""

    train: int
    val: int
    test: int
    purge: int

    @property
    def total(self) -> int:
        return self.train + self.val + self.test + 2 * self.purge


def plan_split(
    n_rows: int,
    *,
    val_fraction: float,
    test_fraction: float,
    purge_bars: int,
    min_split_rows: int,
    symbol: str,
) -> SplitPlan:
    """Row counts for a symbol with ``n_rows`` rows; raises when a split would be too short."""
    n_val = int(n_rows * val_fraction)
    n_test = int(n_rows * test_fraction)
    n_train = n_rows - n_val - n_test - 2 * purge_bars
    plan = SplitPlan(train=n_train, val=n_val, test=n_test, purge=purge_bars)
    short = {k: getattr(plan, k) for k in SPLITS if getattr(plan, k) < min_split_rows}
    if short:
        raise DataError(
            f"symbol {symbol!r}: {n_rows} usable rows (after indicator warm-up) are too few to "
            f"split: {short} rows, but every split needs at least {min_split_rows} "
            f"(one window plus the label horizon) and each of the two purge gaps takes "
            f"{purge_bars}; supply a longer history or lower data.sequence_length"
        )
    return plan


def assign_splits(
    frame: pd.DataFrame,
    *,
    val_fraction: float,
    test_fraction: float,
    purge_bars: int,
    min_split_rows: int,
) -> tuple[np.ndarray, dict[str, dict]]:
    """Label every row train/val/test/purge, chronologically within each symbol.

    ``frame`` must be sorted by (symbol, timestamp). Returns the label array and, per symbol,
    the boundaries (row counts, first and last timestamp of each split).
    """
    labels = np.empty(len(frame), dtype=object)
    boundaries: dict[str, dict] = {}
    symbols = frame["symbol"].to_numpy()
    timestamps = frame["timestamp"]
    starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
    ends = np.r_[starts[1:], len(frame)]
    for start, end in zip(starts, ends, strict=True):
        symbol = str(symbols[start])
        plan = plan_split(
            end - start,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            purge_bars=purge_bars,
            min_split_rows=min_split_rows,
            symbol=symbol,
        )
        pieces = [
            ("train", plan.train),
            (PURGE, plan.purge),
            ("val", plan.val),
            (PURGE, plan.purge),
            ("test", plan.test),
        ]
        info: dict[str, dict] = {"purge_bars": plan.purge}
        pos = start
        for name, count in pieces:
            labels[pos : pos + count] = name
            if name != PURGE:
                info[name] = {
                    "rows": int(count),
                    "start": timestamps.iloc[pos].isoformat(),
                    "end": timestamps.iloc[pos + count - 1].isoformat(),
                }
            pos += count
        boundaries[symbol] = info
    return labels, boundaries


def fit_scalers(
    frame: pd.DataFrame, split: np.ndarray, columns: list[str], kind: str
) -> dict[str, object]:
    """One scikit-learn scaler per symbol, fitted on that symbol's train rows only."""
    if kind not in _SCALERS:
        raise DataError(f"unknown scaler kind {kind!r}; allowed {sorted(_SCALERS)}")
    scalers: dict[str, object] = {}
    train = split == "train"
    # Gathered per symbol, column by column: one symbol's train rows at a time rather than
    # the whole feature matrix.
    source = [frame[c].to_numpy(dtype=np.float64) for c in columns]
    for symbol, idx in frame.groupby("symbol", sort=True).indices.items():
        rows = idx[train[idx]]
        values = np.empty((len(rows), len(columns)))
        for j, column in enumerate(source):
            np.take(column, rows, out=values[:, j])
        scaler = _SCALERS[kind]()
        scaler.fit(values)
        del values
        scalers[str(symbol)] = scaler
    return scalers


def affine_parameters(scaler: object) -> tuple[np.ndarray, np.ndarray]:
    """``(offset, scale)`` with ``transform(x) == (x - offset) / scale`` for our scaler kinds."""
    if isinstance(scaler, StandardScaler):
        offset = scaler.mean_
        scale = scaler.scale_
    elif isinstance(scaler, RobustScaler):
        offset = scaler.center_
        scale = scaler.scale_
    elif isinstance(scaler, MinMaxScaler):
        # MinMaxScaler: x * scale_ + min_  ==  (x - (-min_ / scale_)) / (1 / scale_)
        offset = -scaler.min_ / scaler.scale_
        scale = 1.0 / scaler.scale_
    else:  # pragma: no cover - guarded by fit_scalers
        raise DataError(f"unsupported scaler {type(scaler).__name__}")
    return np.asarray(offset, dtype=np.float64), np.asarray(scale, dtype=np.float64)


def scalers_to_json(scalers: dict[str, object], columns: list[str], kind: str) -> dict:
    """The safe, parameters-only form of ``scalers.pkl``."""
    out: dict = {
        "kind": kind,
        "per": "symbol",
        "fitted_on": "train",
        "formula": "(x - offset) / scale",
        "features": list(columns),
        "symbols": {},
    }
    for symbol, scaler in scalers.items():
        offset, scale = affine_parameters(scaler)
        out["symbols"][symbol] = {
            "offset": offset.tolist(),
            "scale": scale.tolist(),
            "n_samples_seen": int(np.max(getattr(scaler, "n_samples_seen_", 0))),
        }
    return out


def apply_scalers_json(values: np.ndarray, symbols: np.ndarray, scalers_json: dict) -> np.ndarray:
    """Scale ``values`` (rows x features) row-wise with each row's symbol parameters."""
    out = np.empty(values.shape, dtype=np.float32)
    for symbol, params in scalers_json["symbols"].items():
        rows = symbols == symbol
        if not rows.any():
            continue
        offset = np.asarray(params["offset"], dtype=np.float64)
        scale = np.asarray(params["scale"], dtype=np.float64)
        out[rows] = ((values[rows] - offset) / scale).astype(np.float32)
    missing = set(np.unique(symbols)) - set(scalers_json["symbols"])
    if missing:
        raise DataError(f"no scaler parameters for symbol(s) {sorted(missing)}")
    return out
