"""Writing a prepared dataset's partitions: one Parquet file per symbol, local or on S3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from monolith.data.prepared import ROW_GROUP_ROWS, partition_path
from monolith.errors import StorageError
from monolith.filesystems import arrow_filesystem
from monolith.storage import StorageSettings
from monolith.uri import Location


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary-encoding: labels and codes, not floats or timestamps.

    Float features are nearly all distinct, so a dictionary only costs a hash table per column
    (several times the data at the write's peak) before Parquet falls back to plain encoding.
    """
    return [
        f.name
        for f in schema
        if not (pa.types.is_floating(f.type) or pa.types.is_timestamp(f.type))
    ]


def _symbol_parts(frame: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """Each symbol's rows in symbol order, as zero-copy row slices when the frame is grouped."""
    symbols = frame["symbol"]
    if len(frame) == 0:
        return
    new = np.flatnonzero(symbols.iloc[1:].to_numpy() != symbols.iloc[:-1].to_numpy()) + 1
    starts = np.r_[0, new]
    stops = np.r_[new, len(frame)]
    firsts = [symbols.iat[i] for i in starts]
    if all(a < b for a, b in zip(firsts, firsts[1:], strict=False)):
        for start, stop, symbol in zip(starts.tolist(), stops.tolist(), firsts, strict=True):
            yield symbol, frame.iloc[start:stop]
        return
    for symbol, part in frame.groupby("symbol", sort=True):  # not grouped: gather
        yield symbol, part.reset_index(drop=True)


def write_partitions(
    frame: pd.DataFrame,
    target: Location,
    settings: StorageSettings | None = None,
    blocks: list[tuple[str, int, int]] | None = None,
) -> None:
    """One Parquet file per symbol under ``target`` (a local folder or an s3:// prefix)."""
    fs, root = arrow_filesystem(target, settings)
    # The system allocator hands the encoder's buffers back to the OS after each file;
    # Arrow's default pool would keep them for the rest of the process.
    pool = pa.system_memory_pool()
    parts = (
        ((symbol, frame.iloc[a:b]) for symbol, a, b in blocks)
        if blocks is not None
        else _symbol_parts(frame)
    )
    for symbol, part in parts:
        path = f"{root}/{partition_path(str(symbol))}"
        if not target.is_s3:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(part, preserve_index=False)
        try:
            pq.write_table(
                table,
                path,
                filesystem=fs,
                use_dictionary=_dictionary_columns(table.schema),
                row_group_size=ROW_GROUP_ROWS,
                memory_pool=pool,
            )
        except OSError as exc:
            raise StorageError(
                f"cannot write {target.join(partition_path(str(symbol)))}: {exc}"
            ) from None
        del table, part
