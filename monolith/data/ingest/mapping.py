"""Per-layout column mapping: which of a file's columns hold the time, the prices, the volume.

The layout is detected per file from its column names (``cryptodatadownload``, ``seed``,
``generic``; the package docstring describes each); a ready dataset's extra columns are
validated and passed through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from monolith.data.features import TECHNICAL_COLUMNS
from monolith.data.ingest.columns import (
    OHLCV_COLUMNS,
    PRICE_COLUMNS,
    SEED_MARKERS,
    SEED_NUMERIC_EXTRAS,
)
from monolith.data.ingest.tables import normalised_names
from monolith.data.ingest.times import (
    cdd_date_mismatches,
    epoch_to_ns,
    generic_times,
    timestamps_to_ns,
)
from monolith.data.ingest.values import cdd_volume_column, embeddings, numeric
from monolith.data.ingest.where import Where
from monolith.data.layouts import TIMESTAMP_ALIASES, ColumnMap, CsvShape, map_columns
from monolith.data.sources import SourceFile
from monolith.errors import DataError


@dataclass(frozen=True)
class Columns:
    """One file's columns under their names as written and as compared, and how they map."""

    path: SourceFile
    where: Where
    found: list[str]  # as written
    names: list[str]  # as compared (``layouts.normalise_name``)
    by_name: dict[str, pa.ChunkedArray]  # as compared -> column
    originals: dict[str, str]  # as compared -> as written
    by_original: dict[str, pa.ChunkedArray]
    mapped: ColumnMap

    @classmethod
    def of(cls, path: SourceFile, table: pa.Table, shape: CsvShape | None) -> Columns:
        names = normalised_names(path, table.column_names)
        return cls(
            path=path,
            where=Where(path, shape.first_data_line if shape is not None else None),
            found=table.column_names,
            names=names,
            by_name={name: table.column(i) for i, name in enumerate(names)},
            originals=dict(zip(names, table.column_names, strict=True)),
            by_original={name: table.column(i) for i, name in enumerate(table.column_names)},
            mapped=map_columns(table.column_names),
        )


@dataclass
class Mapped:
    """Where a file's bars come from: their times, and the columns (as written) of each price."""

    ts: np.ndarray  # UTC ns
    sources: dict[str, str]  # canonical name -> column; volume too, except in ``generic``
    used: set[str | None]  # the columns read; the others are reported as ignored


def detect_layout(names: list[str]) -> str:
    """Which of the three layouts a file's (compared) column names say it is."""
    keys = set(names)
    if ({"unix", *PRICE_COLUMNS} <= keys or {"unix timestamp", *PRICE_COLUMNS} <= keys) and any(
        n.startswith("volume ") for n in names
    ):
        return "cryptodatadownload"
    if {"timestamp", "symbol", *OHLCV_COLUMNS} <= keys and (
        SEED_MARKERS & keys or any(n.startswith("mcp_feature_") for n in names)
    ):
        return "seed"
    return "generic"


def fallback_symbol(path: SourceFile, shape: CsvShape | None) -> str:
    """The one symbol of a file without a symbol column: what names it inside, else outside."""
    if shape is not None and shape.ticker:
        return shape.ticker
    # Named by its hive folder (symbol=BTCUSDT/...) or else by the file.
    return path.symbol_hint or path.stem


def require_generic(path: SourceFile, mapped: ColumnMap, found: list[str]) -> None:
    """Refuse a file missing a time, a price or a volume column, naming what it has instead."""
    missing = [p for p in PRICE_COLUMNS if getattr(mapped, p) is None]
    if mapped.volume is None and mapped.tick_volume is None:
        missing.append("volume")
    if mapped.time is None and mapped.unnamed is None:
        missing.insert(
            0,
            "timestamp (or one of " + "/".join(TIMESTAMP_ALIASES[1:]) + ", or an unnamed "
            "first column of times)",
        )
    if missing:
        raise DataError(f"{path}: missing required column(s) {missing}; found {found}")


