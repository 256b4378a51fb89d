"""Ingest: CSV/Parquet market data files → one canonical frame and a cleaning report.

The canonical frame has ``timestamp`` (datetime64[ns, UTC]), ``symbol`` (str), ``open high low
close volume`` (float64), then any passthrough columns of a ready dataset, sorted by
(symbol, timestamp) on a RangeIndex.

Files are read as their sources publish them: how a file is laid out (delimiter, banner lines
above the header, header-less files, multi-row headers, column-name spellings and aliases,
timestamp formats) is decided in ``monolith.data.layouts``, whose docstring lists every layout
accepted. This module reads the bytes, parses them with pyarrow and maps the columns, in one
of three ways detected per file from its column names:

- ``cryptodatadownload``: ``unix,date,symbol,open,high,low,close,Volume <BASE>,Volume <QUOTE>,
  tradecount`` (Binance exports; the ``https://www.CryptoDataDownload.com`` line above the
  header is skipped). ``unix`` is the truth for time; ``date`` is only cross-checked and the
  disagreements are counted.
- ``seed``: a ready dataset (``timestamp, symbol, OHLCV`` plus technical columns,
  ``llm_embedding``, ``mcp_feature_*``, ``hmm_regime``, ``level_sl``, ``level_tp``); the extra
  columns are validated and passed through.
- ``generic``: a timestamp column, OHLCV (under any alias ``layouts`` knows) and an optional
  symbol column; without one the file holds one symbol, named by yfinance's ticker row, else
  its hive folder (``symbol=BTCUSDT/``), else the file stem. Other columns are dropped and the
  drop is reported.

Times without a zone are taken as UTC: exchange data is published in UTC, and guessing a local
zone would shift every bar.

Nothing is dropped or altered silently: every cleaning step is counted per symbol and listed as
a human-readable action. The steps run in this order, so each bar is counted once, under the
first rule it breaks: non-finite OHLCV, non-positive prices, negative volume, impossible bars
(high/low not bracketing open/close), then duplicate timestamps (the first occurrence in file
order is kept), then bad ticks (range far beyond the symbol's median range). Gaps are counted
on the final series but never filled: windowing decides what to do with them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from monolith.data.adjust import adjust_prices, split_jumps
from monolith.data.features import TECHNICAL_COLUMNS
from monolith.data.layouts import (
    SNIFF_BYTES,
    TIMESTAMP_ALIASES,
    ColumnMap,
    CsvShape,
    alias_key,
    map_columns,
    normalise_name,
    parse_numbers,
    sniff_csv,
    time_formats,
    time_of_day_format,
)
from monolith.data.sources import SourceFile, read_source, resolve_sources
from monolith.errors import DataError
from monolith.storage import StorageSettings
from monolith.uri import is_s3_uri

logger = logging.getLogger(__name__)

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV_COLUMNS = (*PRICE_COLUMNS, "volume")
CANONICAL_COLUMNS = ("timestamp", "symbol", *OHLCV_COLUMNS)
# Columns that make a file a ready dataset rather than bare OHLCV.
SEED_MARKERS = frozenset(
    {c.lower() for c in TECHNICAL_COLUMNS[5:]}
    | {"llm_embedding", "hmm_regime", "level_sl", "level_tp"}
)
SEED_NUMERIC_EXTRAS = ("hmm_regime", "level_sl", "level_tp")
DEFAULT_BAD_TICK_RANGE_MULTIPLE = 50.0

# "-" is how Investing.com writes a missing volume.
_CSV_NULLS = ["", "NULL", "null", "NaN", "nan", "NA", "N/A", "None", "none", "-"]
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_NS_PER_DAY = 86_400 * 1_000_000_000
# At most this many examples (time, file, line) are quoted per cleaning action.
_EXAMPLES = 3


@dataclass
class _FileFrame:
    """One file parsed into canonical columns plus provenance for messages."""

    entry: dict[str, Any]
    frame: pd.DataFrame  # canonical columns + passthrough + _file, _row
    passthrough: list[str]
    actions: list[str] = field(default_factory=list)
    adjusted: dict[str, str] = field(default_factory=dict)  # symbol -> adjusted-close column


@dataclass(frozen=True)
class _Where:
    """A file and where its data rows start, so a message names the line a person would open."""

    file: SourceFile
    first_data_line: int | None  # None: Parquet, which has rows, not lines

    def row(self, index: int) -> str:
        """Where data row ``index`` (0-based) sits in the file."""
        if self.first_data_line is None:
            return f"row {index + 1}"
        return f"line {index + self.first_data_line} (data row {index + 1})"

    def __str__(self) -> str:
        return str(self.file)


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
    parsed = [
        _read_file(file, index, settings, symbols, adjust) for index, file in enumerate(files)
    ]
    passthrough = _common_passthrough(parsed)
    combined = pd.concat(
        [p.frame for p in parsed],
        ignore_index=True,
    )
    actions = [a for p in parsed for a in p.actions]
    by_symbol: dict[str, list[str]] = {}
    frame, per_symbol = _clean(
        combined,
        passthrough=passthrough,
        files=[p.entry for p in parsed],
        min_rows=min_rows,
        bad_tick_range_multiple=bad_tick_range_multiple,
        actions=actions,
        by_symbol=by_symbol,
        wall_clock_gaps=wall_clock_gaps,
    )
    _report_adjustments(frame, parsed, per_symbol, by_symbol, actions)
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


def file_symbols(file: SourceFile, settings: StorageSettings | None = None) -> dict[str, int]:
    """The symbols a file holds and how many rows each, reading as little as the format allows.

    The same layout detection as ``read_market_data``, so the symbols are the strings it
    would produce. A file without a symbol column holds one symbol (the yfinance ticker row,
    else its hive folder, else its stem): a Parquet file's rows then come from its footer and
    no data is read. With a symbol column only that column is read (Parquet column
    projection, over HTTP range requests on S3; for CSV a pyarrow parse converting that
    column alone, of the whole object).

    Raises:
        DataError: the file is unreadable, empty, or a symbol is missing, as when it is read.
    """
    if file.format == "parquet":
        parquet = _parquet_file(file, settings)
        names = parquet.schema_arrow.names
        _normalised_names(file, names)
        symbol = map_columns(names).symbol
        if symbol is None:
            rows = parquet.metadata.num_rows
            if rows == 0:
                raise DataError(f"{file}: holds no rows")
            return {_fallback_symbol(file, None): rows}
        try:
            table = parquet.read(columns=[symbol])
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{file}: cannot be read as parquet: {exc}") from None
        where = _Where(file, None)
    else:
        data, _ = read_source(file, settings)
        data, shape, _ = _csv_shape(file, data)
        _normalised_names(file, shape.names)
        symbol = map_columns(shape.names).symbol
        table = _parse_csv(file, data, shape, include=[symbol or shape.names[0]])
        if symbol is None:
            return {_fallback_symbol(file, shape): table.num_rows}
        where = _Where(file, shape.first_data_line)
    counts = _symbols(where, table.column(0), table.num_rows, "").value_counts(sort=False)
    return {str(name): int(n) for name, n in sorted(counts.items())}


def quick_file_symbols(
    file: SourceFile, settings: StorageSettings | None = None
) -> dict[str, int] | None:
    """``file_symbols`` from the file's metadata alone, when no row needs reading: a Parquet
    footer, or a CSV's first bytes (rows then estimated from its size); None for a file with
    a symbol column (or one that must be decompressed or re-encoded whole)."""
    if file.format == "parquet":
        parquet = _parquet_file(file, settings)
        names = parquet.schema_arrow.names
        _normalised_names(file, names)
        if map_columns(names).symbol is not None:
            return None
        return {_fallback_symbol(file, None): parquet.metadata.num_rows}
    if file.compression or file.size == 0:
        return None
    head = _read_head(file, settings, SNIFF_BYTES + 1)
    if bytes(head[:2]) in _UTF16_BOMS:
        return None
    shape = sniff_csv(head[:SNIFF_BYTES], complete=file.size <= SNIFF_BYTES, where=str(file))
    _normalised_names(file, shape.names)
    if map_columns(shape.names).symbol is not None:
        return None
    lines = max(1, head.count(b"\n"))
    estimate = max(1, round(file.size * lines / max(1, len(head))))
    return {_fallback_symbol(file, shape): estimate}


def _read_head(file: SourceFile, settings: StorageSettings | None, size: int) -> bytes:
    """The first ``size`` bytes of a file (one range request on S3)."""
    from monolith.filesystems import arrow_filesystem

    fs, path = arrow_filesystem(file.uri, settings)
    try:
        with fs.open_input_file(path) as handle:
            return handle.read(size)
    except OSError as exc:
        raise DataError(f"{file}: cannot be read: {str(exc).strip().splitlines()[0]}") from None


# --------------------------------------------------------------------------------------------
# Reading one file


def _read_table(
    path: SourceFile, data: bytes | bytearray
) -> tuple[pa.Table, CsvShape | None, str | None]:
    """The file as an Arrow table, how its CSV was laid out, and its encoding if not UTF-8."""
    if path.format == "csv":
        data, shape, encoding = _csv_shape(path, data)
        return _parse_csv(path, data, shape), shape, encoding
    if not data:
        raise DataError(f"{path}: is empty (0 bytes)")
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as parquet: {exc}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: holds no rows (columns {table.column_names})")
    return table, None, None


def _csv_shape(
    path: SourceFile, data: bytes | bytearray
) -> tuple[bytes | bytearray, CsvShape, str | None]:
    """UTF-8 bytes, how the CSV is laid out (from its first ``SNIFF_BYTES``), the encoding."""
    if not data:
        raise DataError(f"{path}: is empty (0 bytes)")
    encoding = None
    if bytes(data[:2]) in _UTF16_BOMS:
        # MetaTrader exports UTF-16; pyarrow reads UTF-8 only.
        try:
            data = bytes(data).decode("utf-16").encode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: starts like UTF-16 but is not: {exc}") from None
        encoding = "utf-16"
    head = bytes(data[:SNIFF_BYTES])
    shape = sniff_csv(head, complete=len(data) <= SNIFF_BYTES, where=str(path))
    return data, shape, encoding


def _parse_csv(
    path: SourceFile,
    data: bytes | bytearray,
    shape: CsvShape,
    include: list[str] | None = None,
) -> pa.Table:
    # The system allocator returns freed blocks to the OS; Arrow's default pool keeps them,
    # which would inflate the process's peak memory for the rest of the pipeline.
    pool = pa.system_memory_pool()
    try:
        table = pv.read_csv(
            pa.BufferReader(data),
            # The names come from the sniff, so the lines above the first data row (banner,
            # header, yfinance's extra header rows) are all skipped as lines.
            read_options=pv.ReadOptions(
                use_threads=False,
                skip_rows=shape.skip_rows + shape.header_rows,
                column_names=list(shape.names),
            ),
            parse_options=pv.ParseOptions(delimiter=shape.delimiter),
            convert_options=pv.ConvertOptions(
                null_values=_CSV_NULLS, strings_can_be_null=True, include_columns=include
            ),
            memory_pool=pool,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as csv: {exc}") from None
    if table.num_rows == 0:
        raise DataError(
            f"{path}: has a header ({', '.join(shape.names)}; line {shape.skip_rows + 1}) but "
            "no data rows"
        )
    return table


def _parquet_file(file: SourceFile, settings: StorageSettings | None) -> pq.ParquetFile:
    """A Parquet file opened for its footer, local or on S3 (range requests): only the footer,
    and then the columns asked for, are read."""
    if file.size == 0:
        raise DataError(f"{file}: is empty (0 bytes)")
    try:
        if is_s3_uri(file.uri):
            from monolith.filesystems import arrow_filesystem

            fs, path = arrow_filesystem(file.uri, settings)
            return pq.ParquetFile(fs.open_input_file(path))
        return pq.ParquetFile(file.uri)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{file}: cannot be read as parquet: {exc}") from None


def _normalised_names(path: SourceFile, names: list[str] | tuple[str, ...]) -> list[str]:
    """Names as compared (see ``layouts.normalise_name``); two that compare equal are refused."""
    normalised = [normalise_name(name) for name in names]
    seen: dict[str, str] = {}
    for original, name in zip(names, normalised, strict=True):
        if name in seen:
            raise DataError(
                f"{path}: columns {seen[name]!r} and {original!r} are the same name once case, "
                "spaces, <> and trailing * are ignored; rename one"
            )
        seen[name] = original
    return normalised


def _layout(names: list[str]) -> str:
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


def _fallback_symbol(path: SourceFile, shape: CsvShape | None) -> str:
    """The one symbol of a file without a symbol column: what names it inside, else outside."""
    if shape is not None and shape.ticker:
        return shape.ticker
    # Named by its hive folder (symbol=BTCUSDT/...) or else by the file.
    return path.symbol_hint or path.stem


def _shape_actions(path: SourceFile, shape: CsvShape | None, encoding: str | None) -> list[str]:
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


def _report_adjustments(
    frame: pd.DataFrame,
    parsed: list[_FileFrame],
    per_symbol: dict[str, dict[str, Any]],
    by_symbol: dict[str, list[str]],
    actions: list[str],
) -> None:
    """Each symbol's price adjustment, and split-sized jumps left in its prices."""
    for p in parsed:
        for symbol, column in p.adjusted.items():
            if symbol in per_symbol:
                per_symbol[symbol]["price_adjustment"] = f"OHLCV by {column!r}"
    if frame.empty:
        return
    from monolith.data.splits import symbol_blocks

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


