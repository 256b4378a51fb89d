"""A frame's symbols as contiguous row blocks, and the check that each is sorted in time."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from monolith.errors import DataError


def symbol_codes(frame: pd.DataFrame) -> tuple[np.ndarray, Any]:
    """Integer codes of the symbol column (``pd.factorize``: dictionary-encodes Arrow strings
    without building millions of Python strings) and the symbols they index."""
    return pd.factorize(frame["symbol"], sort=False)


def symbol_blocks(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Start/stop row of each symbol's contiguous block in a frame sorted by symbol."""
    codes, uniques = symbol_codes(frame)
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = np.concatenate(([0], change)) if len(codes) else np.array([], dtype=int)
    stops = np.concatenate((change, [len(codes)])) if len(codes) else np.array([], dtype=int)
    names = [str(uniques[codes[i]]) for i in starts]
    if len(set(names)) != len(names):
        raise DataError("frame is not grouped by symbol: sort it by (symbol, timestamp) first")
    return starts, stops, names


def timestamp_ns(frame: pd.DataFrame) -> np.ndarray:
    """Timestamps as int64 ns (tz-aware columns would otherwise become slow object arrays)."""
    return pd.DatetimeIndex(frame["timestamp"]).as_unit("ns").asi8


def require_sorted(frame: pd.DataFrame, where: str) -> None:
    """Refuse a frame whose symbols are not contiguous blocks, each strictly increasing in
    time (``where`` names the caller in the message)."""
    missing = [c for c in ("timestamp", "symbol") if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: frame lacks column(s) {missing}; found {list(frame.columns)}")
    starts, stops, _ = symbol_blocks(frame)
    ts = timestamp_ns(frame)
    for start, stop in zip(starts, stops, strict=True):
        if stop - start > 1 and not np.all(ts[start + 1 : stop] > ts[start : stop - 1]):
            raise DataError(
                f"{where}: symbol {frame['symbol'].iat[start]!r} is not strictly increasing in "
                "time; pass the frame read_market_data returns (sorted, deduplicated)"
            )
