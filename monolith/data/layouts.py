"""Layouts: how a market data file is laid out, decided from its first bytes and column names.

Pure functions, no I/O: ``ingest`` reads the bytes, asks here how they are laid out, then
parses the whole file with pyarrow's CSV reader (only the first ``SNIFF_BYTES`` are looked at
here, so a file of millions of rows costs the sniff nothing noticeable).

Accepted, per file (each choice made is written to the file's report entry):

- **Delimiter**: ``,`` ``;`` or tab, sniffed from the first lines.
- **Lines above the header**: banner text (CryptoDataDownload's ``https://www.CryptoDataDownload.com``),
  ``#`` comments and blank lines are skipped, counted and quoted in the report.
- **Multi-row header** of ``yf.download(...).to_csv()`` (yfinance since 2024): ``Price,Close,...`` /
  ``Ticker,AAPL,...`` / ``Date,,,,,``; the ticker row names the symbol. Several tickers side by
  side are refused (one ticker per file).
- **No header**, recognised by the column count and the first row:
  12 ``,`` columns: data.binance.vision klines (``open_time, open, high, low, close, volume,
  close_time, quote_volume, count, taker_buy_volume, taker_buy_quote_volume, ignore``);
  7 ``,`` columns starting with an epoch: Kraken OHLCVT (``time, open, high, low, close, volume,
  trades``); 7 ``,`` columns starting ``yyyy.mm.dd,HH:MM``: a MetaTrader history export
  (``date, time, open, high, low, close, volume``); 6 ``;`` columns starting
  ``yyyymmdd HHMMSS``: histdata.com ASCII bars (``date_time, open, high, low, close, volume``).
  Any other header-less file is refused (a guess could swap columns).
- **Column names** compare case-insensitively, without surrounding spaces, ``<...>`` brackets
  (MetaTrader ``<OPEN>``) or trailing ``*`` (Yahoo ``Close*``); ``_`` and space are the same.
  Aliases: ``o h l c v`` (Polygon), ``Open Price``/``Close Price``, ``Vol``/``Vol.``; ``Price``
  is the close when there is no close (Investing.com). ``Adj Close`` (also ``Adjusted Close``)
  is not the close: it adjusts OHLCV by its ratio to the close (``monolith.data.adjust``) unless
  ``data.adjust: none``, which reports it as unused.
- **Volume**: ``<VOL>``/``real_volume`` unless all zero, then the tick volume (``<TICKVOL>``,
  ``tick_volume``); text volumes such as ``1.23K``, ``4.5M``, ``2B`` are multiplied out and
  ``-`` is missing; prices may carry thousands separators (``"7,200.8"``).
- **Timestamp column**, first found of: ``timestamp``, ``unix timestamp``, ``unix``, ``open time``
  (Binance), ``datetime``, ``date time``, ``gmt time``, ``local time`` (Dukascopy), ``time``,
  ``date``, ``ts``, ``t`` (Polygon); ``date`` plus a ``time`` of day (MetaTrader ``<DATE>``,
  ``<TIME>``; Stooq) are combined. Without any of them, an unnamed first column (what
  ``DataFrame.to_csv()`` writes for a DatetimeIndex: ``""`` or ``Unnamed: 0``; ``__index_level_0__``
  in Parquet) is the time when it holds times.
- **Timestamp formats**: epoch s/ms/us/ns (decided per value), ISO 8601 with or without an
  offset (``+00:00``, ``Z``), ``dd.mm.yyyy HH:MM:SS.fff`` (Dukascopy, also with ``GMT+0200``),
  ``yyyy.mm.dd HH:MM`` (MetaTrader), ``yyyymmdd HHMMSS`` (histdata), ``yyyymmdd`` numbers in a
  date column (Stooq), ``mm/dd/yyyy`` or ``dd/mm/yyyy`` (Investing.com; the one that reads every
  value, refused when both do), ``Mon dd, yyyy``. Times without an offset are taken as UTC,
  whatever the source's own clock (MetaTrader servers often run at UTC+2/+3; histdata.com
  writes EST without daylight saving): guessing a zone would shift every bar silently.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from monolith.data.adjust import ADJUSTED_CLOSE_ALIASES
from monolith.errors import DataError

# Only this much of a file is sniffed; a header must start within it.
SNIFF_BYTES = 64 * 1024
# Tab and ';' win ties over ',': a file split on them may use ',' as a decimal mark inside
# values, while a ','-separated file rarely holds a tab or ';' on every line.
DELIMITERS = ("\t", ";", ",")
_DELIMITER_NAMES = {",": "','", ";": "';'", "\t": "tab"}
_QUOTED_CHARS = 80

# Searched in this order; the first present names the time column. Keys as ``alias_key`` makes
# them (lower case, ``_`` as space).
TIMESTAMP_ALIASES = (
    "timestamp",
    "unix timestamp",
    "unix",
    "open time",
    "datetime",
    "date time",
    "gmt time",
    "local time",
    "time",
    "date",
    "ts",
    "t",
)
PRICE_ALIASES = {
    "open": ("open", "o", "open price"),
    "high": ("high", "h", "high price"),
    "low": ("low", "l", "low price"),
    "close": ("close", "c", "close price"),
}
CLOSE_FALLBACK = ("price",)  # Investing.com: "Price" is the close
VOLUME_ALIASES = ("volume", "vol", "vol.", "v", "real volume")
TICK_VOLUME_ALIASES = ("tickvol", "tick volume", "tick vol")
SYMBOL_ALIASES = ("symbol", "ticker")
_UNNAMED = re.compile(r"(?:unnamed: ?\d+|__index_level_\d+__)?")


@dataclass(frozen=True)
class Headerless:
    """A header-less layout: recognised by delimiter, column count and its first row."""

    name: str
    what: str
    delimiter: str
    columns: tuple[str, ...]
    first_fields: tuple[re.Pattern[str], ...]  # what the first fields of a row look like
    note: str = ""  # what a person should know about its values


_EPOCH = re.compile(r"\d{9,19}(?:\.\d*)?")
HEADERLESS = (
    Headerless(
        "binance_kline",
        "a data.binance.vision kline file",
        ",",
        (
            "open_time",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "close_time",
            "quote_volume",
            "count",
            "taker_buy_volume",
            "taker_buy_quote_volume",
            "ignore",
        ),
        (_EPOCH,),
    ),
    Headerless(
        "kraken_ohlcvt",
        "a Kraken OHLCVT file",
        ",",
        ("time", "open", "high", "low", "close", "volume", "trades"),
        (_EPOCH,),
    ),
    Headerless(
        "metatrader",
        "a MetaTrader history export",
        ",",
        ("date", "time", "open", "high", "low", "close", "volume"),
        (re.compile(r"\d{4}\.\d{2}\.\d{2}"), re.compile(r"\d{1,2}:\d{2}(?::\d{2})?")),
    ),
    Headerless(
        "histdata",
        "histdata.com ASCII bars",
        ";",
        ("date_time", "open", "high", "low", "close", "volume"),
        (re.compile(r"\d{8} \d{6}"),),
        "times taken as UTC; histdata.com documents them as EST without daylight saving",
    ),
)


@dataclass(frozen=True)
class CsvShape:
    """Where a CSV's table starts and what its columns are called."""

    delimiter: str
    skip_rows: int  # physical lines above the header (or above the first row when header-less)
    skipped_first: str | None  # the first of them, truncated, for the report
    header_rows: int  # 0 header-less, 1 usually, 3 for yfinance's multi-row header
    names: tuple[str, ...]  # the column names, as written (or given, when header-less)
    headerless: Headerless | None = None
    ticker: str | None = None  # yfinance's ticker row

    @property
    def first_data_line(self) -> int:
        """The 1-based line of the first data row (blank lines in the data not counted)."""
        return self.skip_rows + self.header_rows + 1

    def report(self) -> dict[str, Any]:
        """The shape as the file's report entry records it."""
        out: dict[str, Any] = {
            "delimiter": self.delimiter,
            "skipped_lines": self.skip_rows,
            "header_rows": self.header_rows,
            "first_data_line": self.first_data_line,
        }
        if self.skip_rows:
            out["skipped_first"] = self.skipped_first
        if self.headerless is not None:
            out["headerless"] = self.headerless.name
        if self.ticker is not None:
            out["ticker"] = self.ticker
        return out


