"""Windows over a prepared dataset, as one worker needs them: its shard of the training rows
as a streaming ``tf.data`` pipeline, and fixed evaluation samples as arrays.

A window of length L ending at row ``e`` is valid when rows ``e-L+1 .. e`` belong to the same
symbol, the same split and the same gap-free segment, and the direction target at ``e`` exists.

What a worker holds (``WindowSource``), read straight from the prepared dataset's location
(a local folder or an ``s3://`` prefix, Parquet column by column):

- **its shard of the fit split** (``train``, or ``train+val`` for the final fit): each symbol's
  rows of that split are cut into ``shard.count`` contiguous ranges of equal length, and shard
  ``i`` holds range ``i`` of every symbol: the rows of W workers are disjoint and together
  cover the split, and each holds ~1/W of it. A window never crosses a range boundary (like a
  gap), so the L-1 windows that would straddle each cut are not used. Rows are held once
  (rows x features, scaled); windows are gathered on the fly by their end row.
- **fixed evaluation samples** (``samples``: split -> at most N windows): windows evenly
  spaced over the split's windows of every symbol (in instrument, then time order),
  materialised as arrays. The same sample on every worker and for every trial, whatever W.

What a worker reads: the row layout (split, segment, target) of every symbol, then only the
Parquet row groups that hold its shard's rows. The layout and the samples touch every row, so
the first reader builds them and caches them under ``<prepared>/cache/`` (keyed by the
dataset's metadata and scalers, and for a sample by L and its cap); later readers (every
trial's workers) take them from there. Where the cache cannot be written (read-only storage)
every reader builds them.

Element structure of the pipeline and the samples: ``(features, targets)`` with
``features["technical_input"]`` float32 [B, L, F] (scaled with the train-fitted scalers),
``features["instrument_input"]`` int32 [B], and, where present, ``embeddings_input`` [B, E],
``mcp_input`` [B, M], ``cot_input`` [B, C] taken at the window's last bar;
``targets["regime"]`` int32 [B] and ``targets["direction"]`` int32 [B] (1 when the close H
bars later is higher). The samples also carry every other prepared probe target, by probe
name (``direction_h<H>`` int32, -1 where the horizon runs past the data; ``fwd_vol_h<H>``
float32, NaN there) and ``end_time``; the training stream carries regime and direction only.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from monolith.config import InputSpec, probe_kind
from monolith.data.prepared import (
    CACHE_DIR,
    DATASET_DIR,
    DIRECTION_COLUMN,
    FORMAT_VERSION,
    METADATA_FILE,
    REGIME_COLUMN,
    SCALERS_JSON,
    SEGMENT_COLUMN,
    SPLIT_CODES,
    SPLIT_COLUMN,
    TIMESTAMP_COLUMN,
    is_prepared_dataset,
    partition_path,
    read_json_file,
)
from monolith.data.splits import SPLITS
from monolith.errors import DataError, MonolithError, StorageError
from monolith.filesystems import first_line, read_bytes
from monolith.storage import StorageSettings, write_bytes
from monolith.uri import Location, parse_uri

log = logging.getLogger(__name__)

__all__ = [
    "DATASET_DIR",
    "METADATA_FILE",
    "SCALERS_JSON",
    "WHOLE",
    "Shard",
    "WindowSource",
    "is_prepared_dataset",
    "load_prepared_frame",
    "valid_window_ends",
]

FIT_SPLITS = {"train": ("train",), "train+val": ("train", "val")}
# What the fit split keeps per row (the training stream's targets; extra probe targets and
# end times are read for the evaluation samples only).
_FIT_ROWS = ("instrument", "regime", "direction", "embeddings_input", "mcp_input", "cot_input")
_LAYOUT = ("split", "segment", "has_target")  # a symbol's row layout (_SymbolIndex)
_READ_THREADS = 4
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
# Bump when what the cache holds changes: older cache files are then ignored.
_CACHE_VERSION = 1


def valid_window_ends(
    instrument: np.ndarray,
    segment: np.ndarray,
    split_code: np.ndarray,
    has_target: np.ndarray,
    sequence_length: int,
) -> np.ndarray:
    """Row indices at which a full window of ``sequence_length`` rows may end.

    Rows must be sorted by (instrument, timestamp). A block is a run of rows sharing
    instrument, segment and split; a window must lie inside one block.
    """
    n = len(instrument)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    change = np.r_[
        True,
        (instrument[1:] != instrument[:-1])
        | (segment[1:] != segment[:-1])
        | (split_code[1:] != split_code[:-1]),
    ]
    return _ends(change, has_target & (split_code != SPLIT_CODES["purge"]), sequence_length)


def _ends(change: np.ndarray, ok: np.ndarray, length: int) -> np.ndarray:
    """Ends of windows of ``length`` rows inside blocks that start where ``change`` is True."""
    idx = np.arange(len(change))
    block_start = np.maximum.accumulate(np.where(change, idx, 0))
    return idx[(idx - block_start + 1 >= length) & ok]


@dataclass(frozen=True)
class Shard:
    """Worker ``index`` of ``count``: which part of the fit split's rows it holds."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise DataError(f"shard {self.index} of {self.count} does not exist")

    def bounds(self, start: int, stop: int, index: int | None = None) -> tuple[int, int]:
        """Rows ``[a, b)`` of shard ``index`` (default: this one) within ``[start, stop)``."""
        i = self.index if index is None else index
        n = stop - start
        return start + n * i // self.count, start + n * (i + 1) // self.count