def _adjusted(out: _FileFrame, mapped: ColumnMap, by_original: dict, where: _Where, adjust: str):
    """Scale the file's OHLCV by its adjusted close (``adjust == "auto"``); report either way."""
    column = mapped.adjusted_close
    name = out.entry["name"]
    if adjust == "none":
        out.actions.append(f"{name}: {column!r} not applied (data.adjust: none): raw prices")
        return
    done = adjust_prices(out.frame, _numeric(where, column, by_original[column]))
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


def _read_file(
    path: SourceFile,
    file_index: int,
    settings: StorageSettings | None = None,
    symbols: frozenset[str] | None = None,
    adjust: str = "auto",
) -> _FileFrame:
    data, sha = read_source(path, settings)
    table, shape, encoding = _read_table(path, data)
    where = _Where(path, shape.first_data_line if shape is not None else None)
    names = _normalised_names(path, table.column_names)
    columns = {name: table.column(i) for i, name in enumerate(names)}
    originals = dict(zip(names, table.column_names, strict=True))
    by_original = {name: table.column(i) for i, name in enumerate(table.column_names)}
    mapped = map_columns(table.column_names)
    layout = _layout(names)

    entry: dict[str, Any] = {
        "path": path.uri,
        "name": path.name,
        "format": path.format,
        "sha256": sha,
        "bytes": len(data),
        "rows": table.num_rows,
        "layout": layout,
    }
    if encoding is not None:
        entry["encoding"] = encoding
    if shape is not None:
        entry.update(shape.report())
    out = _FileFrame(entry=entry, frame=pd.DataFrame(), passthrough=[])
    out.actions.extend(_shape_actions(path, shape, encoding))
    n = table.num_rows
    if layout == "cryptodatadownload":
        time_name = originals["unix" if "unix" in columns else "unix timestamp"]
        ts = _epoch_to_ns(where, time_name, by_original[time_name])
        volume_name = originals[_cdd_volume_column(columns, names)]
        mismatches = _cdd_date_mismatches(columns.get("date"), ts)
        entry["date_mismatches"] = mismatches
        if mismatches:
            out.actions.append(
                f"{path.name}: {mismatches} row(s) have a 'date' that disagrees with 'unix'; "
                "'unix' was used as the time of the bar"
            )
        sources = {**{p: originals[p] for p in PRICE_COLUMNS}, "volume": volume_name}
        used = {time_name, mapped.symbol, *sources.values()}
    elif layout == "seed":
        ts = _timestamps_to_ns(where, originals["timestamp"], columns["timestamp"])
        sources = {c: originals[c] for c in OHLCV_COLUMNS}
        used = set(table.column_names)
    else:
        _require_generic(path, mapped, table.column_names)
        ts, time_names = _generic_times(where, mapped, by_original, table.column_names)
        sources = {p: getattr(mapped, p) for p in PRICE_COLUMNS}
        used = {*time_names, mapped.symbol, *sources.values()}
        if mapped.adjusted_close is not None and adjust != "none":
            used.add(mapped.adjusted_close)
        entry["timestamp_column"] = time_names[0] if len(time_names) == 1 else time_names
        if mapped.unnamed is not None:
            out.actions.append(
                f"{path.name}: the unnamed column {mapped.unnamed!r} (a pandas index) was "
                "taken as the time of the bar"
            )
        elif len(time_names) == 2:
            out.actions.append(
                f"{path.name}: the time of the bar is {time_names[0]!r} and {time_names[1]!r} "
                "combined"
            )
        if mapped.close_from_price:
            out.actions.append(f"{path.name}: {mapped.close!r} taken as the close")

    symbol = _symbols(
        where,
        None if mapped.symbol is None else by_original[mapped.symbol],
        n,
        _fallback_symbol(path, shape),
    )
    frame = pd.DataFrame({"timestamp": ts, "symbol": symbol})
    for name in PRICE_COLUMNS:
        frame[name] = _numeric(where, sources[name], by_original[sources[name]])
    if layout == "generic":
        volume, volume_name, note = _volume(where, mapped, by_original)
        frame["volume"] = volume
        if note:
            out.actions.append(f"{path.name}: {note}")
        used.add(volume_name)
    else:
        volume_name = sources["volume"]
        frame["volume"] = _numeric(where, volume_name, by_original[volume_name], suffixes=True)
    entry["volume_column"] = volume_name
    out.frame = frame
    if layout == "generic" and mapped.adjusted_close is not None:
        _adjusted(out, mapped, by_original, where, adjust)
    if layout == "seed":
        seed_used = {"timestamp", "symbol", *OHLCV_COLUMNS}
        canonical = {c.lower(): c for c in TECHNICAL_COLUMNS}
        for name in names:
            if name in seed_used:
                continue
            target = canonical.get(
                name, "llm_embedding" if name == "llm_embedding" else originals[name]
            )
            if target == "llm_embedding":
                frame[target] = _embeddings(where, originals[name], columns[name])
            elif (
                target in TECHNICAL_COLUMNS
                or target in SEED_NUMERIC_EXTRAS
                or name.startswith("mcp_feature_")
            ):
                frame[target] = _numeric(where, originals[name], columns[name])
            else:
                frame[target] = columns[name].to_pandas()
            out.passthrough.append(target)
    dropped = [c for c in table.column_names if c not in used]
    if dropped:
        out.actions.append(f"{path.name} ({layout} layout): ignored column(s) {dropped}")
    frame["_file"] = np.int32(file_index)
    frame["_row"] = np.arange(n, dtype=np.int64)
    if symbols is not None:
        frame = frame.loc[frame["symbol"].isin(symbols).to_numpy()].reset_index(drop=True)
    out.frame = frame
    return out


