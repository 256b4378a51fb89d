"""The cleaning report: per-symbol counts and span, gaps, and the human-readable actions.

Nothing is dropped or altered silently: each symbol's entry counts what every rule removed
(``monolith.data.ingest.rules``), the gaps left (counted against the inferred bar interval,
never filled) and the zero-volume bars kept; how a file was laid out and how its prices
were adjusted are listed as actions too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from monolith.data.adjust import split_jumps
from monolith.data.ingest.bars import Bars
from monolith.data.ingest.rules import RULES
from monolith.data.layouts import CsvShape
from monolith.data.sources import SourceFile
from monolith.data.splits import symbol_blocks
from monolith.errors import DataError

# The counts of a symbol's entry, in the order the report lists them.
SYMBOL_COUNTS = (
    "rows_in",
    "duplicates_removed",
    "duplicates_conflicting",
    "gaps",
    "missing_bars",
    "impossible_bars",
    "non_positive_prices",
    "negative_volume",
    "nan_inf_rows",
    "bad_ticks",
    "zero_volume_bars",
    "rows_out",
)


def count_gaps(bars: Bars, counts: dict[str, np.ndarray]) -> np.ndarray:
    """Count the kept bars, their gaps and zero-volume bars into ``counts``; return each
    symbol's bar interval in seconds (the median step; NaN for a single bar)."""
    codes, k = bars.kept_codes, bars.k
    counts["rows_out"] = np.bincount(codes, minlength=k)
    step = np.diff(bars.at(bars.columns["timestamp"]))
    within = codes[1:] == codes[:-1]
    step_s = step[within] // 1_000_000_000
    step_code = codes[1:][within]
    interval = (
        pd.Series(step_s).groupby(step_code).median().reindex(range(k)).to_numpy()
        if len(step_s)
        else np.full(k, np.nan)
    )
    interval_per_step = interval[step_code]
    is_gap = step_s > interval_per_step
    counts["gaps"] = np.bincount(step_code[is_gap], minlength=k)
    missing = np.where(is_gap, np.round(step_s / interval_per_step) - 1, 0).astype(np.int64)
    counts["missing_bars"] = np.bincount(step_code, weights=missing, minlength=k).astype(np.int64)
    counts["zero_volume_bars"] = bars.per_symbol(bars.at(bars.ohlcv[4]) == 0)
    return interval


def symbol_entries(
    bars: Bars,
    counts: dict[str, np.ndarray],
    interval: np.ndarray,
    min_rows: int,
    wall_clock_gaps: bool,
    symbol_actions: list[list[str]],
) -> dict[str, dict[str, Any]]:
    """Each symbol's entry (its counts, interval and span), its gap and zero-volume actions.

    Raises:
        DataError: a symbol keeps fewer than ``min_rows`` bars, naming what removed them.
    """
    codes, k = bars.kept_codes, bars.k
    ts = bars.at(bars.columns["timestamp"])
    first_index = np.searchsorted(codes, np.arange(k), side="left")
    last_index = np.searchsorted(codes, np.arange(k), side="right") - 1
    symbols: dict[str, dict[str, Any]] = {}
    for s, name in enumerate(bars.names):
        rows_out = int(counts["rows_out"][s])
        if rows_out < min_rows:
            raise _too_short(bars, counts, s, min_rows)
        entry: dict[str, Any] = {key: int(counts[key][s]) for key in SYMBOL_COUNTS}
        entry["interval_seconds"] = None if np.isnan(interval[s]) else int(interval[s])
        entry["first"] = pd.Timestamp(int(ts[first_index[s]]), tz="UTC").isoformat()
        entry["last"] = pd.Timestamp(int(ts[last_index[s]]), tz="UTC").isoformat()
        symbols[str(name)] = entry
        if entry["gaps"] and wall_clock_gaps:
            symbol_actions[s].append(
                f"{name}: {entry['gaps']} gap(s) totalling {entry['missing_bars']} missing bar(s) "
                f"of {entry['interval_seconds']} s left unfilled (windows must not span them)"
            )
        if entry["zero_volume_bars"]:
            symbol_actions[s].append(f"{name}: kept {entry['zero_volume_bars']} zero-volume bar(s)")
    return symbols


def _too_short(bars: Bars, counts: dict[str, np.ndarray], s: int, min_rows: int) -> DataError:
    """The refusal of symbol code ``s``, left with too few bars: where they came from, and
    what each rule removed."""
    file_ids = np.unique(bars.columns["_file"][bars.codes == s])
    sources = sorted({bars.files[i]["name"] for i in file_ids})
    removed = [f"{int(counts[r.key][s])} {r.what}" for r in RULES if counts[r.key][s]]
    why = f": removed {', '.join(removed)}" if removed else ""
    return DataError(
        f"symbol {bars.names[s]!r} has {int(counts['rows_out'][s])} row(s) after cleaning (of "
        f"{counts['rows_in'][s]} read from {sources or 'its file(s)'}){why}; at least "
        f"{min_rows} required"
    )


def shape_actions(path: SourceFile, shape: CsvShape | None, encoding: str | None) -> list[str]:
    """How the file's layout was read, for a person checking that nothing was guessed wrong."""
    actions = []
    if encoding is not None:
        actions.append(
            f"{path.name}: read as {encoding.upper()} (it starts with a byte-order mark)"
        )
    if shape is None:
        return actions
    if shape.skip_rows:
        above = "the first data row" if shape.headerless else "the header"
        actions.append(
            f"{path.name}: skipped {shape.skip_rows} line(s) above {above} (first: "
            f"{shape.skipped_first!r})"
        )
    if shape.headerless is not None:
        actions.append(
            f"{path.name}: no header line; columns named as {shape.headerless.what} "
            f"({', '.join(shape.headerless.columns)})"
            + (f"; {shape.headerless.note}" if shape.headerless.note else "")
        )
    if shape.ticker is not None:
        actions.append(
            f"{path.name}: yfinance multi-row header ({shape.header_rows} lines); symbol "
            f"{shape.ticker!r} from its ticker row"
        )
    return actions


def report_adjustments(
    frame: pd.DataFrame,
    adjusted: list[dict[str, str]],
    per_symbol: dict[str, dict[str, Any]],
    by_symbol: dict[str, list[str]],
    actions: list[str],
) -> None:
    """Each symbol's price adjustment, and split-sized jumps left in its prices."""
    for by_symbol_column in adjusted:  # per file: symbol -> its adjusted-close column
        for symbol, column in by_symbol_column.items():
            if symbol in per_symbol:
                per_symbol[symbol]["price_adjustment"] = f"OHLCV by {column!r}"
    if frame.empty:
        return
    for symbol, jumps in split_jumps(frame, symbol_blocks(frame)).items():
        per_symbol[symbol]["split_sized_jumps"] = jumps
        listed = ", ".join(f"{j['timestamp'][:10]} x{j['ratio']:g}" for j in jumps[:3])
        line = (
            f"{symbol}: {len(jumps)} price jump(s) the size of a split ({listed}"
            f"{', ...' if len(jumps) > 3 else ''}) kept as published: if the source did not "
            "adjust for splits, supply adjusted prices or an adjusted-close column"
        )
        by_symbol.setdefault(symbol, []).append(line)
        actions.append(line)