WHOLE = Shard()  # one worker holds the whole fit split


@dataclass
class _SymbolIndex:
    """One symbol's row layout: enough to find its windows without its features."""

    symbol: str
    instrument: int
    split: np.ndarray  # int8 codes
    segment: np.ndarray
    has_target: np.ndarray

    def runs(self, code: int) -> list[tuple[int, int]]:
        """Contiguous row runs of split ``code`` (one per split in a prepared dataset)."""
        rows = np.flatnonzero(self.split == code)
        if len(rows) == 0:
            return []
        breaks = np.flatnonzero(np.diff(rows) != 1)
        starts = np.r_[rows[0], rows[breaks + 1]]
        stops = np.r_[rows[breaks] + 1, rows[-1] + 1]
        return list(zip(starts.tolist(), stops.tolist(), strict=True))

    def ends(self, start: int, stop: int, length: int) -> np.ndarray:
        """Valid window ends (symbol rows) whose windows lie inside ``[start, stop)``."""
        seg = self.segment[start:stop]
        split = self.split[start:stop]
        if len(seg) == 0:
            return np.empty(0, dtype=np.int64)
        change = np.r_[True, (seg[1:] != seg[:-1]) | (split[1:] != split[:-1])]
        ok = self.has_target[start:stop] & (split != SPLIT_CODES["purge"])
        return _ends(change, ok, length) + start


