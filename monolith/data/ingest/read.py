"""Reading one file: its bytes, its layout's columns, into canonical bars with provenance.

Each row keeps the file it came from (``_file``) and its data row (``_row``), so that the
cleaning report can name the line a person would open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from monolith.data.adjust import adjust_prices
from monolith.data.ingest.columns import PRICE_COLUMNS
from monolith.data.ingest.mapping import (
    MAPPINGS,
    Columns,
    Mapped,
    detect_layout,
    fallback_symbol,
    seed_extras,
)
from monolith.data.ingest.report import shape_actions
from monolith.data.ingest.tables import read_table
from monolith.data.ingest.values import generic_volume, numeric, symbol_column
from monolith.data.ingest.where import Where
from monolith.data.layouts import ColumnMap, CsvShape
from monolith.data.sources import SourceFile, read_source
from monolith.storage import StorageSettings


@dataclass
class FileFrame:
    """One file parsed into canonical columns plus provenance for messages."""

    entry: dict[str, Any]
    frame: pd.DataFrame  # canonical columns + passthrough + _file, _row
    passthrough: list[str]
    actions: list[str] = field(default_factory=list)
    adjusted: dict[str, str] = field(default_factory=dict)  # symbol -> adjusted-close column


def read_file(
    path: SourceFile,
    file_index: int,
    settings: StorageSettings | None = None,
    symbols: frozenset[str] | None = None,
    adjust: str = "auto",
) -> FileFrame:
    """One file as canonical bars (only ``symbols``' when given), its report entry and actions."""
    data, sha = read_source(path, settings)
    table, shape, encoding = read_table(path, data)
    cols = Columns.of(path, table, shape)
    layout = detect_layout(cols.names)
    entry = _entry(path, sha, len(data), table.num_rows, layout, shape, encoding)
    out = FileFrame(entry=entry, frame=pd.DataFrame(), passthrough=[])
    out.actions.extend(shape_actions(path, shape, encoding))
    mapped = MAPPINGS[layout](cols, adjust, entry, out.actions)
    frame = _bars(cols, mapped, layout, fallback_symbol(path, shape), out)
    out.frame = frame
    if layout == "generic" and cols.mapped.adjusted_close is not None:
        _adjusted(out, cols.mapped, cols.by_original, cols.where, adjust)
    if layout == "seed":
        out.passthrough = seed_extras(frame, cols)
    dropped = [c for c in table.column_names if c not in mapped.used]
    if dropped:
        out.actions.append(f"{path.name} ({layout} layout): ignored column(s) {dropped}")
    frame["_file"] = np.int32(file_index)
    frame["_row"] = np.arange(table.num_rows, dtype=np.int64)
    if symbols is not None:
        frame = frame.loc[frame["symbol"].isin(symbols).to_numpy()].reset_index(drop=True)
    out.frame = frame
    return out


def _entry(
    path: SourceFile,
    sha: str,
    size: int,
    rows: int,
    layout: str,
    shape: CsvShape | None,
    encoding: str | None,
) -> dict[str, Any]:
    """The file's line in the report: what was read and how it was laid out."""
    entry: dict[str, Any] = {
        "path": path.uri,
        "name": path.name,
        "format": path.format,
        "sha256": sha,
        "bytes": size,
        "rows": rows,
        "layout": layout,
    }
    if encoding is not None:
        entry["encoding"] = encoding
    if shape is not None:
        entry.update(shape.report())
    return entry


def _bars(
    cols: Columns, mapped: Mapped, layout: str, fallback: str, out: FileFrame
) -> pd.DataFrame:
    """Times, symbols, prices and volume as the canonical columns, each value checked."""
    where, by_original = cols.where, cols.by_original
    symbol = symbol_column(
        where,
        None if cols.mapped.symbol is None else by_original[cols.mapped.symbol],
        len(mapped.ts),
        fallback,
    )
    frame = pd.DataFrame({"timestamp": mapped.ts, "symbol": symbol})
    for name in PRICE_COLUMNS:
        frame[name] = numeric(where, mapped.sources[name], by_original[mapped.sources[name]])
    if layout == "generic":
        volume, volume_name, note = generic_volume(where, cols.mapped, by_original)
        frame["volume"] = volume
        if note:
            out.actions.append(f"{cols.path.name}: {note}")
        mapped.used.add(volume_name)
    else:
        volume_name = mapped.sources["volume"]
        frame["volume"] = numeric(where, volume_name, by_original[volume_name], suffixes=True)
    out.entry["volume_column"] = volume_name
    return frame


def _adjusted(out: FileFrame, mapped: ColumnMap, by_original: dict, where: Where, adjust: str):
    """Scale the file's OHLCV by its adjusted close (``adjust == "auto"``); report either way."""
    column = mapped.adjusted_close
    name = out.entry["name"]
    if adjust == "none":
        out.actions.append(f"{name}: {column!r} not applied (data.adjust: none): raw prices")
        return
    done = adjust_prices(out.frame, numeric(where, column, by_original[column]))
    out.entry["price_adjustment"] = {"column": column} | done
    out.adjusted = {str(s): column for s in pd.unique(out.frame["symbol"])}
    out.actions.append(
        f"{name}: prices adjusted by {column!r} (open, high, low, close x adjusted/close, "
        f"volume / it; ratio {done['ratio_min']:.4g} to {done['ratio_max']:.4g}); "
        "data.adjust: none keeps raw prices"
    )
    if done["unusable_rows"]:
        out.actions.append(
            f"{name}: {done['unusable_rows']} row(s) have no usable {column!r} (missing or "
            "not positive): no adjusted price, dropped below as non-finite"
        )
