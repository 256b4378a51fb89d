"""Bars of markets that close, built here (never third-party data): sessions from the exchange
calendars themselves, prices a seeded random walk, written as a desk's files would be."""

from __future__ import annotations

import warnings
from pathlib import Path

import exchange_calendars
import numpy as np
import pandas as pd

HOUR = pd.Timedelta(hours=1)


def calendar(code: str, start: str, end: str):
    with warnings.catch_warnings():  # exchange_calendars 4.x under pandas 3.1's deprecations
        warnings.simplefilter("ignore", DeprecationWarning)
        return exchange_calendars.get_calendar(code, start=start, end=end)


def ohlcv(times: pd.DatetimeIndex, seed: int, start: float = 100.0) -> pd.DataFrame:
    """A random walk of bars at ``times`` (UTC), OHLC consistent, volume positive."""
    rng = np.random.default_rng(seed)
    n = len(times)
    close = start * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[start, close[:-1]] * np.exp(rng.normal(0, 0.002, n))
    spread = np.abs(rng.normal(0, 0.004, n)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    volume = rng.integers(1_000, 50_000, n).astype(float)
    return pd.DataFrame(
        {"timestamp": times, "open": open_, "high": high, "low": low, "close": close,
         "volume": volume}
    )  # fmt: skip


def daily_sessions(code: str, start: str, end: str) -> pd.DatetimeIndex:
    """Each session's date (UTC midnight, as daily files are dated)."""
    cal = calendar(code, start=start, end=end)
    return pd.DatetimeIndex(cal.sessions).tz_localize("UTC")


def intraday(code: str, start: str, end: str, step: pd.Timedelta = HOUR) -> pd.DatetimeIndex:
    """Bar starts from each session's open every ``step`` while before its close (UTC)."""
    cal = calendar(code, start=start, end=end)
    out = []
    for open_, close in zip(cal.schedule["open"], cal.schedule["close"], strict=True):
        t = open_
        while t < close:
            out.append(t)
            t += step
    return pd.DatetimeIndex(out).tz_convert("UTC")


def futures_with_break(start: str, end: str) -> pd.DatetimeIndex:
    """Hourly bars of a CME-style future: 17:00 to 16:00 Chicago time, Sunday evening to
    Friday, with the daily 16:00-17:00 maintenance break (no bar in it)."""
    cal = calendar("CMES", start=start, end=end)
    out = []
    for open_, close in zip(cal.schedule["open"], cal.schedule["close"], strict=True):
        t = open_
        while t < close:
            if t.tz_convert("America/Chicago").hour != 16:
                out.append(t)
            t += HOUR
    return pd.DatetimeIndex(out).tz_convert("UTC")


def fx_hours(start: str, end: str) -> pd.DatetimeIndex:
    """Hourly FX bars: Sunday 17:00 to Friday 17:00 New York time."""
    hours = pd.date_range(start, end, freq="h", tz="America/New_York", inclusive="left")
    day, hour = hours.day_of_week, hours.hour
    closed = (day == 5) | ((day == 4) & (hour >= 17)) | ((day == 6) & (hour < 17))
    return hours[~closed].tz_convert("UTC")


def write(frame: pd.DataFrame, path: Path, symbol: str | None = None) -> Path:
    out = frame.copy()
    if symbol is not None:
        out.insert(1, "symbol", symbol)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)
    return path
