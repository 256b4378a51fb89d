"""Ingest: CSV/Parquet files in three layouts → one canonical frame and a cleaning report.

The canonical frame has ``timestamp`` (datetime64[ns, UTC]), ``symbol`` (str), ``open high low
close volume`` (float64), then any passthrough columns of a ready dataset, sorted by
(symbol, timestamp) on a RangeIndex.

Layouts are detected per file from its column names (case-insensitive, spaces stripped):

- ``cryptodatadownload``: ``unix,date,symbol,open,high,low,close,Volume <BASE>,Volume <QUOTE>,
  tradecount`` (Binance exports). ``unix`` is the truth for time; ``date`` is only cross-checked
  and the disagreements are counted.
- ``seed``: a ready dataset (``timestamp, symbol, OHLCV`` plus technical columns,
  ``llm_embedding``, ``mcp_feature_*``, ``hmm_regime``, ``level_sl``, ``level_tp``); the extra
  columns are validated and passed through.
- ``generic``: a timestamp column (epoch s/ms/us/ns or ISO strings), OHLCV and an optional
  symbol column (the file stem otherwise); other columns are dropped and the drop is reported.

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

from monolith.data.features import TECHNICAL_COLUMNS
from monolith.data.sources import SourceFile, read_source, resolve_sources
from monolith.errors import DataError
from monolith.storage import StorageSettings

logger = logging.getLogger(__name__)

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV_COLUMNS = (*PRICE_COLUMNS, "volume")
CANONICAL_COLUMNS = ("timestamp", "symbol", *OHLCV_COLUMNS)
# Searched in this order; the first present names the time column of a generic file.
TIMESTAMP_CANDIDATES = ("timestamp", "time", "datetime", "date", "open_time")
# Columns that make a file a ready dataset rather than bare OHLCV.
SEED_MARKERS = frozenset(
    {c.lower() for c in TECHNICAL_COLUMNS[5:]}
    | {"llm_embedding", "hmm_regime", "level_sl", "level_tp"}
)
SEED_NUMERIC_EXTRAS = ("hmm_regime", "level_sl", "level_tp")
DEFAULT_BAD_TICK_RANGE_MULTIPLE = 50.0

_CSV_NULLS = ["", "NULL", "null", "NaN", "nan", "NA", "N/A", "None", "none"]
# At most this many examples (time, file, line) are quoted per cleaning action.
_EXAMPLES = 3


@dataclass
class _FileFrame:
    """One file parsed into canonical columns plus provenance for messages."""

    entry: dict[str, Any]
    frame: pd.DataFrame  # canonical columns + passthrough + _file, _row
    passthrough: list[str]
    actions: list[str] = field(default_factory=list)


def read_market_data(
    source: str | Path | None = None,
    *,
    min_rows: int = 1,
    bad_tick_range_multiple: float = DEFAULT_BAD_TICK_RANGE_MULTIPLE,
    settings: StorageSettings | None = None,
    files: list[SourceFile] | None = None,
    symbols: frozenset[str] | None = None,
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

    Returns:
        The canonical frame and a JSON-serialisable report (files with SHA-256, per-symbol
        cleaning counts, human-readable actions: per file in file order, then per symbol in
        symbol order).

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
    parsed = [_read_file(file, index, settings, symbols) for index, file in enumerate(files)]
    passthrough = _common_passthrough(parsed)
    combined = pd.concat(
        [p.frame for p in parsed],
        ignore_index=True,
    )
    actions = [a for p in parsed for a in p.actions]
    frame, per_symbol = _clean(
        combined,
        passthrough=passthrough,
        files=[p.entry for p in parsed],
        min_rows=min_rows,
        bad_tick_range_multiple=bad_tick_range_multiple,
        actions=actions,
    )
    report = {"files": [p.entry for p in parsed], "symbols": per_symbol, "actions": actions}
    logger.info(
        "read %d rows of %d symbol(s) from %d file(s); %d cleaning action(s)",
        len(frame),
        len(per_symbol),
        len(files),
        len(actions),
    )
    return frame, report


# --------------------------------------------------------------------------------------------
# Reading one file


def _read_table(path: SourceFile, data: bytes | bytearray) -> pa.Table:
    # The system allocator returns freed blocks to the OS; Arrow's default pool keeps them,
    # which would inflate the process's peak memory for the rest of the pipeline.
    pool = pa.system_memory_pool()
    try:
        if path.format == "csv":
            return pv.read_csv(
                pa.BufferReader(data),
                read_options=pv.ReadOptions(use_threads=False),
                convert_options=pv.ConvertOptions(null_values=_CSV_NULLS, strings_can_be_null=True),
                memory_pool=pool,
            )
        return pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as {path.format}: {exc}") from None


def _row_label(path: SourceFile, index: int) -> str:
    """Where data row ``index`` (0-based) sits in the file, as a person would look for it."""
    if path.format == "csv":
        return f"line {index + 2} (data row {index + 1})"
    return f"row {index + 1}"


def _read_file(
    path: SourceFile,
    file_index: int,
    settings: StorageSettings | None = None,
    symbols: frozenset[str] | None = None,
) -> _FileFrame:
    data, sha = read_source(path, settings)
    table = _read_table(path, data)
    names = [name.strip().lower() for name in table.column_names]
    seen: dict[str, str] = {}
    for original, name in zip(table.column_names, names, strict=True):
        if name in seen:
            raise DataError(
                f"{path}: columns {seen[name]!r} and {original!r} are the same name once case "
                "and spaces are ignored; rename one"
            )
        seen[name] = original
    columns = {name: table.column(i) for i, name in enumerate(names)}
    originals = dict(zip(names, table.column_names, strict=True))

    if {"unix", *PRICE_COLUMNS} <= columns.keys() and any(n.startswith("volume ") for n in names):
        layout = "cryptodatadownload"
    elif {"timestamp", "symbol", *OHLCV_COLUMNS} <= columns.keys() and (
        SEED_MARKERS & columns.keys() or any(n.startswith("mcp_feature_") for n in names)
    ):
        layout = "seed"
    else:
        layout = "generic"

    entry: dict[str, Any] = {
        "path": path.uri,
        "name": path.name,
        "format": path.format,
        "sha256": sha,
        "bytes": len(data),
        "rows": table.num_rows,
        "layout": layout,
    }
    out = _FileFrame(entry=entry, frame=pd.DataFrame(), passthrough=[])
    n = table.num_rows
    if layout == "cryptodatadownload":
        ts = _epoch_to_ns(path, "unix", columns["unix"])
        volume_name = _cdd_volume_column(columns, names)
        symbol = _symbols(path, columns.get("symbol"), n)
        mismatches = _cdd_date_mismatches(columns.get("date"), ts)
        entry["date_mismatches"] = mismatches
        if mismatches:
            out.actions.append(
                f"{path.name}: {mismatches} row(s) have a 'date' that disagrees with 'unix'; "
                "'unix' was used as the time of the bar"
            )
        source_columns = {"volume": volume_name}
        dropped = [
            originals[c] for c in names if c not in {"unix", "symbol", *PRICE_COLUMNS, volume_name}
        ]
    else:
        required = (
            ["timestamp", "symbol", *OHLCV_COLUMNS] if layout == "seed" else list(OHLCV_COLUMNS)
        )
        time_name = next((c for c in TIMESTAMP_CANDIDATES if c in columns), None)
        missing = [c for c in required if c not in columns]
        if time_name is None:
            missing.insert(0, "timestamp (or one of " + "/".join(TIMESTAMP_CANDIDATES[1:]) + ")")
        if missing:
            raise DataError(
                f"{path}: missing required column(s) {missing}; found {list(table.column_names)}"
            )
        ts = _timestamps_to_ns(path, originals[time_name], columns[time_name])
        symbol = _symbols(path, columns.get("symbol"), n)
        source_columns = {"volume": "volume"}
        used = {time_name, "symbol", *OHLCV_COLUMNS}
        dropped = [] if layout == "seed" else [originals[c] for c in names if c not in used]

    frame = pd.DataFrame({"timestamp": ts, "symbol": symbol})
    for name in OHLCV_COLUMNS:
        col = source_columns.get(name, name)
        frame[name] = _numeric(path, originals[col], columns[col])
    if layout == "seed":
        used = {"timestamp", "symbol", *OHLCV_COLUMNS}
        canonical = {c.lower(): c for c in TECHNICAL_COLUMNS}
        for name in names:
            if name in used:
                continue
            target = canonical.get(
                name, "llm_embedding" if name == "llm_embedding" else originals[name]
            )
            if target == "llm_embedding":
                frame[target] = _embeddings(path, originals[name], columns[name])
            elif (
                target in TECHNICAL_COLUMNS
                or target in SEED_NUMERIC_EXTRAS
                or name.startswith("mcp_feature_")
            ):
                frame[target] = _numeric(path, originals[name], columns[name])
            else:
                frame[target] = columns[name].to_pandas()
            out.passthrough.append(target)
    if dropped:
        out.actions.append(f"{path.name} ({layout} layout): ignored column(s) {dropped}")
    frame["_file"] = np.int32(file_index)
    frame["_row"] = np.arange(n, dtype=np.int64)
    if symbols is not None:
        frame = frame.loc[frame["symbol"].isin(symbols).to_numpy()].reset_index(drop=True)
    out.frame = frame
    return out


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


def _epoch_to_ns(path: SourceFile, column: str, values: pa.ChunkedArray) -> np.ndarray:
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
            f"{path}: column {column!r}, {_row_label(path, index)}: unparseable timestamp "
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


def _timestamps_to_ns(path: SourceFile, column: str, values: pa.ChunkedArray) -> np.ndarray:
    """Any timestamp column (epoch numbers, Arrow timestamps/dates, ISO strings) to UTC ns.

    Naive times are taken as UTC: exchange data is published in UTC, and guessing a local
    zone would shift every bar.
    """
    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return _epoch_to_ns(path, column, values)
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        series = pd.Series(values.to_pandas())
        if series.isna().any():
            index = int(np.flatnonzero(series.isna().to_numpy())[0])
            raise DataError(
                f"{path}: column {column!r}, {_row_label(path, index)}: missing timestamp"
            )
        stamps = pd.to_datetime(series)
        stamps = (
            stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
        )
        return pd.DatetimeIndex(stamps).as_unit("ns").asi8
    raw = pd.Series(values.to_pandas(), dtype=object)
    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().all():
        return _epoch_to_ns(path, column, pa.chunked_array([pa.array(numeric.to_numpy(float))]))
    stamps = pd.to_datetime(raw, utc=True, format="ISO8601", errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: column {column!r}, {_row_label(path, index)}: unparseable timestamp "
            f"{raw.iloc[index]!r} (expected epoch seconds/milliseconds or ISO 8601)"
        )
    return pd.DatetimeIndex(stamps).as_unit("ns").asi8


def _numeric(path: SourceFile, column: str, values: pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64; nulls become NaN (counted later), text is an error."""
    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind):
        return values.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    if pa.types.is_boolean(kind) or pa.types.is_decimal(kind):
        return values.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    raw = pd.Series(values.to_pandas(), dtype=object)
    numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(numbers) & raw.notna().to_numpy()
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: column {column!r}, {_row_label(path, index)}: non-numeric value "
            f"{raw.iloc[index]!r}"
        )
    return numbers