# --------------------------------------------------------------------------------------------
# Sniffing a CSV

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# A date and/or time as market data writes them; only used to tell data rows from headers.
_TIMELIKE = re.compile(
    r"(?:\d{1,4}[-./]\d{1,2}[-./]\d{1,4}|\d{8})"
    r"(?:[ T]\d{1,2}:?\d{2}(?::?\d{2}(?:\.\d+)?)?)?"
    r"(?: ?(?:GMT|UTC)?[+-]\d{2}:?\d{2}|Z)?"
    r"|\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
)
_MISSING_TEXT = frozenset({"", "nan", "null", "none", "na", "n/a", "-"})


def _quote(line: str) -> str:
    return line if len(line) <= _QUOTED_CHARS else line[: _QUOTED_CHARS - 3] + "..."


def _fields(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter), [])


def is_data_row(fields: list[str]) -> bool:
    """True when every field is a number, a date/time or missing, and one at least is not missing."""
    seen = False
    for raw in fields:
        field = raw.strip()
        if field.lower() in _MISSING_TEXT:
            continue
        if not (_NUMBER.fullmatch(field) or _TIMELIKE.fullmatch(field)):
            return False
        seen = True
    return seen


def sniff_csv(head: bytes, *, complete: bool, where: str) -> CsvShape:
    """How a CSV is laid out, from its first bytes.

    Args:
        head: the file's first bytes (UTF-8), at most ``SNIFF_BYTES`` of them.
        complete: ``head`` is the whole file (so its last line is whole).
        where: the file, for messages.

    Raises:
        DataError: no table in the sample (only blank, comment or banner lines), a header-less
            file of no known layout, several yfinance tickers side by side.
    """
    lines = _LINE_BREAK.split(head.decode("utf-8-sig", errors="replace"))
    # The last piece is cut mid-line, or is the empty remainder after the final line break.
    if not complete or lines[-1] == "":
        lines.pop()
    if not lines:
        if not complete:
            raise DataError(f"{where}: no line break in the first {SNIFF_BYTES} bytes")
        raise DataError(f"{where}: holds no lines")
    content = [i for i, line in enumerate(lines) if line.strip() and not _is_comment(line)]
    if not content:
        what = "blank" if all(not line.strip() for line in lines) else "blank or '#' comments"
        raise DataError(f"{where}: no header or data rows: its {len(lines)} line(s) are all {what}")

    delimiter, width = _delimiter(lines, content)
    if delimiter is None:
        first = lines[content[0]].strip()
        raise DataError(
            f"{where}: no header or data rows: its {len(content)} non-blank line(s) are all "
            "banner text, none splits into columns on ',', ';' or tab (first: "
            f"{_quote(first)!r})"
        )
    start = next(i for i in content if len(_fields(lines[i], delimiter)) == width)
    # The first line worth quoting: a banner or comment, else (all blank) the empty line.
    first_skipped = (
        _quote(next((line.strip() for line in lines[:start] if line.strip()), ""))
        if start
        else None
    )
    fields = _fields(lines[start], delimiter)

    if is_data_row(fields):
        layout = _headerless(fields, delimiter)
        if layout is None:
            known = "; ".join(
                f"{len(h.columns)} {_DELIMITER_NAMES[h.delimiter]}-separated columns: {h.what}"
                for h in HEADERLESS
            )
            raise DataError(
                f"{where}: line {start + 1} ({_quote(lines[start].strip())!r}) is data, so the "
                f"file has no header, and its {width} {_DELIMITER_NAMES[delimiter]}-separated "
                f"columns match no header-less layout known ({known}); add a header line such "
                "as timestamp,open,high,low,close,volume"
            )
        return CsvShape(delimiter, start, first_skipped, 0, layout.columns, headerless=layout)

    names, header_rows, ticker = _multirow_header(lines, start, fields, delimiter, width, where)
    return CsvShape(delimiter, start, first_skipped, header_rows, names, ticker=ticker)


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _delimiter(lines: list[str], content: list[int]) -> tuple[str | None, int]:
    """The delimiter that splits most lines into one column count (of 2 or more), and that count."""
    best: tuple[int, int] | None = None
    chosen: tuple[str | None, int] = (None, 0)
    for preference, delimiter in enumerate(reversed(DELIMITERS)):
        counts = Counter(len(_fields(lines[i], delimiter)) for i in content)
        width, lines_with_width = max(counts.items(), key=lambda item: (item[1], item[0]))
        if width < 2:
            continue
        key = (lines_with_width, preference)
        if best is None or key > best:
            best, chosen = key, (delimiter, width)
    return chosen


