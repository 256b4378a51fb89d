"""Values out of Arrow columns: prices and volumes as float64, symbols, embeddings.

Text numbers may carry thousands separators and K/M/B multipliers (``layouts.parse_numbers``);
a value that is not a number is refused naming its file, column and line.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa

from monolith.data.ingest.where import Where
from monolith.data.layouts import ColumnMap, parse_numbers
from monolith.errors import DataError


def numeric(
    path: Where, column: str, values: pa.ChunkedArray, *, suffixes: bool = False
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


def symbol_column(path: Where, values: pa.ChunkedArray | None, n: int, fallback: str) -> pd.Series:
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


def embeddings(path: Where, column: str, values: pa.ChunkedArray) -> pd.Series:
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


def generic_volume(
    where: Where, mapped: ColumnMap, by_original: dict[str, pa.ChunkedArray]
) -> tuple[np.ndarray, str, str | None]:
    """The volume, the column it came from, and a note when there was a choice to make.

    MetaTrader writes a real volume (``<VOL>``) and a tick volume (``<TICKVOL>``, price changes
    per bar); the real one is zero for most forex brokers, and then the tick volume is the
    only measure of activity there is.
    """
    tick = mapped.tick_volume
    if mapped.volume is not None:
        real = numeric(where, mapped.volume, by_original[mapped.volume], suffixes=True)
        if tick is None:
            return real, mapped.volume, None
        if np.any(np.isfinite(real) & (real != 0)):
            return (
                real,
                mapped.volume,
                f"volume from {mapped.volume!r}; tick volume {tick!r} ignored",
            )
    assert tick is not None  # require_generic refused a file with neither
    why = f"{mapped.volume!r} is all zero" if mapped.volume else "there is no real volume"
    note = f"volume from the tick volume {tick!r} (price changes per bar): {why}"
    return numeric(where, tick, by_original[tick]), tick, note


def cdd_volume_column(columns: dict[str, pa.ChunkedArray], names: list[str]) -> str:
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
