"""SL/TP levels: ATR-based stop-loss and take-profit prices around each bar's close."""

from __future__ import annotations

import numpy as np
import pandas as pd

from monolith.errors import DataError


def add_levels(frame: pd.DataFrame, sl_multiple: float, tp_multiple: float) -> pd.DataFrame:
    """A copy with ATR-based stop-loss and take-profit levels around the close."""
    for name, value in (("sl_multiple", sl_multiple), ("tp_multiple", tp_multiple)):
        if not np.isfinite(value) or value <= 0:
            raise DataError(f"add_levels: {name} = {value!r} is invalid: must be a positive number")
    missing = [c for c in ("close", "ATR") if c not in frame.columns]
    if missing:
        raise DataError(f"add_levels: missing column(s) {missing}; found {list(frame.columns)}")
    # A shallow copy: with copy-on-write, adding columns to it never touches ``frame``, and
    # the (large) float block is shared instead of duplicated.
    out = frame.copy(deep=False)
    close = frame["close"].to_numpy(dtype=np.float64)
    atr = frame["ATR"].to_numpy(dtype=np.float64)
    out["level_sl"] = close - sl_multiple * atr
    out["level_tp"] = close + tp_multiple * atr
    return out
