"""Cleaning: the rules of ``rules.RULES`` applied in order, then the report and the frame.

Every removal is counted per symbol and listed as an action; actions are kept per symbol and
listed in symbol order at the end, so the report reads the same however the symbols were
grouped (one process, or groups over a cluster).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from monolith.data.ingest.bars import Bars
from monolith.data.ingest.columns import OHLCV_COLUMNS
from monolith.data.ingest.report import count_gaps, symbol_entries
from monolith.data.ingest.rules import RULES


def clean(
    frame: pd.DataFrame,
    *,
    passthrough: list[str],
    files: list[dict[str, Any]],
    min_rows: int,
    bad_tick_range_multiple: float,
    actions: list[str],
    by_symbol: dict[str, list[str]] | None = None,
    wall_clock_gaps: bool = True,
) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """The bars every rule keeps, as the canonical frame, and each symbol's report entry.

    ``frame`` holds the files read (canonical columns, passthrough, ``_file``, ``_row``);
    ``files`` are their report entries. The actions are appended to ``actions``, and per
    symbol to ``by_symbol`` when given.

    Raises:
        DataError: a symbol keeps fewer than ``min_rows`` bars.
    """
    bars = Bars.of(frame, files, bad_tick_range_multiple)
    symbol_actions: list[list[str]] = [[] for _ in range(bars.k)]
    counts: dict[str, np.ndarray] = {"rows_in": np.bincount(bars.codes, minlength=bars.k)}
    for rule in RULES:
        if rule.ordered:
            bars.order()
        found = rule.find(bars)
        counts[rule.key] = bars.per_symbol(found.mask)
        counts.update(found.counts)
        for s in np.flatnonzero(counts[rule.key]):
            symbol_actions[s].append(rule.action(bars, found, s))
        bars.drop(found.mask)
    interval = count_gaps(bars, counts)
    symbols = symbol_entries(bars, counts, interval, min_rows, wall_clock_gaps, symbol_actions)
    for s, per in enumerate(symbol_actions):
        actions.extend(per)
        if by_symbol is not None and per:
            by_symbol[str(bars.names[s])] = per
    return _kept_frame(frame, bars, passthrough), symbols


def _kept_frame(frame: pd.DataFrame, bars: Bars, passthrough: list[str]) -> pd.DataFrame:
    """The kept bars in (symbol, time) order, each column gathered once."""
    ts = bars.at(bars.columns["timestamp"])
    out = pd.DataFrame(
        {
            "timestamp": pd.DatetimeIndex(ts.view("datetime64[ns]"), tz="UTC"),
            # Arrow-backed strings taken from the sorted names: no Python object per row.
            "symbol": pd.Series(bars.names).astype(str).array.take(bars.kept_codes),
        }
    )
    for name, values in zip(OHLCV_COLUMNS, bars.ohlcv, strict=True):
        out[name] = bars.at(values)
    for name in passthrough:
        out[name] = bars.at(frame[name].to_numpy())
    return out