def _headerless(fields: list[str], delimiter: str) -> Headerless | None:
    stripped = [f.strip() for f in fields]
    for layout in HEADERLESS:
        if layout.delimiter != delimiter or len(layout.columns) != len(stripped):
            continue
        if all(p.fullmatch(v) for p, v in zip(layout.first_fields, stripped, strict=False)):
            return layout
    return None


def _multirow_header(
    lines: list[str], start: int, header: list[str], delimiter: str, width: int, where: str
) -> tuple[tuple[str, ...], int, str | None]:
    """The column names, header line count and ticker of pandas' multi-level column header.

    ``yf.download(...).to_csv()`` writes the column level name and the price fields
    (``Price,Close,...``), a ``Ticker,AAPL,...`` row, then the index name (``Date,,,,,``).
    Only those two extra rows are recognised: anything else after the header is data (and a
    bad value there is reported with its line).
    """
    extra: list[list[str]] = []
    for line in lines[start + 1 : start + 3]:
        fields = _fields(line, delimiter)
        if len(fields) != width or is_data_row(fields):
            break
        first = alias_key(fields[0])
        if first == "ticker" or (
            first in TIMESTAMP_ALIASES and not any(f.strip() for f in fields[1:])
        ):
            extra.append(fields)
        else:
            break
    if not extra:
        return tuple(header), 1, None
    ticker = None
    names = list(header)
    names[0] = ""  # the level name ("Price") names no column; unnamed: the index
    for fields in extra:
        if alias_key(fields[0]) == "ticker":
            tickers = list(dict.fromkeys(f.strip() for f in fields[1:] if f.strip()))
            if len(tickers) > 1:
                raise DataError(
                    f"{where}: line {start + 2} holds {len(tickers)} tickers side by side "
                    f"({', '.join(tickers[:5])}{', ...' if len(tickers) > 5 else ''}; a yfinance "
                    "multi-ticker download); save one ticker per file"
                )
            ticker = tickers[0] if tickers else None
        else:
            names[0] = fields[0].strip()
    return tuple(names), 1 + len(extra), ticker


