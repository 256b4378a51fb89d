"""Adjusted prices: OHLC scaled by a file's adjusted close, and split-sized jumps reported.

A split or a dividend shows in raw prices as a jump that never happened to a holder. Where a
file publishes an adjusted close (Yahoo's ``Adj Close``), the bar is scaled by its ratio to the
close: open, high, low and close multiplied by ``adjusted / close``, volume divided by it (a
2-for-1 split doubles the shares traded before it). ``data.adjust: none`` keeps raw prices.

Without an adjusted column, a close-to-next-open jump whose ratio is a usual split factor and
whose level persists is listed in the cleaning report: kept as published, never changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

ADJUSTED_CLOSE_ALIASES = (
    "adj close",
    "adjusted close",
    "adjclose",
    "adj. close",
    "adj close price",
)
SPLIT_FACTORS = (1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 8.0, 10.0, 15.0, 20.0, 50.0, 100.0)
_FACTOR_TOLERANCE = 0.025  # a jump within 2.5% of a split factor
_LEVEL_BARS = 5  # the new level holds over this many bars on either side
_LEVEL_TOLERANCE = 0.10


def adjust_prices(frame: pd.DataFrame, adjusted_close: np.ndarray) -> dict[str, Any]:
    """Scale ``frame``'s OHLC by adjusted / close and its volume inversely, in place.

    A row whose adjusted close is missing, zero or negative gets no usable ratio: its prices
    become NaN, so cleaning drops and counts it. Returns what was done, for the report.
    """
    close = frame["close"].to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = adjusted_close / close
    usable = np.isfinite(ratio) & (ratio > 0)
    ratio = np.where(usable, ratio, np.nan)
    for column in ("open", "high", "low", "close"):
        frame[column] = frame[column].to_numpy(dtype=np.float64) * ratio
    frame["volume"] = frame["volume"].to_numpy(dtype=np.float64) / ratio
    kept = ratio[usable]
    return {
        "rows": int(usable.sum()),
        "unusable_rows": int((~usable).sum()),
        "ratio_min": float(kept.min()) if len(kept) else None,
        "ratio_max": float(kept.max()) if len(kept) else None,
    }


def split_jumps(frame: pd.DataFrame, blocks: list[tuple[str, int, int]]) -> dict[str, list[dict]]:
    """Per symbol, the bars whose open jumps from the previous close by a split factor and
    stay at the new level (``frame`` sorted by symbol and time)."""
    open_ = frame["open"].to_numpy(dtype=np.float64)
    close = frame["close"].to_numpy(dtype=np.float64)
    times = pd.DatetimeIndex(frame["timestamp"])
    found: dict[str, list[dict]] = {}
    for symbol, start, stop in blocks:
        if stop - start < 2 * _LEVEL_BARS + 1:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            jump = open_[start + 1 : stop] / close[start : stop - 1]
        size = np.maximum(jump, 1.0 / jump)
        factor = np.array(SPLIT_FACTORS)
        near = np.abs(size[:, None] / factor[None, :] - 1.0) <= _FACTOR_TOLERANCE
        for i in np.flatnonzero(near.any(axis=1)):
            at = start + 1 + int(i)
            if at - _LEVEL_BARS < start or at + _LEVEL_BARS > stop:
                continue
            before = np.median(close[at - _LEVEL_BARS : at])
            after = np.median(close[at : at + _LEVEL_BARS])
            if abs((after / before) / jump[i] - 1.0) > _LEVEL_TOLERANCE:
                continue  # a spike that came back, not a new level
            f = factor[near[i]][0]
            found.setdefault(symbol, []).append(
                {
                    "timestamp": times[at].isoformat(),
                    "ratio": round(float(jump[i]), 4),
                    "looks_like": f"{f:g}-for-1 split"
                    if jump[i] < 1
                    else f"1-for-{f:g} reverse split",
                }
            )
    return found