class WindowSource:
    """The windows one worker needs from a prepared dataset (see the module docstring).

    Args:
        prepared: the prepared dataset: a folder or an ``s3://`` prefix.
        sequence_length: L (default: the length it was prepared for; shorter is allowed).
        settings: how to reach S3.
        shard: which part of the fit split this worker holds.
        fit_split: ``train``, ``train+val`` (the final fit) or None (evaluation only).
        samples: split -> the most windows of its fixed evaluation sample (None: all).
    """

    def __init__(
        self,
        prepared: str | Path,
        *,
        sequence_length: int | None = None,
        settings: StorageSettings | None = None,
        shard: Shard = WHOLE,
        fit_split: str | None = "train",
        samples: Mapping[str, int | None] | None = None,
    ) -> None:
        self.location: Location = parse_uri(prepared, "prepared dataset")
        self.settings = settings
        self.shard = shard
        self.metadata = read_json_file(self.location, METADATA_FILE, settings)
        version = self.metadata.get("format_version")
        if version != FORMAT_VERSION:
            raise DataError(
                f"{self.location} is a prepared dataset of format {version}; this version reads "
                f"format {FORMAT_VERSION} (forward probe targets, a purge covering their "
                "horizons): prepare it again with `monolith data prepare --overwrite`"
            )
        self._scalers = read_json_file(self.location, SCALERS_JSON, settings)
        feats = self.metadata["features"]
        self.technical_columns: list[str] = feats["technical"]
        self.sequence_length = int(sequence_length or self.metadata["sequence_length"])
        horizon = max(self.metadata["target_horizons"].values())
        if self.sequence_length > int(self.metadata["purge_bars"]) - horizon:
            raise DataError(
                f"sequence_length {self.sequence_length} exceeds the purge gap this dataset was "
                f"prepared with ({self.metadata['purge_bars']} bars incl. the longest target "
                f"horizon {horizon}); re-prepare with the longer window"
            )
        # Probe targets beyond regime and direction: only the evaluation samples carry them.
        self.extra_targets = {
            name: column
            for name, column in feats["targets"].items()
            if name not in ("regime", "direction")
        }
        if fit_split is not None and fit_split not in FIT_SPLITS:
            raise DataError(f"fit split {fit_split!r} is not one of {list(FIT_SPLITS)}")
        for split in samples or {}:
            if split not in SPLITS:
                raise DataError(f"sample split {split!r} is not one of {list(SPLITS)}")
        self.fit_split = fit_split
        self.extra_inputs = {
            "embeddings_input": [feats["embedding"]] if feats.get("embedding_dim") else [],
            "mcp_input": list(feats.get("mcp", [])),
            "cot_input": list(feats.get("cot", [])),
        }
        self.extra_inputs = {k: v for k, v in self.extra_inputs.items() if v}
        self.spec = InputSpec(
            sequence_length=self.sequence_length,
            n_technical=len(self.technical_columns),
            n_instruments=len(self.metadata["instruments"]),
            embedding_dim=int(feats.get("embedding_dim", 0)),
            mcp_dim=len(feats.get("mcp", [])),
            cot_dim=len(feats.get("cot", [])),
        )
        instruments = self.metadata["instruments"]
        self._symbols = sorted(instruments, key=lambda s: instruments[s])
        index = self._read_index()
        self._global_counts = {
            split: sum(
                len(ix.ends(a, b, self.sequence_length))
                for ix in index
                for a, b in ix.runs(SPLIT_CODES[split])
            )
            for split in SPLITS
        }
        self._shard_counts = self._count_shards(index) if fit_split else []
        samples = dict(samples or {})
        fit_rows, sample_ends = self._select(index, samples)
        cached = self._cached_samples(samples, sample_ends)
        self.rows_read = self._load(
            index, fit_rows, {s: e for s, e in sample_ends.items() if s not in cached}
        )
        self._cache_samples({s: cap for s, cap in samples.items() if s not in cached})
        self._samples.update(cached)
        log.info(
            "windows (L=%d, shard %d/%d): fit %s %d of %s; samples %s (cached: %s); "
            "read %d of %d rows; %.1f MB",
            self.sequence_length,
            shard.index + 1,
            shard.count,
            fit_split,
            len(self._fit_ends),
            self._global_counts,
            {k: len(v[1]["regime"]) for k, v in self._samples.items()},
            sorted(cached),
            self.rows_read,
            sum(len(ix.split) for ix in index),
            self.nbytes() / 1e6,
        )

    # -- reading -------------------------------------------------------------------------------
    def _read(
        self,
        symbol: str,
        columns: list[str],
        runs: list[tuple[int, int]] | None = None,
        fmt: pads.ParquetFileFormat = _PARQUET,
    ) -> tuple[pa.Table, np.ndarray | None]:
        """``columns`` of ``symbol``'s partition: every row, or only the row groups that hold
        ``runs``; with the position of each partition row in the table (-1: not read; None:
        every row, in order)."""
        from monolith.filesystems import arrow_filesystem

        fs, root = arrow_filesystem(self.location, self.settings)
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
                f"{self.location.join(partition_path(symbol))}: cannot read the prepared "
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

    def _read_index(self) -> list[_SymbolIndex]:
        location = self._cache_location("layout")
        cached = self._cache_get(location)
        if cached is not None:
            try:
                return [self._unpack_layout(cached, i, s) for i, s in enumerate(self._symbols)]
            except KeyError as exc:
                log.warning("ignoring the cached row layout %s: no %s", location, exc)
        columns = [SPLIT_COLUMN, SEGMENT_COLUMN, DIRECTION_COLUMN]

        def one(symbol: str) -> _SymbolIndex:
            table, _ = self._read(symbol, columns, fmt=_PARQUET_WHOLE)
            split = table.column(SPLIT_COLUMN)
            if pa.types.is_dictionary(split.type):
                split = split.cast(pa.string())
            codes = pc.index_in(split, value_set=pa.array(list(SPLIT_CODES)))
            return _SymbolIndex(
                symbol=symbol,
                instrument=int(self.metadata["instruments"][symbol]),
                split=codes.to_numpy(zero_copy_only=False).astype(np.int8),
                segment=table.column(SEGMENT_COLUMN).to_numpy().astype(np.int64),
                has_target=~np.isnan(
                    table.column(DIRECTION_COLUMN).to_numpy(zero_copy_only=False).astype(float)
                ),
            )

        with ThreadPoolExecutor(_READ_THREADS) as pool:
            index = list(pool.map(one, self._symbols))
        packed: dict[str, np.ndarray] = {}
        for i, ix in enumerate(index):
            for name in _LAYOUT:
                packed[f"{i}.{name}.values"], packed[f"{i}.{name}.lengths"] = _runs_of(
                    getattr(ix, name)
                )
        self._cache_put(location, packed)
        return index

    def _unpack_layout(self, cached: dict[str, np.ndarray], i: int, symbol: str) -> _SymbolIndex:
        arrays = {
            name: np.repeat(cached[f"{i}.{name}.values"], cached[f"{i}.{name}.lengths"])
            for name in _LAYOUT
        }
        return _SymbolIndex(
            symbol=symbol, instrument=int(self.metadata["instruments"][symbol]), **arrays
        )

    def _fit_runs(self, ix: _SymbolIndex, shard: int) -> list[tuple[int, int]]:
        """This symbol's rows of the fit split that shard ``shard`` holds."""
        out = []
        for split in FIT_SPLITS[self.fit_split or "train"]:
            for start, stop in ix.runs(SPLIT_CODES[split]):
                out.append(self.shard.bounds(start, stop, shard))
        return out

    def _count_shards(self, index: list[_SymbolIndex]) -> list[int]:
        """Fit windows of every shard: all workers agree on the steps per epoch."""
        return [
            sum(
                len(ix.ends(a, b, self.sequence_length))
                for ix in index
                for a, b in self._fit_runs(ix, shard)
            )
            for shard in range(self.shard.count)
        ]

    def _select(
        self, index: list[_SymbolIndex], samples: dict[str, int | None]
    ) -> tuple[dict[str, list[tuple[int, int]]], dict[str, dict[str, np.ndarray]]]:
        """This shard's fit rows, and each sample's window ends, per symbol."""
        fit_rows = {
            ix.symbol: self._fit_runs(ix, self.shard.index) if self.fit_split else []
            for ix in index
        }
        sample_ends: dict[str, dict[str, np.ndarray]] = {}
        for split, cap in samples.items():
            per_symbol = [
                np.concatenate(
                    [ix.ends(a, b, self.sequence_length) for a, b in ix.runs(SPLIT_CODES[split])]
                    or [np.empty(0, dtype=np.int64)]
                )
                for ix in index
            ]
            total = sum(len(e) for e in per_symbol)
            pick = _even(total, cap)
            offsets = np.cumsum([0] + [len(e) for e in per_symbol])
            sample_ends[split] = {}
            for ix, ends, lo, hi in zip(index, per_symbol, offsets[:-1], offsets[1:], strict=True):
                chosen = pick[(pick >= lo) & (pick < hi)] - lo
                sample_ends[split][ix.symbol] = ends[chosen]
        return fit_rows, sample_ends

    def _load(
        self,
        index: list[_SymbolIndex],
        fit_rows: dict[str, list[tuple[int, int]]],
        sample_ends: dict[str, dict[str, np.ndarray]],
    ) -> int:
        """Read each symbol's feature rows once (only the row groups of this shard's fit rows
        when no sample needs the rest); keep the fit rows and build the samples. Returns the
        rows read."""
        L = self.sequence_length
        columns = [*self.technical_columns, REGIME_COLUMN, DIRECTION_COLUMN, TIMESTAMP_COLUMN]
        columns += [c for names in self.extra_inputs.values() for c in names]
        if sample_ends:
            columns += list(self.extra_targets.values())

        def one(ix: _SymbolIndex) -> tuple[dict, dict[str, dict], int]:
            runs = fit_rows[ix.symbol]
            wanted = {split: ends[ix.symbol] for split, ends in sample_ends.items()}
            if not any(b > a for a, b in runs) and not any(len(e) for e in wanted.values()):
                return {}, {}, 0
            # The samples need rows of every group; the fit rows only their own groups.
            table, position = self._read(ix.symbol, columns, None if wanted else runs)
            scaled = self._scaled(ix.symbol, table)
            rows = self._row_arrays(ix, table)
            fit: dict = {}
            if runs:
                take = np.concatenate([np.arange(a, b) for a, b in runs])
                if position is not None:
                    take = position[take]
                # Window ends relative to this symbol's kept rows: each run is its own block.
                ends, offset = [], 0
                for a, b in runs:
                    ends.append(ix.ends(a, b, L) - a + offset)
                    offset += b - a
                fit = {
                    "technical": scaled[take],
                    "rows": {k: v[take] for k, v in rows.items() if k in _FIT_ROWS},
                    "ends": np.concatenate(ends) if ends else np.empty(0, dtype=np.int64),
                }
            picked: dict[str, dict] = {}
            if wanted:
                # Samples carry their windows' last bar (what a consumer finds them by).
                times = table.column(TIMESTAMP_COLUMN).cast(pa.timestamp("ns", tz="UTC"))
                rows["end_time"] = times.to_numpy().astype("datetime64[ns]").view(np.int64)
            for split, ends in wanted.items():
                window = ends[:, None] + np.arange(-L + 1, 1)[None, :]
                picked[split] = {
                    "technical": scaled[window],
                    "rows": {k: v[ends] for k, v in rows.items()},
                }
            return fit, picked, table.num_rows

        with ThreadPoolExecutor(_READ_THREADS) as pool:
            parts = list(pool.map(one, index))
        fit_parts = [f for f, _, _ in parts if f]
        n_features = len(self.technical_columns)
        if fit_parts:
            self.technical = np.concatenate([f["technical"] for f in fit_parts])
            offsets = np.cumsum([0] + [len(f["technical"]) for f in fit_parts])
            self._fit_ends = np.concatenate(
                [f["ends"] + o for f, o in zip(fit_parts, offsets[:-1], strict=True)]
            ).astype(np.int64)
            self._rows = {
                k: np.concatenate([f["rows"][k] for f in fit_parts]) for k in fit_parts[0]["rows"]
            }
        else:
            self.technical = np.empty((0, n_features), dtype=np.float32)
            self._fit_ends = np.empty(0, dtype=np.int64)
            self._rows = {}
        self._samples: dict[str, tuple[dict, dict]] = {}
        for split in sample_ends:
            chunks = [p[split] for _, p, _ in parts if split in p]
            technical = (
                np.concatenate([c["technical"] for c in chunks])
                if chunks
                else np.empty((0, L, n_features), dtype=np.float32)
            )
            rows = (
                {k: np.concatenate([c["rows"][k] for c in chunks]) for k in chunks[0]["rows"]}
                if chunks
                else {}
            )
            self._samples[split] = self._as_batch(technical, rows)
        return sum(n for _, _, n in parts)

    # -- the cache: what every reader would otherwise build from every row --------------------
    def _cache_location(self, what: str, **identity: object) -> Location:
        key = {"version": _CACHE_VERSION, "metadata": self.metadata, "scalers": self._scalers}
        digest = hashlib.sha256(
            json.dumps({**key, **identity}, sort_keys=True, default=str).encode()
        ).hexdigest()[:24]
        return self.location.join(CACHE_DIR, f"{what}-{digest}.npz")

    def _cache_get(self, location: Location) -> dict[str, np.ndarray] | None:
        try:
            body = read_bytes(location, self.settings)
        except StorageError:
            return None  # not cached yet (or unreadable): built from the partitions
        try:
            with np.load(io.BytesIO(body), allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            log.warning("ignoring the cache file %s: %s", location, exc)
            return None

    def _cache_put(self, location: Location, arrays: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        try:
            write_bytes(str(location), buffer.getvalue(), self.settings)
        except (MonolithError, OSError) as exc:  # a cache is worth less than the run
            log.warning(
                "not cached at %s (%s): readers build it from the partitions",
                location,
                first_line(exc),
            )

    def _sample_location(self, split: str, cap: int | None) -> Location:
        return self._cache_location(
            f"{split}-L{self.sequence_length}", sequence_length=self.sequence_length, cap=cap
        )

    def _cached_samples(
        self, samples: dict[str, int | None], sample_ends: dict[str, dict[str, np.ndarray]]
    ) -> dict[str, tuple[dict, dict]]:
        """The samples a reader before this one cached (of the expected size), by split."""
        out = {}
        for split, cap in samples.items():
            location = self._sample_location(split, cap)
            cached = self._cache_get(location)
            if cached is None:
                continue
            features = {k.split(".", 1)[1]: v for k, v in cached.items() if k.startswith("f.")}
            targets = {k.split(".", 1)[1]: v for k, v in cached.items() if k.startswith("t.")}
            expected = sum(len(e) for e in sample_ends[split].values())
            if "technical_input" in features and len(targets.get("regime", ())) == expected:
                out[split] = (features, targets)
            else:
                log.warning("ignoring the cached sample %s: not this sample", location)
        return out

    def _cache_samples(self, samples: dict[str, int | None]) -> None:
        for split, cap in samples.items():
            features, targets = self._samples[split]
            self._cache_put(
                self._sample_location(split, cap),
                {**{f"f.{k}": v for k, v in features.items()},
                 **{f"t.{k}": v for k, v in targets.items()}},
            )  # fmt: skip

    def _scaled(self, symbol: str, table: pa.Table) -> np.ndarray:
        params = self._scalers["symbols"].get(symbol)
        if params is None:
            raise DataError(f"no scaler parameters for symbol {symbol!r} in {SCALERS_JSON}")
        values = np.column_stack(
            [table.column(c).to_numpy(zero_copy_only=False) for c in self.technical_columns]
        ).astype(np.float64, copy=False)
        offset = np.asarray(params["offset"], dtype=np.float64)
        scale = np.asarray(params["scale"], dtype=np.float64)
        return ((values - offset) / scale).astype(np.float32)

    def _row_arrays(self, ix: _SymbolIndex, table: pa.Table) -> dict[str, np.ndarray]:
        n = table.num_rows
        direction = table.column(DIRECTION_COLUMN).to_numpy(zero_copy_only=False)
        rows = {
            "instrument": np.full(n, ix.instrument, dtype=np.int32),
            "regime": table.column(REGIME_COLUMN).to_numpy(zero_copy_only=False).astype(np.int32),
            "direction": np.nan_to_num(direction.astype(np.float64), nan=-1).astype(np.int32),
        }
        for name, column in self.extra_targets.items():
            if column not in table.column_names:
                continue  # only the samples read them
            values = table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
            if probe_kind(name) == "classification":
                rows[name] = np.nan_to_num(values, nan=-1).astype(np.int32)
            else:
                rows[name] = values.astype(np.float32)
        for key, names in self.extra_inputs.items():
            if key == "embeddings_input":
                values = table.column(names[0]).to_pylist()
                rows[key] = np.asarray(values, dtype=np.float32).reshape(n, -1)
            else:
                rows[key] = np.column_stack(
                    [table.column(c).to_numpy(zero_copy_only=False) for c in names]
                ).astype(np.float32)
        return rows

    def _as_batch(self, technical: np.ndarray, rows: dict[str, np.ndarray]) -> tuple[dict, dict]:
        n = len(technical)
        features = {
            "technical_input": technical,
            "instrument_input": rows.get("instrument", np.empty(n, dtype=np.int32)),
        }
        for key in ("embeddings_input", "mcp_input", "cot_input"):
            if key in rows:
                features[key] = rows[key]
        targets = {
            "regime": rows.get("regime", np.empty(n, dtype=np.int32)),
            "direction": rows.get("direction", np.empty(n, dtype=np.int32)),
            # ns since the epoch, UTC: the window's last bar
            "end_time": rows.get("end_time", np.empty(n, dtype=np.int64)),
        }
        for name in self.extra_targets:
            kind = np.int32 if probe_kind(name) == "classification" else np.float32
            targets[name] = rows.get(name, np.empty(n, dtype=kind))
        return features, targets

    # -- sizes -------------------------------------------------------------------------------
    def window_ends(self) -> np.ndarray:
        """End rows (into ``technical``) of this shard's fit windows."""
        return self._fit_ends

    def num_windows(self, split: str) -> int:
        """Windows of ``split`` in the whole dataset (every symbol, every shard)."""
        if split not in self._global_counts:
            raise DataError(f"unknown split {split!r}; allowed {list(self._global_counts)}")
        return self._global_counts[split]

    def steps_per_epoch(self, global_batch: int) -> int:
        """Full global batches per epoch: equal on every worker (collectives need that), so
        set by the shard with the fewest windows."""
        if not self._shard_counts:
            raise DataError("this WindowSource holds no fit split")
        per_worker = global_batch // self.shard.count
        steps = min(self._shard_counts) // max(per_worker, 1)
        if steps < 1:
            raise DataError(
                f"split {self.fit_split!r} has {min(self._shard_counts)} windows on the "
                f"smallest of {self.shard.count} shard(s): fewer than one batch of {per_worker} "
                f"(train.batch_size = {global_batch} over {self.shard.count} worker(s)); lower "
                "train.batch_size or supply more data"
            )
        return steps

    def nbytes(self) -> int:
        """Bytes of data this source holds (fit rows and samples)."""
        total = self.technical.nbytes + sum(v.nbytes for v in self._rows.values())
        for features, targets in self._samples.values():
            total += sum(v.nbytes for v in features.values())
            total += sum(v.nbytes for v in targets.values())
        return int(total)

    # -- tf.data -------------------------------------------------------------------------------
    def dataset(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_shards: int = 1,
        shard_index: int = 0,
        repeat: bool = True,
        drop_remainder: bool = True,
    ):
        """A ``tf.data.Dataset`` of batches of this shard's fit windows.

        ``batch_size`` is the batch THIS pipeline yields (the per-replica batch in distributed
        training). ``num_shards``/``shard_index`` split the held windows further (for several
        input pipelines over one unsharded source).
        """
        import tensorflow as tf

        ends = self._fit_ends
        tech = tf.constant(self.technical)
        rows = {k: tf.constant(v) for k, v in self._rows.items()}
        offsets = tf.range(-self.sequence_length + 1, 1, dtype=tf.int64)
        extras = [k for k in ("embeddings_input", "mcp_input", "cot_input") if k in rows]

        def gather(idx):
            window = idx[:, None] + offsets[None, :]
            features = {
                "technical_input": tf.gather(tech, window),
                "instrument_input": tf.gather(rows["instrument"], idx),
            }
            for key in extras:
                features[key] = tf.gather(rows[key], idx)
            targets = {
                "regime": tf.gather(rows["regime"], idx),
                "direction": tf.gather(rows["direction"], idx),
            }
            return features, targets

        ds = tf.data.Dataset.from_tensor_slices(ends.astype(np.int64))
        if num_shards > 1:
            ds = ds.shard(num_shards, shard_index)
        if shuffle:
            ds = ds.shuffle(
                max(1, len(ends) // num_shards + 1), seed=seed, reshuffle_each_iteration=True
            )
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        options = tf.data.Options()
        # Sharding is ours (rows per worker); stop tf.distribute from sharding a second time.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

    # -- materialised (evaluation, probes) ----------------------------------------------------
    def arrays(
        self, split: str, max_windows: int | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The fixed sample of ``split`` (thinned evenly to ``max_windows``, if given)."""
        if split not in self._samples:
            raise DataError(
                f"split {split!r} was not loaded as a sample (loaded: {list(self._samples)})"
            )
        features, targets = self._samples[split]
        n = len(targets["regime"])
        if max_windows is not None and n > max_windows:
            pick = _even(n, max_windows)
            features = {k: v[pick] for k, v in features.items()}
            targets = {k: v[pick] for k, v in targets.items()}
        return features, targets


def _runs_of(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as runs: each run's value and length (``np.repeat`` undoes it)."""
    if len(values) == 0:
        return values[:0], np.empty(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(values[1:] != values[:-1]) + 1]
    return values[starts], np.diff(np.r_[starts, len(values)])


def _even(n: int, cap: int | None) -> np.ndarray:
    """Indices of at most ``cap`` of ``n`` items, evenly spaced (all when cap is None)."""
    if cap is None or n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))


def load_prepared_frame(prepared_dir: str | Path) -> pd.DataFrame:
    """The prepared rows (unscaled) of a local prepared dataset, sorted by (symbol, timestamp)."""
    table = pads.dataset(Path(prepared_dir) / DATASET_DIR, format="parquet")
    frame = table.to_table().to_pandas()
    return frame.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
