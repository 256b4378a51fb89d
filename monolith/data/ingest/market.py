"""Reading market data: every file read, then cleaned together into the canonical frame."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from monolith.data.ingest.clean import clean
from monolith.data.ingest.read import FileFrame, read_file
from monolith.data.ingest.report import report_adjustments
from monolith.data.sources import SourceFile, resolve_sources
from monolith.errors import DataError
from monolith.storage import StorageSettings

logger = logging.getLogger(__name__)

DEFAULT_BAD_TICK_RANGE_MULTIPLE = 50.0


def read_market_data(
    source: str | Path | None = None,
    *,
    min_rows: int = 1,
    bad_tick_range_multiple: float = DEFAULT_BAD_TICK_RANGE_MULTIPLE,
    settings: StorageSettings | None = None,
    files: list[SourceFile] | None = None,
    symbols: frozenset[str] | None = None,
    adjust: str = "auto",
    wall_clock_gaps: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read, validate and clean market data into the canonical frame.

    Args:
        source: a CSV or Parquet file, a folder of them, or a glob; local or ``s3://``.
        min_rows: the fewest rows a symbol may keep after cleaning.
        bad_tick_range_multiple: a bar whose log(high/low) exceeds this multiple of the
            symbol's median log range is a bad tick (dropped and counted).
        settings: how to reach S3 (endpoint, region); credentials from the AWS chain.
        files: the files to read, already resolved (instead of ``source``).
        symbols: keep only these symbols (a group of a preparation spread over a cluster);
            None keeps every symbol.
        adjust: ``auto`` scales OHLCV by a file's adjusted close (``monolith.data.adjust``);
            ``none`` keeps raw prices.
        wall_clock_gaps: report every step longer than the bar interval as a gap (a market
            that never closes); False leaves the gap line to the caller, who counts gaps in
            trading time (``monolith.data.calendars``) and overwrites ``gaps``/``missing_bars``.

    Returns:
        The canonical frame and a JSON-serialisable report (files with SHA-256 and how each
        was laid out, per-symbol cleaning counts, human-readable actions: per file in file
        order, then per symbol in symbol order).

    Raises:
        DataError: naming the file, column, row and value for unusable input.
    """
    if bad_tick_range_multiple <= 1.0:
        raise DataError(
            f"bad_tick_range_multiple = {bad_tick_range_multiple!r} is invalid: must be > 1"
        )
    if files is None:
        if source is None:
            raise DataError("read_market_data: give a source or the files to read")
        files = resolve_sources(source, settings)
    parsed = [read_file(file, index, settings, symbols, adjust) for index, file in enumerate(files)]
    passthrough = common_passthrough(parsed)
    combined = pd.concat(
        [p.frame for p in parsed],
        ignore_index=True,
    )
    actions = [a for p in parsed for a in p.actions]
    by_symbol: dict[str, list[str]] = {}
    frame, per_symbol = clean(
        combined,
        passthrough=passthrough,
        files=[p.entry for p in parsed],
        min_rows=min_rows,
        bad_tick_range_multiple=bad_tick_range_multiple,
        actions=actions,
        by_symbol=by_symbol,
        wall_clock_gaps=wall_clock_gaps,
    )
    report_adjustments(frame, [p.adjusted for p in parsed], per_symbol, by_symbol, actions)
    report = {
        "files": [p.entry for p in parsed],
        "symbols": per_symbol,
        "actions": actions,
        # The same actions by where they come from, so that the reports of symbol groups read
        # on several processes merge into the order one process writes.
        "file_actions": {p.entry["path"]: list(p.actions) for p in parsed if p.actions},
        "symbol_actions": by_symbol,
    }
    logger.info(
        "read %d rows of %d symbol(s) from %d file(s); %d cleaning action(s)",
        len(frame),
        len(per_symbol),
        len(files),
        len(actions),
    )
    return frame, report


def common_passthrough(parsed: list[FileFrame]) -> list[str]:
    """Passthrough columns must agree across files: a half-filled feature column is unusable."""
    first = parsed[0]
    for other in parsed[1:]:
        if set(other.passthrough) != set(first.passthrough):
            raise DataError(
                f"{other.entry['path']}: extra columns {sorted(other.passthrough)} differ from "
                f"{first.entry['path']}'s {sorted(first.passthrough)}; files read together must "
                "share one schema"
            )
    return first.passthrough
