"""Which symbols a file holds, and how many rows each, reading as little as the format allows.

A preparation spread over a cluster groups symbols before any file is read in full; the
symbols listed here are the strings ``read_market_data`` would produce.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from monolith.data.ingest.mapping import fallback_symbol
from monolith.data.ingest.tables import (
    UTF16_BOMS,
    csv_shape,
    normalised_names,
    parse_csv,
)
from monolith.data.ingest.values import symbol_column
from monolith.data.ingest.where import Where
from monolith.data.layouts import SNIFF_BYTES, map_columns, sniff_csv
from monolith.data.sources import SourceFile, read_source
from monolith.errors import DataError
from monolith.filesystems import arrow_filesystem
from monolith.storage import StorageSettings
from monolith.uri import is_s3_uri


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
        parquet = parquet_file(file, settings)
        names = parquet.schema_arrow.names
        normalised_names(file, names)
        symbol = map_columns(names).symbol
        if symbol is None:
            rows = parquet.metadata.num_rows
            if rows == 0:
                raise DataError(f"{file}: holds no rows")
            return {fallback_symbol(file, None): rows}
        try:
            table = parquet.read(columns=[symbol])
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{file}: cannot be read as parquet: {exc}") from None
        where = Where(file, None)
    else:
        data, _ = read_source(file, settings)
        data, shape, _ = csv_shape(file, data)
        normalised_names(file, shape.names)
        symbol = map_columns(shape.names).symbol
        table = parse_csv(file, data, shape, include=[symbol or shape.names[0]])
        if symbol is None:
            return {fallback_symbol(file, shape): table.num_rows}
        where = Where(file, shape.first_data_line)
    counts = symbol_column(where, table.column(0), table.num_rows, "").value_counts(sort=False)
    return {str(name): int(n) for name, n in sorted(counts.items())}


def quick_file_symbols(
    file: SourceFile, settings: StorageSettings | None = None
) -> dict[str, int] | None:
    """``file_symbols`` from the file's metadata alone, when no row needs reading: a Parquet
    footer, or a CSV's first bytes (rows then estimated from its size); None for a file with
    a symbol column (or one that must be decompressed or re-encoded whole)."""
    if file.format == "parquet":
        parquet = parquet_file(file, settings)
        names = parquet.schema_arrow.names
        normalised_names(file, names)
        if map_columns(names).symbol is not None:
            return None
        return {fallback_symbol(file, None): parquet.metadata.num_rows}
    if file.compression or file.size == 0:
        return None
    head = read_head(file, settings, SNIFF_BYTES + 1)
    if bytes(head[:2]) in UTF16_BOMS:
        return None
    shape = sniff_csv(head[:SNIFF_BYTES], complete=file.size <= SNIFF_BYTES, where=str(file))
    normalised_names(file, shape.names)
    if map_columns(shape.names).symbol is not None:
        return None
    lines = max(1, head.count(b"\n"))
    estimate = max(1, round(file.size * lines / max(1, len(head))))
    return {fallback_symbol(file, shape): estimate}


def read_head(file: SourceFile, settings: StorageSettings | None, size: int) -> bytes:
    """The first ``size`` bytes of a file (one range request on S3)."""
    fs, path = arrow_filesystem(file.uri, settings)
    try:
        with fs.open_input_file(path) as handle:
            return handle.read(size)
    except OSError as exc:
        raise DataError(f"{file}: cannot be read: {str(exc).strip().splitlines()[0]}") from None


def parquet_file(file: SourceFile, settings: StorageSettings | None) -> pq.ParquetFile:
    """A Parquet file opened for its footer, local or on S3 (range requests): only the footer,
    and then the columns asked for, are read."""
    if file.size == 0:
        raise DataError(f"{file}: is empty (0 bytes)")
    try:
        if is_s3_uri(file.uri):
            fs, path = arrow_filesystem(file.uri, settings)
            return pq.ParquetFile(fs.open_input_file(path))
        return pq.ParquetFile(file.uri)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{file}: cannot be read as parquet: {exc}") from None