def _require_generic(path: SourceFile, mapped: ColumnMap, found: list[str]) -> None:
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


def _generic_times(
    where: _Where, mapped: ColumnMap, by_original: dict[str, pa.ChunkedArray], found: list[str]
) -> tuple[np.ndarray, list[str]]:
    """The time of each bar as UTC ns, and the column(s) it came from."""
    if mapped.date_part is not None and _is_time_of_day(by_original[mapped.time_part]):
        day = _timestamps_to_ns(where, mapped.date_part, by_original[mapped.date_part])
        not_midnight = day % _NS_PER_DAY != 0
        if not_midnight.any():
            index = int(np.flatnonzero(not_midnight)[0])
            raise DataError(
                f"{where}: column {mapped.date_part!r}, {where.row(index)}: holds a time of "
                f"day too ({by_original[mapped.date_part][index].as_py()!r}), so it cannot be "
                f"combined with the time of day in {mapped.time_part!r}"
            )
        moment = _time_of_day_ns(where, mapped.time_part, by_original[mapped.time_part])
        return day + moment, [mapped.date_part, mapped.time_part]
    if mapped.time is not None:
        return _timestamps_to_ns(where, mapped.time, by_original[mapped.time]), [mapped.time]
    # A pandas index written without a name: times only if it holds times. Its integers
    # are a row counter (0, 1, 2, ...) unless they are epochs of this century.
    name = mapped.unnamed
    values = by_original[name]
    numeric = pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
    low = pc.min(values).as_py() if numeric else None
    try:
        if numeric and (low is None or low < 1e9):
            raise DataError(f"{where.row(0)} holds {values[0].as_py()!r}, a row number")
        return _timestamps_to_ns(where, name, values), [name]
    except DataError as exc:
        reason = str(exc).removeprefix(f"{where}: ")
        raise DataError(
            f"{where}: missing required column(s) ['timestamp']: no column is named as a time "
            f"({'/'.join(TIMESTAMP_ALIASES)}) and the unnamed column {name!r} does not hold "
            f"times ({reason}); found {found}"
        ) from None


