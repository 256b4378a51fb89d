"""The cleaning rules: one small function per rule, and ``RULES``, the one table of them.

Each bar is counted once, under the first rule it breaks, because each rule judges only the
bars the rules before it kept. Rules that look at neighbours (duplicates, bad ticks) judge the
bars in (symbol, time, file order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from monolith.data.ingest.bars import Bars
from monolith.data.ingest.columns import OHLCV_COLUMNS


@dataclass(frozen=True)
class Found:
    """What a rule found among the kept bars."""

    mask: np.ndarray  # over the kept bars: those the rule removes
    # How one symbol's removed bars are described (rows: its bars in ``mask``), or its whole
    # action line; neither: the rule's ``what`` and a few examples.
    detail: Callable[[np.ndarray], str] | None = None
    line: Callable[[int], str] | None = None
    counts: dict[str, np.ndarray] = field(default_factory=dict)  # more per-symbol counts


@dataclass(frozen=True)
class Rule:
    """A cleaning rule: its count in the report, its finder, and what it calls the bars."""

    key: str  # the per-symbol count in the report
    find: Callable[[Bars], Found]
    what: str  # the bars it removes, in the report's actions and in a refusal
    ordered: bool = False  # judged on the bars in (symbol, time, file order)

    def action(self, bars: Bars, found: Found, s: int) -> str:
        """The report's line for symbol code ``s``, which lost bars to this rule."""
        if found.line is not None:
            return found.line(s)
        rows = found.mask & (bars.kept_codes == s)
        detail = found.detail(rows) if found.detail is not None else ""
        return (
            f"{bars.names[s]}: dropped {np.count_nonzero(rows)} bar(s) {self.what}{detail}: "
            f"{bars.examples(rows)}"
        )


def non_finite(bars: Bars) -> Found:
    """A bar with NaN or inf in any of OHLCV."""
    finite = [np.isfinite(bars.at(x)) for x in bars.ohlcv]
    mask = ~np.logical_and.reduce(finite)

    def per_column(rows: np.ndarray) -> str:
        counts = (np.count_nonzero(~f[rows]) for f in finite)
        bad = [f"{col}: {int(n)}" for col, n in zip(OHLCV_COLUMNS, counts, strict=True) if n]
        return f" (per column {', '.join(bad)})"

    return Found(mask, detail=per_column)


def non_positive_price(bars: Bars) -> Found:
    """A price at or below zero."""
    o, h, lo, c = (bars.at(x) for x in bars.ohlcv[:4])
    mask = (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0)
    return Found(mask)


def negative_volume(bars: Bars) -> Found:
    """A volume below zero (zero is kept, and counted in the report)."""
    mask = bars.at(bars.ohlcv[4]) < 0
    return Found(mask)


def impossible_bar(bars: Bars) -> Found:
    """High and low that do not bracket open and close."""
    o, h, lo, c = (bars.at(x) for x in bars.ohlcv[:4])
    mask = (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (h < lo)
    return Found(mask)


def duplicate_timestamp(bars: Bars) -> Found:
    """A second bar of a symbol at the same time; the first occurrence in file order is kept."""
    sel, codes = bars.positions, bars.kept_codes
    ts = bars.at(bars.columns["timestamp"])
    same_as_previous = np.zeros(len(sel), dtype=bool)
    same_as_previous[1:] = (codes[1:] == codes[:-1]) & (ts[1:] == ts[:-1])
    conflicting = same_as_previous
    if same_as_previous.any():
        # Compare each duplicate with the occurrence that is kept (the first of its run).
        kept_index = np.maximum.accumulate(np.where(same_as_previous, 0, np.arange(len(sel))))
        dup = np.flatnonzero(same_as_previous)
        first = sel[kept_index[dup]]
        differs = np.zeros(len(dup), dtype=bool)
        for x in bars.ohlcv:
            differs |= x[sel[dup]] != x[first]
        conflicting = np.zeros(len(sel), dtype=bool)
        conflicting[dup] = differs
    removed = bars.per_symbol(same_as_previous)
    differing = bars.per_symbol(conflicting)

    def line(s: int) -> str:
        return (
            f"{bars.names[s]}: removed {removed[s]} duplicated timestamp(s), keeping the first "
            f"occurrence in file order; {differing[s]} of them differed from the kept bar in "
            "OHLCV values"
        )

    return Found(same_as_previous, line=line, counts={"duplicates_conflicting": differing})


def bad_tick(bars: Bars) -> Found:
    """A range far beyond the symbol's typical range, judged on the bars kept so far."""
    codes, multiple = bars.kept_codes, bars.bad_tick_range_multiple
    log_range = np.log(bars.at(bars.ohlcv[1]) / bars.at(bars.ohlcv[2]))
    median_range = pd.Series(log_range).groupby(codes).median().reindex(range(bars.k)).to_numpy()
    threshold = multiple * median_range[codes]
    mask = (log_range > threshold) & (threshold > 0)
    what = f"whose log(high/low) exceeds {multiple:g} x the median"

    def line(s: int) -> str:
        rows = mask & (codes == s)
        return (
            f"{bars.names[s]}: dropped {np.count_nonzero(rows)} bad tick(s) {what} "
            f"{median_range[s]:.5f}: {bars.examples(rows)}"
        )

    return Found(mask, line=line)


# The rules in the order they judge; each bar is counted under the first it breaks.
RULES = (
    Rule("nan_inf_rows", non_finite, "with NaN/inf in OHLCV"),
    Rule("non_positive_prices", non_positive_price, "with a non-positive price"),
    Rule("negative_volume", negative_volume, "with negative volume"),
    Rule("impossible_bars", impossible_bar, "impossible (high/low do not bracket open/close)"),
    Rule("duplicates_removed", duplicate_timestamp, "duplicated timestamps", ordered=True),
    Rule("bad_ticks", bad_tick, "bad ticks", ordered=True),
)