def _map_cryptodatadownload(
    cols: Columns, adjust: str, entry: dict[str, Any], actions: list[str]
) -> Mapped:
    """``unix`` is the time (``date`` only cross-checked); the base-asset volume is the volume."""
    columns, originals = cols.by_name, cols.originals
    time_name = originals["unix" if "unix" in columns else "unix timestamp"]
    ts = epoch_to_ns(cols.where, time_name, cols.by_original[time_name])
    volume_name = originals[cdd_volume_column(columns, cols.names)]
    mismatches = cdd_date_mismatches(columns.get("date"), ts)
    entry["date_mismatches"] = mismatches
    if mismatches:
        actions.append(
            f"{cols.path.name}: {mismatches} row(s) have a 'date' that disagrees with 'unix'; "
            "'unix' was used as the time of the bar"
        )
    sources = {**{p: originals[p] for p in PRICE_COLUMNS}, "volume": volume_name}
    return Mapped(ts, sources, {time_name, cols.mapped.symbol, *sources.values()})


def _map_seed(cols: Columns, adjust: str, entry: dict[str, Any], actions: list[str]) -> Mapped:
    """A ready dataset: every column is used (the extras pass through, see ``seed_extras``)."""
    ts = timestamps_to_ns(cols.where, cols.originals["timestamp"], cols.by_name["timestamp"])
    return Mapped(ts, {c: cols.originals[c] for c in OHLCV_COLUMNS}, set(cols.found))


def _map_generic(cols: Columns, adjust: str, entry: dict[str, Any], actions: list[str]) -> Mapped:
    """Time and prices under any alias ``layouts`` knows; the volume is chosen later."""
    path, mapped = cols.path, cols.mapped
    require_generic(path, mapped, cols.found)
    ts, time_names = generic_times(cols.where, mapped, cols.by_original, cols.found)
    sources = {p: getattr(mapped, p) for p in PRICE_COLUMNS}
    used = {*time_names, mapped.symbol, *sources.values()}
    if mapped.adjusted_close is not None and adjust != "none":
        used.add(mapped.adjusted_close)
    entry["timestamp_column"] = time_names[0] if len(time_names) == 1 else time_names
    if mapped.unnamed is not None:
        actions.append(
            f"{path.name}: the unnamed column {mapped.unnamed!r} (a pandas index) was "
            "taken as the time of the bar"
        )
    elif len(time_names) == 2:
        actions.append(
            f"{path.name}: the time of the bar is {time_names[0]!r} and {time_names[1]!r} combined"
        )
    if mapped.close_from_price:
        actions.append(f"{path.name}: {mapped.close!r} taken as the close")
    return Mapped(ts, sources, used)


# Each layout's mapping: (columns, adjust, the file's report entry, its actions) -> Mapped.
MAPPINGS: dict[str, Callable[[Columns, str, dict[str, Any], list[str]], Mapped]] = {
    "cryptodatadownload": _map_cryptodatadownload,
    "seed": _map_seed,
    "generic": _map_generic,
}


def seed_extras(frame: pd.DataFrame, cols: Columns) -> list[str]:
    """Add a ready dataset's extra columns to ``frame``, validated; their names, in file order."""
    seed_used = {"timestamp", "symbol", *OHLCV_COLUMNS}
    canonical = {c.lower(): c for c in TECHNICAL_COLUMNS}
    passthrough = []
    for name in cols.names:
        if name in seed_used:
            continue
        original = cols.originals[name]
        target = canonical.get(name, "llm_embedding" if name == "llm_embedding" else original)
        if target == "llm_embedding":
            frame[target] = embeddings(cols.where, original, cols.by_name[name])
        elif (
            target in TECHNICAL_COLUMNS
            or target in SEED_NUMERIC_EXTRAS
            or name.startswith("mcp_feature_")
        ):
            frame[target] = numeric(cols.where, original, cols.by_name[name])
        else:
            frame[target] = cols.by_name[name].to_pandas()
        passthrough.append(target)
    return passthrough