def _volume(
    where: _Where, mapped: ColumnMap, by_original: dict[str, pa.ChunkedArray]
) -> tuple[np.ndarray, str, str | None]:
    """The volume, the column it came from, and a note when there was a choice to make.

    MetaTrader writes a real volume (``<VOL>``) and a tick volume (``<TICKVOL>``, price changes
    per bar); the real one is zero for most forex brokers, and then the tick volume is the
    only measure of activity there is.
    """
    tick = mapped.tick_volume
    if mapped.volume is not None:
        real = _numeric(where, mapped.volume, by_original[mapped.volume], suffixes=True)
        if tick is None:
            return real, mapped.volume, None
        if np.any(np.isfinite(real) & (real != 0)):
            return (
                real,
                mapped.volume,
                f"volume from {mapped.volume!r}; tick volume {tick!r} ignored",
            )
    assert tick is not None  # _require_generic refused a file with neither
    why = f"{mapped.volume!r} is all zero" if mapped.volume else "there is no real volume"
    note = f"volume from the tick volume {tick!r} (price changes per bar): {why}"
    return _numeric(where, tick, by_original[tick]), tick, note


def _cdd_volume_column(columns: dict[str, pa.ChunkedArray], names: list[str]) -> str:
    """The base-asset volume column (``Volume BTC`` for BTC/USDT); the quote volume is ignored."""
    volume_names = [n for n in names if n.startswith("volume ")]
    symbol = columns.get("symbol")
    if symbol is not None and len(symbol) > 0:
        first = symbol[0].as_py()
        if isinstance(first, str) and "/" in first:
            candidate = "volume " + first.split("/")[0].strip().lower()
            if candidate in volume_names:
                return candidate
    # CryptoDataDownload writes the base volume first.
    return volume_names[0]


