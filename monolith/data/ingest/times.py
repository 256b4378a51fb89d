"""Timestamp parsing: every way a bar's time is written, to int64 ns since the epoch, UTC.

Epoch numbers (the unit decided per value), ``yyyymmdd`` numbers, Arrow timestamps and dates,
text in ISO 8601 or in a format ``layouts.time_formats`` recognises, and a date column combined
with a time-of-day column. Times without a zone are taken as UTC.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from monolith.data.ingest.values import numeric
from monolith.data.ingest.where import Where
from monolith.data.layouts import (
    TIMESTAMP_ALIASES,
    ColumnMap,
    alias_key,
    time_formats,
    time_of_day_format,
)
from monolith.errors import DataError

_NS_PER_DAY = 86_400 * 1_000_000_000


def generic_times(
    where: Where, mapped: ColumnMap, by_original: dict[str, pa.ChunkedArray], found: list[str]
) -> tuple[np.ndarray, list[str]]:
    """The time of each bar as UTC ns, and the column(s) it came from."""
    if mapped.date_part is not None and _is_time_of_day(by_original[mapped.time_part]):
        day = timestamps_to_ns(where, mapped.date_part, by_original[mapped.date_part])
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
        return timestamps_to_ns(where, mapped.time, by_original[mapped.time]), [mapped.time]
    # A pandas index written without a name: times only if it holds times. Its integers
    # are a row counter (0, 1, 2, ...) unless they are epochs of this century.
    name = mapped.unnamed
    values = by_original[name]
    numeric = pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
    low = pc.min(values).as_py() if numeric else None
    try:
        if numeric and (low is None or low < 1e9):
            raise DataError(f"{where.row(0)} holds {values[0].as_py()!r}, a row number")
        return timestamps_to_ns(where, name, values), [name]
    except DataError as exc:
        reason = str(exc).removeprefix(f"{where}: ")
        raise DataError(
            f"{where}: missing required column(s) ['timestamp']: no column is named as a time "
            f"({'/'.join(TIMESTAMP_ALIASES)}) and the unnamed column {name!r} does not hold "
            f"times ({reason}); found {found}"
        ) from None


def cdd_date_mismatches(date: pa.ChunkedArray | None, ts_ns: np.ndarray) -> int:
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


def epoch_to_ns(path: Where, column: str, values: pa.ChunkedArray) -> np.ndarray:
    """Epoch numbers to int64 ns; the unit is decided per value by magnitude.

    Real exports mix units in one column (seconds in old rows, milliseconds in new ones), so a
    single unit per column would be wrong. Below 1e11 is seconds (up to year 5138), below
    1e14 milliseconds, below 1e17 microseconds, above that nanoseconds.
    """
    numbers = numeric(path, column, values)
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


def _yyyymmdd_to_ns(path: Where, column: str, values: pa.ChunkedArray) -> np.ndarray | None:
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
    stamps = _read_all(
        path, column, text, lambda v: f"{v!r} is not a date (read as yyyymmdd)", format="%Y%m%d"
    )
    return pd.DatetimeIndex(stamps).as_unit("ns").asi8


def timestamps_to_ns(path: Where, column: str, values: pa.ChunkedArray) -> np.ndarray:
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
        return epoch_to_ns(path, column, values)
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
            return epoch_to_ns(path, column, pa.chunked_array([pa.array(numbers)]))
    formats = time_formats(str(raw.iloc[first])) if first is not None else ()
    if formats:
        return _formatted_to_ns(path, column, raw, formats)
    stamps = _read_all(
        path,
        column,
        raw,
        lambda v: f"unparseable timestamp {v!r} (expected epoch seconds/milliseconds or ISO 8601)",
        format="ISO8601",
    )
    return pd.DatetimeIndex(stamps).as_unit("ns").asi8


def _formatted_to_ns(
    path: Where, column: str, raw: pd.Series, formats: tuple[str, ...]
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


def _time_of_day_ns(path: Where, column: str, values: pa.ChunkedArray) -> np.ndarray:
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
    stamps = _read_all(
        path,
        column,
        raw,
        lambda v: f"{v!r} is not a time of day (expected {fmt}, the format of the first value)",
        format=fmt,
        utc=False,
    )
    midnight = pd.Timestamp("1900-01-01")
    return (pd.DatetimeIndex(stamps) - midnight).as_unit("ns").asi8


def _read_all(
    path: Where,
    column: str,
    raw: pd.Series,
    problem: Callable[[object], str],
    *,
    format: str,
    utc: bool = True,
) -> pd.Series:
    """``raw`` read by ``pd.to_datetime`` in ``format``; the first value it cannot read (or a
    missing one) is refused, ``problem`` saying what is wrong with it."""
    stamps = pd.to_datetime(raw, format=format, utc=utc, errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: column {column!r}, {path.row(index)}: {problem(raw.iloc[index])}")
    return stamps
