"""Reading a prepared dataset's partitions: a symbol's columns, whole or only the row groups
that hold given rows, and its row layout.

Parquet column by column, straight from the dataset's location (a local folder or an
``s3://`` prefix).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from monolith.data.prepared import (
    DATASET_DIR,
    DIRECTION_COLUMN,
    SEGMENT_COLUMN,
    SPLIT_CODES,
    SPLIT_COLUMN,
    partition_path,
)
from monolith.data.windows.index import SymbolIndex
from monolith.errors import DataError
from monolith.filesystems import arrow_filesystem, first_line
from monolith.storage import StorageSettings
from monolith.uri import Location

# Partitions are read with their byte ranges merged across the columns left out and across
# adjacent row groups: one request per span on object storage, not one per column chunk.
_PARQUET = pads.ParquetFileFormat(
    default_fragment_scan_options=pads.ParquetFragmentScanOptions(
        pre_buffer=True,
        cache_options=pa.CacheOptions(hole_size_limit=1 << 20, range_size_limit=64 << 20),
    )
)
# A reader that reads a few columns of every row (the layout, before it is cached) takes each
# partition in one request: what row groups save in bytes, requests per group would cost.
_PARQUET_WHOLE = pads.ParquetFileFormat(
    default_fragment_scan_options=pads.ParquetFragmentScanOptions(
        pre_buffer=True,
        cache_options=pa.CacheOptions(hole_size_limit=1 << 30, range_size_limit=1 << 30),
    )
)


def read_partition(
    location: Location,
    settings: StorageSettings | None,
    symbol: str,
    columns: list[str],
    runs: list[tuple[int, int]] | None = None,
    *,
    whole: bool = False,
) -> tuple[pa.Table, np.ndarray | None]:
    """``columns`` of ``symbol``'s partition: every row, or only the row groups that hold
    ``runs``; with the position of each partition row in the table (-1: not read; None:
    every row, in order). ``whole``: the partition is read in one request."""
    fmt = _PARQUET_WHOLE if whole else _PARQUET
    fs, root = arrow_filesystem(location, settings)
    path = f"{root}/{partition_path(symbol)}"
    try:
        part = fmt.make_fragment(path, filesystem=fs)
        sizes = [g.num_rows for g in part.row_groups]
        starts = np.cumsum([0, *sizes])
        groups = list(range(len(sizes)))
        if runs is not None:
            groups = [
                g for g in groups if any(a < starts[g + 1] and b > starts[g] for a, b in runs)
            ]
            part = part.subset(row_group_ids=groups)
        table = part.to_table(columns=columns)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(
            f"{location.join(partition_path(symbol))}: cannot read the prepared "
            f"partition of {symbol!r}: {first_line(exc)}"
        ) from None
    if runs is None:
        return table, None
    position = np.full(int(starts[-1]), -1, dtype=np.int64)
    offset = 0
    for g in groups:
        position[starts[g] : starts[g + 1]] = np.arange(offset, offset + sizes[g])
        offset += sizes[g]
    return table, position


def read_layout(
    location: Location, settings: StorageSettings | None, symbol: str, instrument: int
) -> SymbolIndex:
    """``symbol``'s row layout, from its partition's split, segment and direction columns."""
    columns = [SPLIT_COLUMN, SEGMENT_COLUMN, DIRECTION_COLUMN]
    table, _ = read_partition(location, settings, symbol, columns, whole=True)
    split = table.column(SPLIT_COLUMN)
    if pa.types.is_dictionary(split.type):
        split = split.cast(pa.string())
    codes = pc.index_in(split, value_set=pa.array(list(SPLIT_CODES)))
    return SymbolIndex(
        symbol=symbol,
        instrument=instrument,
        split=codes.to_numpy(zero_copy_only=False).astype(np.int8),
        segment=table.column(SEGMENT_COLUMN).to_numpy().astype(np.int64),
        has_target=~np.isnan(
            table.column(DIRECTION_COLUMN).to_numpy(zero_copy_only=False).astype(float)
        ),
    )


def load_prepared_frame(prepared_dir: str | Path) -> pd.DataFrame:
    """The prepared rows (unscaled) of a local prepared dataset, sorted by (symbol, timestamp)."""
    table = pads.dataset(Path(prepared_dir) / DATASET_DIR, format="parquet")
    frame = table.to_table().to_pandas()
    return frame.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