def _cdd_date_mismatches(date: pa.ChunkedArray | None, ts_ns: np.ndarray) -> int:
    """Rows whose ``date`` text disagrees with ``unix`` (both of the export's formats)."""
    if date is None or not pa.types.is_string(date.type):
        return 0
    parsed = None
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %I-%p"):
        attempt = pc.strptime(date, format=fmt, unit="s", error_is_null=True)
        parsed = attempt if parsed is None else pc.coalesce(parsed, attempt)
    seconds = parsed.cast(pa.int64()).to_numpy(zero_copy_only=False)
    valid = ~pc.is_null(parsed).to_numpy(zero_copy_only=False)
    # An unparseable date disagrees too; only a missing one is no evidence either way.
    present = ~pc.is_null(date).to_numpy(zero_copy_only=False)
    expected = ts_ns // 1_000_000_000
    return int(np.count_nonzero(present & (~valid | (seconds != expected))))


def _epoch_to_ns(path: _Where, column: str, values: pa.ChunkedArray) -> np.ndarray:
    """Epoch numbers to int64 ns; the unit is decided per value by magnitude.

    Real exports mix units in one column (seconds in old rows, milliseconds in new ones), so a
    single unit per column would be wrong. Below 1e11 is seconds (up to year 5138), below
    1e14 milliseconds, below 1e17 microseconds, above that nanoseconds.
    """
    numbers = _numeric(path, column, values)
    bad = ~np.isfinite(numbers)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: column {column!r}, {path.row(index)}: unparseable timestamp "
            f"{values[index].as_py()!r}"
        )
    magnitude = np.abs(numbers)
    factor = np.where(
        magnitude < 1e11,
        1_000_000_000,
        np.where(magnitude < 1e14, 1_000_000, np.where(magnitude < 1e17, 1_000, 1)),
    ).astype(np.int64)
    if np.all(numbers == np.floor(numbers)) and magnitude.max(initial=0) < 2**62:
        # Integral epochs stay exact in integer arithmetic.
        return numbers.astype(np.int64) * factor
    return np.round(numbers * factor).astype(np.int64)


def _yyyymmdd_to_ns(path: _Where, column: str, values: pa.ChunkedArray) -> np.ndarray | None:
    """Dates written as numbers (``20200102``: Stooq, MetaTrader ``<DATE>``), else None.

    Only in a column named as a date: as epoch seconds these would all fall in 1970.
    """
    numbers = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if (
        not len(numbers)
        or not np.all(np.isfinite(numbers))
        or numbers.min() < 1900_01_01
        or numbers.max() > 2100_12_31
        or not np.all(numbers == np.floor(numbers))
    ):
        return None
    text = pd.Series(numbers.astype(np.int64)).astype(str)
    stamps = pd.to_datetime(text, format="%Y%m%d", utc=True, errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: column {column!r}, {path.row(index)}: {text.iloc[index]!r} is not a date "
            "(read as yyyymmdd)"
        )
    return pd.DatetimeIndex(stamps).as_unit("ns").asi8


def _timestamps_to_ns(path: _Where, column: str, values: pa.ChunkedArray) -> np.ndarray:
    """Any timestamp column (epoch numbers, Arrow timestamps/dates, text) to UTC ns.

    Text is ISO 8601 or one of the formats ``layouts.time_formats`` recognises from the first
    value; naive times are taken as UTC.
    """
    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        if "date" in alias_key(column):
            days = _yyyymmdd_to_ns(path, column, values)
            if days is not None:
                return days
        return _epoch_to_ns(path, column, values)
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        series = pd.Series(values.to_pandas())
        if series.isna().any():
            index = int(np.flatnonzero(series.isna().to_numpy())[0])
            raise DataError(f"{path}: column {column!r}, {path.row(index)}: missing timestamp")
        stamps = pd.to_datetime(series)
        stamps = (
            stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
        )
        return pd.DatetimeIndex(stamps).as_unit("ns").asi8
    raw = pd.Series(values.to_pandas(), dtype=object)
    present = raw.notna().to_numpy()
    first = int(np.argmax(present)) if present.any() else None
    # Epoch numbers as text: checking every value costs a second per million rows, so only
    # when the first value is a number (all of them being numbers implies it).
    if first is not None and pd.to_numeric(raw.iloc[[first]], errors="coerce").notna().all():
        numeric = pd.to_numeric(raw, errors="coerce")
        if numeric.notna().all():
            numbers = numeric.to_numpy(float)
            return _epoch_to_ns(path, column, pa.chunked_array([pa.array(numbers)]))
    formats = time_formats(str(raw.iloc[first])) if first is not None else ()
    if formats:
        return _formatted_to_ns(path, column, raw, formats)
    stamps = pd.to_datetime(raw, utc=True, format="ISO8601", errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: column {column!r}, {path.row(index)}: unparseable timestamp "
            f"{raw.iloc[index]!r} (expected epoch seconds/milliseconds or ISO 8601)"
        )
    return pd.DatetimeIndex(stamps).as_unit("ns").asi8


