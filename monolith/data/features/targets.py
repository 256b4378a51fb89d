"""Forward targets (probe labels): the one place that looks AHEAD, on purpose.

The target of a window ending at bar t is a function of bars t+1 .. t+H only: a position
decided at t's close is entered at the next bar's open, so the path starts at open[t+1].
Nothing at or before t enters it, so a target never restates what the window shows. It is
NaN where bar t+H is past the symbol's end or in another gap-free segment; the split purge
(``DataConfig.purge_bars``, covering the longest horizon) keeps a split's last targets out
of the next split. Probe labels, never model inputs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _forward_rows(segment: np.ndarray, horizon: int) -> np.ndarray:
    """Rows t of one symbol whose bars t+1..t+H exist in t's segment (segments are
    contiguous, non-decreasing runs, so comparing t with t+H suffices)."""
    now = np.arange(max(len(segment) - horizon, 0))
    return now[segment[now + horizon] == segment[now]]


def forward_return_sign(
    open_: np.ndarray, close: np.ndarray, segment: np.ndarray, horizon: int
) -> np.ndarray:
    """1.0 where close[t+H] > open[t+1] (the H-bar return from the next open is positive),
    else 0.0; NaN where bar t+H is missing (one symbol's rows, in time order)."""
    out = np.full(len(close), np.nan)
    now = _forward_rows(segment, horizon)
    out[now] = (close[now + horizon] > open_[now + 1]).astype(np.float64)
    return out


def forward_volatility(
    open_: np.ndarray, close: np.ndarray, segment: np.ndarray, horizon: int
) -> np.ndarray:
    """Realised volatility of bars t+1..t+H: the root mean square of their H log returns,
    log(close[t+1] / open[t+1]) then log(close[k] / close[k-1]) for k = t+2..t+H; NaN where
    bar t+H is missing (one symbol's rows, in time order).

    Summed bar by bar over the horizon rather than from a running cumulative sum, so a
    target is exactly a function of its own H bars (a cumulative sum would carry rounding
    from every earlier bar).
    """
    out = np.full(len(close), np.nan)
    now = _forward_rows(segment, horizon)
    if len(now) == 0:
        return out
    log_close = np.log(close)
    step = np.empty(len(close))
    step[0] = np.nan  # no previous close; never read (k >= t+2 >= 1 below)
    step[1:] = np.diff(log_close)
    total = (log_close[now + 1] - np.log(open_[now + 1])) ** 2
    for k in range(2, horizon + 1):
        total += step[now + k] ** 2
    out[now] = np.sqrt(total / horizon)
    return out


FORWARD_TARGETS = {"direction_h": forward_return_sign, "fwd_vol_h": forward_volatility}


def forward_targets(
    frame: pd.DataFrame,
    blocks: list[tuple[str, int, int]],
    direction_horizons: list[int],
    volatility_horizons: list[int],
) -> dict[str, np.ndarray]:
    """The forward targets, by probe name (``direction_h<H>``, ``fwd_vol_h<H>``), per symbol.

    ``frame`` is sorted by (symbol, timestamp) with its ``segment`` column; ``blocks`` are
    its symbols' (symbol, start, stop) rows. Prices are the unscaled opens and closes.
    """
    open_ = frame["open"].to_numpy(dtype=np.float64)
    close = frame["close"].to_numpy(dtype=np.float64)
    segment = frame["segment"].to_numpy()
    wanted = [("direction_h", h) for h in direction_horizons]
    wanted += [("fwd_vol_h", h) for h in volatility_horizons]
    out: dict[str, np.ndarray] = {}
    for prefix, horizon in wanted:
        values = np.full(len(frame), np.nan)
        for _, start, stop in blocks:
            values[start:stop] = FORWARD_TARGETS[prefix](
                open_[start:stop], close[start:stop], segment[start:stop], horizon
            )
        out[f"{prefix}{horizon}"] = values
    return out
