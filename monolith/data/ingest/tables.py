"""A data file's bytes as an Arrow table: CSV shape, encoding and parse, or a Parquet footer.

How a CSV is laid out (delimiter, banner lines, header rows) is decided by
``monolith.data.layouts.sniff_csv``; this module decodes, parses and refuses what cannot be read.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

from monolith.data.layouts import SNIFF_BYTES, CsvShape, normalise_name, sniff_csv
from monolith.data.sources import SourceFile
from monolith.errors import DataError

# "-" is how Investing.com writes a missing volume.
_CSV_NULLS = ["", "NULL", "null", "NaN", "nan", "NA", "N/A", "None", "none", "-"]
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def read_table(
    path: SourceFile, data: bytes | bytearray
) -> tuple[pa.Table, CsvShape | None, str | None]:
    """The file as an Arrow table, how its CSV was laid out, and its encoding if not UTF-8."""
    if path.format == "csv":
        data, shape, encoding = csv_shape(path, data)
        return parse_csv(path, data, shape), shape, encoding
    if not data:
        raise DataError(f"{path}: is empty (0 bytes)")
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as parquet: {exc}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: holds no rows (columns {table.column_names})")
    return table, None, None


def csv_shape(
    path: SourceFile, data: bytes | bytearray
) -> tuple[bytes | bytearray, CsvShape, str | None]:
    """UTF-8 bytes, how the CSV is laid out (from its first ``SNIFF_BYTES``), the encoding."""
    if not data:
        raise DataError(f"{path}: is empty (0 bytes)")
    encoding = None
    if bytes(data[:2]) in UTF16_BOMS:
        # MetaTrader exports UTF-16; pyarrow reads UTF-8 only.
        try:
            data = bytes(data).decode("utf-16").encode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: starts like UTF-16 but is not: {exc}") from None
        encoding = "utf-16"
    head = bytes(data[:SNIFF_BYTES])
    shape = sniff_csv(head, complete=len(data) <= SNIFF_BYTES, where=str(path))
    return data, shape, encoding


def parse_csv(
    path: SourceFile,
    data: bytes | bytearray,
    shape: CsvShape,
    include: list[str] | None = None,
) -> pa.Table:
    """The CSV's data rows as an Arrow table (only the ``include`` columns, when given)."""
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


def normalised_names(path: SourceFile, names: list[str] | tuple[str, ...]) -> list[str]:
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