def _formatted_to_ns(
    path: _Where, column: str, raw: pd.Series, formats: tuple[str, ...]
) -> np.ndarray:
    """Text times in one of ``formats`` to UTC ns; the format must read every value.

    Two formats are day-first against month-first: when both read every value (and disagree),
    the file does not say which it is, and a guess would be wrong for half the world.
    """
    present = raw.notna().to_numpy()
    first = str(raw.iloc[int(np.argmax(present))])
    readings: list[tuple[str, pd.Series]] = []
    failures: list[tuple[str, int]] = []
    for fmt in formats:
        stamps = pd.to_datetime(raw, format=fmt, utc=True, errors="coerce")
        bad = stamps.isna().to_numpy() & present
        if bad.any():
            failures.append((fmt, int(np.flatnonzero(bad)[0])))
        else:
            readings.append((fmt, stamps))
    if not readings:
        fmt, index = failures[0]
        raise DataError(
            f"{path}: column {column!r}, {path.row(index)}: unparseable timestamp "
            f"{raw.iloc[index]!r} (expected {fmt}, the format of the first value {first!r})"
        )
    if len(readings) > 1 and not readings[0][1].equals(readings[1][1]):
        raise DataError(
            f"{path}: column {column!r}: every value reads both as {readings[0][0]} and as "
            f"{readings[1][0]} (first {first!r}), so day and month cannot be told apart; write "
            "the dates as yyyy-mm-dd"
        )
    if not present.all():
        index = int(np.flatnonzero(~present)[0])
        raise DataError(f"{path}: column {column!r}, {path.row(index)}: missing timestamp")
    return pd.DatetimeIndex(readings[0][1]).as_unit("ns").asi8


def _is_time_of_day(values: pa.ChunkedArray) -> bool:
    """A column of times of day (``17:00``, ``170000``), not of full timestamps."""
    kind = values.type
    if pa.types.is_time(kind):
        return True
    if pa.types.is_integer(kind):
        low, high = pc.min(values).as_py(), pc.max(values).as_py()
        return low is not None and low >= 0 and high <= 23_59_59
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        present = pc.drop_null(values)
        return len(present) > 0 and time_of_day_format(str(present[0].as_py())) is not None
    return False


def _time_of_day_ns(path: _Where, column: str, values: pa.ChunkedArray) -> np.ndarray:
    """Times of day (Arrow time, ``HHMMSS`` numbers or text) as ns since midnight."""
    if pc.any(pc.is_null(values)).as_py():
        index = int(np.flatnonzero(pc.is_null(values).to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{path}: column {column!r}, {path.row(index)}: missing time of day")
    kind = values.type
    if pa.types.is_time(kind):
        per_unit = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}[kind.unit]
        width = pa.int32() if pa.types.is_time32(kind) else pa.int64()
        ticks = values.cast(width).to_numpy(zero_copy_only=False).astype(np.int64)
        return ticks * per_unit
    if pa.types.is_integer(kind):
        number = values.to_numpy(zero_copy_only=False).astype(np.int64)
        hours, minutes, seconds = number // 10_000, number // 100 % 100, number % 100
        bad = (hours > 23) | (minutes > 59) | (seconds > 59)
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path}: column {column!r}, {path.row(index)}: {int(number[index])} is not a "
                "time of day (read as HHMMSS)"
            )
        return ((hours * 60 + minutes) * 60 + seconds) * 1_000_000_000
    raw = pd.Series(values.to_pandas(), dtype=object)
    fmt = time_of_day_format(str(raw.iloc[0]))
    stamps = pd.to_datetime(raw, format=fmt, errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: column {column!r}, {path.row(index)}: {raw.iloc[index]!r} is not a time "
            f"of day (expected {fmt}, the format of the first value)"
        )
    midnight = pd.Timestamp("1900-01-01")
    return (pd.DatetimeIndex(stamps) - midnight).as_unit("ns").asi8


def _numeric(
    path: _Where, column: str, values: pa.ChunkedArray, *, suffixes: bool = False
) -> np.ndarray:
    """A numeric column as float64; nulls become NaN (counted later), text is an error.

    Text numbers may carry thousands separators, and with ``suffixes`` K/M/B multipliers
    (``layouts.parse_numbers``).
    """
    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind):
        return values.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    if pa.types.is_boolean(kind) or pa.types.is_decimal(kind):
        return values.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    raw = pd.Series(values.to_pandas(), dtype=object)
    numbers = parse_numbers(raw, suffixes=suffixes)
    bad = np.isnan(numbers) & raw.notna().to_numpy()
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: column {column!r}, {path.row(index)}: non-numeric value {raw.iloc[index]!r}"
        )
    return numbers