def _symbols(path: SourceFile, values: pa.ChunkedArray | None, n: int) -> pd.Series:
    """The symbol column as Arrow-backed strings (no Python object per row)."""
    if values is None:
        # A file without a symbol column holds one instrument: named by its hive folder
        # (symbol=BTCUSDT/...) or else by the file.
        name = path.symbol_hint or path.stem
        return pd.Series(pa.repeat(pa.scalar(name), n).to_pandas()).astype(str)
    series = pd.Series(values.to_pandas())
    missing = series.isna().to_numpy()
    if missing.any():
        index = int(np.flatnonzero(missing)[0])
        raise DataError(f"{path}: column 'symbol', {_row_label(path, index)}: missing symbol")
    return series.astype(str).str.strip()


def _embeddings(path: SourceFile, column: str, values: pa.ChunkedArray) -> pd.Series:
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
                f"{path}: column {column!r}, {_row_label(path, index)}: not a list of numbers "
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
            raise DataError(
                f"{path}: column {column!r}, {_row_label(path, index)}: embedding {problem}"
            )
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
        label = (
            f"line {row + 2} (data row {row + 1})" if entry["format"] == "csv" else f"row {row + 1}"
        )
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
        if entry["gaps"]:
            symbol_actions[s].append(
                f"{name}: {entry['gaps']} gap(s) totalling {entry['missing_bars']} missing bar(s) "
                f"of {entry['interval_seconds']} s left unfilled (windows must not span them)"
            )
        if entry["zero_volume_bars"]:
            symbol_actions[s].append(f"{name}: kept {entry['zero_volume_bars']} zero-volume bar(s)")
    for per in symbol_actions:
        actions.extend(per)

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
