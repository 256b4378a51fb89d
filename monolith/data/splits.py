"""Chronological, purged train/val/test splits per symbol, and scalers fitted on train rows.

Layout of each symbol's rows (after indicator warm-up is dropped)::

    [ train ........ | purge | val .... | purge | test .... ]

The purge gap is ``sequence_length`` + the longest target horizon (``label_horizon`` and
the probes' forward horizons) bars, so no window or label of one split
ever touches a row of the next. Scalers are fitted per symbol on that symbol's train rows only
(prices of different instruments live on different scales), and every fitted scaler is an
affine map ``(x - offset) / scale`` whose parameters are saved as plain JSON.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from monolith.data.scalers import KINDS, ScalerFit, fit_scaler
from monolith.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PURGE = "purge"


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


SPLIT_NAMES = ("train", "val", "test", PURGE)  # index = the split's code


def split_codes(
    frame: pd.DataFrame,
    *,
    val_fraction: float,
    test_fraction: float,
    purge_bars: int,
    min_split_rows: int,
    blocks: list[tuple[str, int, int]] | None = None,
) -> tuple[np.ndarray, dict[str, dict]]:
    """Each row's split as an int8 code (index into ``SPLIT_NAMES``), per symbol in time order.

    ``frame`` must be sorted by (symbol, timestamp); ``blocks`` (symbol, start, stop) may be
    given when already known. Returns the codes and, per symbol, the boundaries (row counts,
    first and last timestamp of each split).
    """
    codes = np.empty(len(frame), dtype=np.int8)
    boundaries: dict[str, dict] = {}
    timestamps = frame["timestamp"]
    for symbol, start, end in blocks if blocks is not None else symbol_blocks(frame):
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
            codes[pos : pos + count] = SPLIT_NAMES.index(name)
            if name != PURGE:
                info[name] = {
                    "rows": int(count),
                    "start": timestamps.iloc[pos].isoformat(),
                    "end": timestamps.iloc[pos + count - 1].isoformat(),
                }
            pos += count
        boundaries[symbol] = info
    return codes, boundaries


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
    codes, boundaries = split_codes(
        frame,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        purge_bars=purge_bars,
        min_split_rows=min_split_rows,
    )
    return np.asarray(SPLIT_NAMES, dtype=object)[codes], boundaries


def symbol_blocks(frame: pd.DataFrame) -> list[tuple[str, int, int]]:
    """(symbol, start, stop) of each symbol's contiguous rows in a frame sorted by symbol."""
    symbols = frame["symbol"].to_numpy()
    if len(symbols) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
    stops = np.r_[starts[1:], len(symbols)]
    return [(str(symbols[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def fit_scalers(
    frame: pd.DataFrame,
    split: np.ndarray,
    columns: list[str],
    kind: str,
    blocks: list[tuple[str, int, int]] | None = None,
) -> dict[str, ScalerFit]:
    """One scaler per symbol (``ScalerFit``: scikit-learn's statistics, ``to_sklearn()`` for
    the object), fitted on that symbol's train rows only.

    ``split`` holds each row's label (``"train"``...) or is a boolean train mask; ``blocks``
    (symbol, start, stop), when given, says the frame is grouped by symbol.
    """
    if kind not in KINDS:
        raise DataError(f"unknown scaler kind {kind!r}; allowed {sorted(KINDS)}")
    split = np.asarray(split)
    train = split if split.dtype == bool else split == "train"
    if blocks is not None:
        groups = {s: np.arange(a, b) for s, a, b in blocks}
    else:
        groups = frame.groupby("symbol", sort=True).indices
    scalers: dict[str, ScalerFit] = {}
    # Gathered per symbol, column by column: one symbol's train rows at a time rather than
    # the whole feature matrix (a slice when they are contiguous, as in a prepared frame).
    source = [frame[c].to_numpy(dtype=np.float64) for c in columns]
    for symbol in sorted(groups, key=str):
        idx = groups[symbol]
        rows = idx[train[idx]]
        values = np.empty((len(rows), len(columns)))
        contiguous = len(rows) > 0 and rows[-1] - rows[0] + 1 == len(rows)
        for j, column in enumerate(source):
            if contiguous:
                values[:, j] = column[rows[0] : rows[-1] + 1]
            else:
                np.take(column, rows, out=values[:, j])
        scalers[str(symbol)] = fit_scaler(values, kind)
        del values
    return scalers


def affine_parameters(scaler: object) -> tuple[np.ndarray, np.ndarray]:
    """``(offset, scale)`` with ``transform(x) == (x - offset) / scale``: a ``ScalerFit`` or a
    fitted scikit-learn scaler of our kinds."""
    if isinstance(scaler, ScalerFit):
        return scaler.offset, scaler.scale
    name = type(scaler).__name__
    if name in ("StandardScaler", "RobustScaler"):
        offset = scaler.mean_ if name == "StandardScaler" else scaler.center_
        scale = scaler.scale_
    elif name == "MinMaxScaler":
        # MinMaxScaler: x * scale_ + min_  ==  (x - (-min_ / scale_)) / (1 / scale_)
        offset = -scaler.min_ / scaler.scale_
        scale = 1.0 / scaler.scale_
    else:
        raise DataError(f"unsupported scaler {name}")
    return np.asarray(offset, dtype=np.float64), np.asarray(scale, dtype=np.float64)


def sklearn_scalers(scalers: dict[str, ScalerFit]) -> dict[str, object]:
    """The fitted scikit-learn scalers (what ``scalers.pkl`` holds), per symbol."""
    return {symbol: fit.to_sklearn() for symbol, fit in scalers.items()}


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
            "n_samples_seen": int(
                scaler.n_samples
                if isinstance(scaler, ScalerFit)
                else np.max(getattr(scaler, "n_samples_seen_", 0))
            ),
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