def _symbols(path: _Where, values: pa.ChunkedArray | None, n: int, fallback: str) -> pd.Series:
    """The symbol column as Arrow-backed strings (no Python object per row).

    A file without a symbol column holds one instrument, named ``fallback``.
    """
    if values is None:
        return pd.Series(pa.repeat(pa.scalar(fallback), n).to_pandas()).astype(str)
    series = pd.Series(values.to_pandas())
    missing = series.isna().to_numpy()
    if missing.any():
        index = int(np.flatnonzero(missing)[0])
        raise DataError(f"{path}: column 'symbol', {path.row(index)}: missing symbol")
    return series.astype(str).str.strip()


def _embeddings(path: _Where, column: str, values: pa.ChunkedArray) -> pd.Series:
    """``llm_embedding`` as lists of floats of one width, every value finite."""
    raw = values.to_pylist()
    rows: list[list[float]] = []
    width = None
    for index, item in enumerate(raw):
        try:
            vector = json.loads(item) if isinstance(item, str) else item
            floats = [float(x) for x in vector]
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{path}: column {column!r}, {path.row(index)}: not a list of numbers "
                f"({exc}): {str(item)[:80]!r}"
            ) from None
        if width is None:
            width = len(floats)
        if len(floats) != width or not np.all(np.isfinite(floats)):
            problem = (
                f"width {len(floats)} differs from {width} in the first row"
                if len(floats) != width
                else "holds a non-finite value"
            )
            raise DataError(f"{path}: column {column!r}, {path.row(index)}: embedding {problem}")
        rows.append(floats)
    return pd.Series(rows, dtype=object)


def _common_passthrough(parsed: list[_FileFrame]) -> list[str]:
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


# --------------------------------------------------------------------------------------------
# Cleaning

# Each rule that removes bars, and how an error message names it.
_REMOVAL_RULES = (
    ("nan_inf_rows", "with NaN/inf in OHLCV"),
    ("non_positive_prices", "with a non-positive price"),
    ("negative_volume", "with negative volume"),
    ("impossible_bars", "impossible (high/low not bracketing open/close)"),
    ("duplicates_removed", "duplicated timestamps"),
    ("bad_ticks", "bad ticks"),
)


def _examples(
    picked: np.ndarray,
    total: int,
    columns: dict[str, np.ndarray],
    files: list[dict[str, Any]],
) -> str:
    """A few dropped bars, by time and by place in their file, so a person can look them up.

    ``picked`` are row positions in the combined frame's ``columns`` (timestamp, _file, _row).
    """
    parts = []
    for i in picked[:_EXAMPLES]:
        entry = files[int(columns["_file"][i])]
        when = pd.Timestamp(int(columns["timestamp"][i]), tz="UTC").isoformat()
        row = int(columns["_row"][i])
        first_line = entry.get("first_data_line")  # CSV only: lines above it were skipped
        label = f"line {row + first_line} (data row {row + 1})" if first_line else f"row {row + 1}"
        parts.append(f"{when} ({entry['name']} {label})")
    more = "" if total <= _EXAMPLES else ", ..."
    return ", ".join(parts) + more