# --------------------------------------------------------------------------------------------
# Column names


def normalise_name(name: str) -> str:
    """``' <OPEN> '`` -> ``open``, ``Close*`` -> ``close``, ``Adj Close**`` -> ``adj close``."""
    text = name.strip()
    if len(text) > 1 and text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return " ".join(text.rstrip("*").lower().split())


def alias_key(name: str) -> str:
    """The name as aliases are looked up: normalised, ``_`` read as a space (``open_time``)."""
    return " ".join(normalise_name(name).replace("_", " ").split())


def is_unnamed(name: str) -> bool:
    """A column pandas wrote without a name: its index (``""``, ``Unnamed: 0``, ``__index_level_0__``)."""
    return bool(_UNNAMED.fullmatch(name.strip().lower()))


@dataclass(frozen=True)
class ColumnMap:
    """Which column (as named in the file) plays which part; None where none does."""

    time: str | None
    date_part: str | None  # with ``time_part``: a date column and a time-of-day column
    time_part: str | None
    unnamed: str | None  # the pandas index column, the time when nothing else is
    open: str | None
    high: str | None
    low: str | None
    close: str | None
    close_from_price: bool
    volume: str | None
    tick_volume: str | None
    symbol: str | None
    adjusted_close: str | None = None


def map_columns(names: list[str] | tuple[str, ...]) -> ColumnMap:
    """Each part's column by its aliases; the first alias present wins, the rest are unused."""
    keys: dict[str, str] = {}
    for name in names:
        keys.setdefault(alias_key(name), name)

    def first(aliases: tuple[str, ...]) -> str | None:
        return next((keys[a] for a in aliases if a in keys), None)

    time = first(TIMESTAMP_ALIASES)
    date_part = time_part = None
    if time is not None and alias_key(time) in ("time", "date") and {"date", "time"} <= keys.keys():
        date_part, time_part = keys["date"], keys["time"]
    unnamed = None
    if time is None:
        unnamed = next((n for n in names if is_unnamed(n)), None)
    close = first(PRICE_ALIASES["close"])
    fallback = first(CLOSE_FALLBACK) if close is None else None
    return ColumnMap(
        time=time,
        date_part=date_part,
        time_part=time_part,
        unnamed=unnamed,
        open=first(PRICE_ALIASES["open"]),
        high=first(PRICE_ALIASES["high"]),
        low=first(PRICE_ALIASES["low"]),
        close=close if close is not None else fallback,
        close_from_price=fallback is not None,
        volume=first(VOLUME_ALIASES),
        tick_volume=first(TICK_VOLUME_ALIASES),
        symbol=first(SYMBOL_ALIASES),
        adjusted_close=first(ADJUSTED_CLOSE_ALIASES),
    )