def _clean(
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
    # Cleaning works on plain arrays and a shrinking row selection (positions into ``frame``);
    # every kept column is gathered once at the end, so no intermediate frame is copied.
    codes, names = pd.factorize(frame["symbol"], sort=True)
    k = len(names)
    columns = {
        "timestamp": frame["timestamp"].to_numpy(),
        "_file": frame["_file"].to_numpy(),
        "_row": frame["_row"].to_numpy(),
    }

    # Actions are kept per symbol and listed in symbol order at the end, so the report reads
    # the same however the symbols were grouped (one process, or groups over a cluster).
    symbol_actions: list[list[str]] = [[] for _ in range(k)]

    def per_symbol(mask: np.ndarray, code: np.ndarray) -> np.ndarray:
        return np.bincount(code[mask], minlength=k)

    def examples(positions: np.ndarray, mask: np.ndarray) -> str:
        picked = positions[mask]
        return _examples(picked, len(picked), columns, files)

    counts: dict[str, np.ndarray] = {"rows_in": np.bincount(codes, minlength=k)}
    read_codes = codes  # per row read; ``codes`` follows the kept rows below
    o, h, lo, c, v = (frame[name].to_numpy(dtype=np.float64) for name in OHLCV_COLUMNS)

    # Row-level validity: each bar counted under the first rule it breaks.
    finite = [np.isfinite(x) for x in (o, h, lo, c, v)]
    nan_inf = ~np.logical_and.reduce(finite)
    with np.errstate(invalid="ignore"):
        non_positive = ~nan_inf & ((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0))
        negative_volume = ~nan_inf & ~non_positive & (v < 0)
        impossible = (
            ~nan_inf
            & ~non_positive
            & ~negative_volume
            & ((h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (h < lo))
        )
    rules = (
        ("nan_inf_rows", nan_inf, "with NaN/inf in OHLCV"),
        ("non_positive_prices", non_positive, "with a non-positive price"),
        ("negative_volume", negative_volume, "with negative volume"),
        ("impossible_bars", impossible, "impossible (high/low do not bracket open/close)"),
    )
    every_row = np.arange(len(frame))
    for key, mask, what in rules:
        counts[key] = per_symbol(mask, codes)
        for s in np.flatnonzero(counts[key]):
            detail = ""
            rows = mask & (codes == s)
            if key == "nan_inf_rows":
                bad_cols = [
                    f"{col}: {int(n)}"
                    for col, n in zip(
                        OHLCV_COLUMNS, (np.count_nonzero(~f[rows]) for f in finite), strict=True
                    )
                    if n
                ]
                detail = f" (per column {', '.join(bad_cols)})"
            symbol_actions[s].append(
                f"{names[s]}: dropped {counts[key][s]} bar(s) {what}{detail}: "
                f"{examples(every_row, rows)}"
            )
    keep = ~(nan_inf | non_positive | negative_volume | impossible)
    del finite, nan_inf, non_positive, negative_volume, impossible
    kept = np.flatnonzero(keep)
    del keep

    # Deterministic order: symbol, time, then file order, so "first occurrence" is reproducible.
    ts_all = columns["timestamp"]
    order = np.lexsort((columns["_row"][kept], columns["_file"][kept], ts_all[kept], codes[kept]))
    sel = kept[order]
    del kept, order
    sel_codes = codes[sel]
    ts = ts_all[sel]
    same_as_previous = np.zeros(len(sel), dtype=bool)
    same_as_previous[1:] = (sel_codes[1:] == sel_codes[:-1]) & (ts[1:] == ts[:-1])
    counts["duplicates_removed"] = per_symbol(same_as_previous, sel_codes)
    if same_as_previous.any():
        # Compare each duplicate with the occurrence that is kept (the first of its run).
        kept_index = np.maximum.accumulate(np.where(same_as_previous, 0, np.arange(len(sel))))
        dup = np.flatnonzero(same_as_previous)
        first = sel[kept_index[dup]]
        differs = np.zeros(len(dup), dtype=bool)
        for x in (o, h, lo, c, v):
            differs |= x[sel[dup]] != x[first]
        conflicting = np.zeros(len(sel), dtype=bool)
        conflicting[dup] = differs
        del kept_index, dup, first, differs
    else:
        conflicting = same_as_previous
    counts["duplicates_conflicting"] = per_symbol(conflicting, sel_codes)
    for s in np.flatnonzero(counts["duplicates_removed"]):
        symbol_actions[s].append(
            f"{names[s]}: removed {counts['duplicates_removed'][s]} duplicated timestamp(s), "
            f"keeping the first occurrence in file order; {counts['duplicates_conflicting'][s]} "
            "of them differed from the kept bar in OHLCV values"
        )
    if same_as_previous.any():
        sel = sel[~same_as_previous]
        sel_codes = codes[sel]
    del same_as_previous, conflicting

    # Bad ticks: a range far beyond the symbol's typical range, judged on clean bars only.
    log_range = np.log(h[sel] / lo[sel])
    median_range = pd.Series(log_range).groupby(sel_codes).median().reindex(range(k)).to_numpy()
    threshold = bad_tick_range_multiple * median_range[sel_codes]
    bad_tick = (log_range > threshold) & (threshold > 0)
    del log_range, threshold
    counts["bad_ticks"] = per_symbol(bad_tick, sel_codes)
    for s in np.flatnonzero(counts["bad_ticks"]):
        symbol_actions[s].append(
            f"{names[s]}: dropped {counts['bad_ticks'][s]} bad tick(s) whose log(high/low) "
            f"exceeds {bad_tick_range_multiple:g} x the median {median_range[s]:.5f}: "
            f"{examples(sel, bad_tick & (sel_codes == s))}"
        )
    if bad_tick.any():
        sel = sel[~bad_tick]
        sel_codes = codes[sel]
    del bad_tick
    codes = sel_codes
    ts = ts_all[sel]

    # Gaps against the inferred bar interval (median step); counted, never filled.
    counts["rows_out"] = np.bincount(codes, minlength=k)
    step = np.diff(ts)
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
    counts["gaps"] = per_symbol(is_gap, step_code)
    missing = np.where(is_gap, np.round(step_s / interval_per_step) - 1, 0).astype(np.int64)
    counts["missing_bars"] = np.bincount(step_code, weights=missing, minlength=k).astype(np.int64)
    counts["zero_volume_bars"] = per_symbol(v[sel] == 0, codes)
    del step, within, step_s, step_code, interval_per_step, is_gap, missing

    symbols: dict[str, dict[str, Any]] = {}
    first_index = np.searchsorted(codes, np.arange(k), side="left")
    last_index = np.searchsorted(codes, np.arange(k), side="right") - 1
    keys = (
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
    for s, name in enumerate(names):
        rows_out = int(counts["rows_out"][s])
        if rows_out < min_rows:
            file_ids = np.unique(columns["_file"][read_codes == s])
            sources = sorted({files[i]["name"] for i in file_ids})
            removed = [
                f"{int(counts[key][s])} {what}" for key, what in _REMOVAL_RULES if counts[key][s]
            ]
            why = f": removed {', '.join(removed)}" if removed else ""
            raise DataError(
                f"symbol {name!r} has {rows_out} row(s) after cleaning (of "
                f"{counts['rows_in'][s]} read from {sources or 'its file(s)'}){why}; at least "
                f"{min_rows} required"
            )
        entry: dict[str, Any] = {key: int(counts[key][s]) for key in keys}
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
    for s, per in enumerate(symbol_actions):
        actions.extend(per)
        if by_symbol is not None and per:
            by_symbol[str(names[s])] = per

    out = pd.DataFrame(
        {
            "timestamp": pd.DatetimeIndex(ts.view("datetime64[ns]"), tz="UTC"),
            # Arrow-backed strings taken from the sorted names: no Python object per row.
            "symbol": pd.Series(names).astype(str).array.take(codes),
        }
    )
    for name, values in zip(OHLCV_COLUMNS, (o, h, lo, c, v), strict=True):
        out[name] = values[sel]
    for name in passthrough:
        out[name] = frame[name].to_numpy()[sel]
    return out, symbols