# --------------------------------------------------------------------------------------------
# Timestamp text

_DATE_SHAPES = (
    (r"\d{1,2}\.\d{1,2}\.\d{4}", ("%d.%m.%Y",)),  # Dukascopy
    (r"\d{4}\.\d{1,2}\.\d{1,2}", ("%Y.%m.%d",)),  # MetaTrader
    (r"\d{1,2}/\d{1,2}/\d{4}", ("%m/%d/%Y", "%d/%m/%Y")),  # Investing.com: either order
    (r"\d{4}/\d{1,2}/\d{1,2}", ("%Y/%m/%d",)),
    (r"\d{8}", ("%Y%m%d",)),  # histdata, Stooq
    (r"[A-Za-z]{3} \d{1,2}, \d{4}", ("%b %d, %Y",)),  # Investing.com, Yahoo pages
)
_TIME_SHAPES = (
    (r"\d{1,2}:\d{2}:\d{2}\.\d{1,9}", "%H:%M:%S.%f"),
    (r"\d{1,2}:\d{2}:\d{2}", "%H:%M:%S"),
    (r"\d{1,2}:\d{2}", "%H:%M"),
    (r"\d{6}", "%H%M%S"),
)
_ZONE = re.compile(r"(?P<text> ?(?:GMT|UTC)?)(?P<offset>[+-]\d{2}:?\d{2}|Z)")


def time_formats(value: str) -> tuple[str, ...]:
    """The strptime formats a timestamp shaped like ``value`` may be in; () for ISO 8601.

    Two formats come back only for ``dd/mm/yyyy`` against ``mm/dd/yyyy``: the caller keeps the
    one that reads every value of the column.
    """
    text = value.strip()
    for date_pattern, date_formats in _DATE_SHAPES:
        date = re.match(date_pattern, text)
        if date is None:
            continue
        rest = text[date.end() :]
        time_format = ""
        if rest[:1] in (" ", "T") and rest[1:2].isdigit():
            for time_pattern, fmt in _TIME_SHAPES:
                match = re.match(time_pattern, rest[1:])
                if match is not None:
                    time_format = rest[0] + fmt
                    rest = rest[1 + match.end() :]
                    break
        zone_format = ""
        if rest:
            zone = _ZONE.fullmatch(rest)
            if zone is None:
                continue
            zone_format = zone["text"] + "%z"
        return tuple(f + time_format + zone_format for f in date_formats)
    return ()


def time_of_day_format(value: str) -> str | None:
    """The strptime format of a time of day alone (``00:00``, ``17:00:00.5``, ``170000``)."""
    text = value.strip()
    return next((fmt for pattern, fmt in _TIME_SHAPES if re.fullmatch(pattern, text)), None)


# --------------------------------------------------------------------------------------------
# Number text

_GROUPED = re.compile(r"^([+-]?(?:\d{1,3}(?:,\d{3})+|\d*)(?:\.\d*)?)\s*([KMBkmb]?)$")
_MULTIPLIERS = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9}


def parse_numbers(texts: pd.Series, *, suffixes: bool = False) -> np.ndarray:
    """Text to float64; NaN where a value is missing or not a number.

    Beyond what ``pd.to_numeric`` reads: thousands separators (``"7,200.8"``, as Investing.com
    writes prices above 1000) and, with ``suffixes``, K/M/B multipliers (``1.23K``, ``4.5M``:
    Investing.com's ``Vol.``). Only the values ``pd.to_numeric`` refuses take the slow path.
    """
    numbers = pd.to_numeric(texts, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    retry = np.isnan(numbers) & texts.notna().to_numpy()
    if not retry.any():
        return numbers
    numbers = numbers.copy()  # pandas may hand out a read-only view
    parts = texts[retry].astype(str).str.strip().str.extract(_GROUPED)
    digits = pd.to_numeric(parts[0].str.replace(",", "", regex=False), errors="coerce")
    suffix = parts[1].fillna("").str.lower()
    if not suffixes:
        digits = digits.where(suffix == "")
    multiplier = suffix.map(_MULTIPLIERS).astype(np.float64)
    numbers[retry] = (digits * multiplier).to_numpy(dtype=np.float64, na_value=np.nan)
    return numbers
