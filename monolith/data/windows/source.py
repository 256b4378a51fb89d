"""``WindowSource``: the windows one worker needs from a prepared dataset.

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
Parquet row groups that hold its shard's rows (the layout and the samples come from the
cache when a reader before it built them: ``monolith.data.windows.cache``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from monolith.config import InputSpec
from monolith.data.prepared import (
    DIRECTION_COLUMN,
    FORMAT_VERSION,
    METADATA_FILE,
    REGIME_COLUMN,
    SCALERS_JSON,
    SPLIT_CODES,
    TIMESTAMP_COLUMN,
    read_json_file,
)
from monolith.data.splits import SPLITS
from monolith.data.windows.arrays import as_batch, row_arrays, scaled
from monolith.data.windows.cache import Batch, WindowCache
from monolith.data.windows.index import FIT_SPLITS, WHOLE, Shard, SymbolIndex, even
from monolith.data.windows.read import read_layout, read_partition
from monolith.data.windows.tfdata import fit_dataset
from monolith.errors import DataError
from monolith.storage import StorageSettings
from monolith.uri import Location, parse_uri

log = logging.getLogger(__name__)

# What the fit split keeps per row (the training stream's targets; extra probe targets and
# end times are read for the evaluation samples only).
_FIT_ROWS = ("instrument", "regime", "direction", "embeddings_input", "mcp_input", "cot_input")
_READ_THREADS = 4


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
        _check_format(self.location, self.metadata)
        self._scalers = read_json_file(self.location, SCALERS_JSON, settings)
        self.cache = WindowCache(self.location, settings, self.metadata, self._scalers)
        feats = self.metadata["features"]
        self.technical_columns: list[str] = feats["technical"]
        self.sequence_length = int(sequence_length or self.metadata["sequence_length"])
        _check_sequence_length(self.sequence_length, self.metadata)
        # Probe targets beyond regime and direction: only the evaluation samples carry them.
        self.extra_targets = {
            name: column
            for name, column in feats["targets"].items()
            if name not in ("regime", "direction")
        }
        _check_splits(fit_split, samples)
        self.fit_split = fit_split
        self.extra_inputs = _extra_inputs(feats)
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
        self._hold(index, dict(samples or {}))

    def _hold(self, index: list[SymbolIndex], samples: dict[str, int | None]) -> None:
        """Read and keep this shard's fit rows and the samples (cached ones from the cache)."""
        fit_rows, sample_ends = self._select(index, samples)
        cached = self.cache.samples(samples, sample_ends, self.sequence_length)
        self.rows_read = self._load(
            index, fit_rows, {s: e for s, e in sample_ends.items() if s not in cached}
        )
        self.cache.put_samples(
            {s: cap for s, cap in samples.items() if s not in cached},
            self._samples,
            self.sequence_length,
        )
        self._samples.update(cached)
        log.info(
            "windows (L=%d, shard %d/%d): fit %s %d of %s; samples %s (cached: %s); "
            "read %d of %d rows; %.1f MB",
            self.sequence_length,
            self.shard.index + 1,
            self.shard.count,
            self.fit_split,
            len(self._fit_ends),
            self._global_counts,
            {k: len(v[1]["regime"]) for k, v in self._samples.items()},
            sorted(cached),
            self.rows_read,
            sum(len(ix.split) for ix in index),
            self.nbytes() / 1e6,
        )

    # -- which rows ----------------------------------------------------------------------------
    def _read_index(self) -> list[SymbolIndex]:
        index = self.cache.layout(self._symbols)
        if index is not None:
            return index
        instruments = self.metadata["instruments"]

        def one(symbol: str) -> SymbolIndex:
            return read_layout(self.location, self.settings, symbol, int(instruments[symbol]))

        with ThreadPoolExecutor(_READ_THREADS) as pool:
            index = list(pool.map(one, self._symbols))
        self.cache.put_layout(index)
        return index

    def _fit_runs(self, ix: SymbolIndex, shard: int) -> list[tuple[int, int]]:
        """This symbol's rows of the fit split that shard ``shard`` holds."""
        out = []
        for split in FIT_SPLITS[self.fit_split or "train"]:
            for start, stop in ix.runs(SPLIT_CODES[split]):
                out.append(self.shard.bounds(start, stop, shard))
        return out

    def _count_shards(self, index: list[SymbolIndex]) -> list[int]:
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
        self, index: list[SymbolIndex], samples: dict[str, int | None]
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
            pick = even(total, cap)
            offsets = np.cumsum([0] + [len(e) for e in per_symbol])
            sample_ends[split] = {}
            for ix, ends, lo, hi in zip(index, per_symbol, offsets[:-1], offsets[1:], strict=True):
                chosen = pick[(pick >= lo) & (pick < hi)] - lo
                sample_ends[split][ix.symbol] = ends[chosen]
        return fit_rows, sample_ends

    # -- reading the rows ----------------------------------------------------------------------
    def _load(
        self,
        index: list[SymbolIndex],
        fit_rows: dict[str, list[tuple[int, int]]],
        sample_ends: dict[str, dict[str, np.ndarray]],
    ) -> int:
        """Read each symbol's feature rows once (only the row groups of this shard's fit rows
        when no sample needs the rest); keep the fit rows and build the samples. Returns the
        rows read."""
        columns = [*self.technical_columns, REGIME_COLUMN, DIRECTION_COLUMN, TIMESTAMP_COLUMN]
        columns += [c for names in self.extra_inputs.values() for c in names]
        if sample_ends:
            columns += list(self.extra_targets.values())

        def one(ix: SymbolIndex) -> tuple[dict, dict[str, dict], int]:
            wanted = {split: ends[ix.symbol] for split, ends in sample_ends.items()}
            return self._load_symbol(ix, columns, fit_rows[ix.symbol], wanted)

        with ThreadPoolExecutor(_READ_THREADS) as pool:
            parts = list(pool.map(one, index))
        self._keep_fit([f for f, _, _ in parts if f])
        self._samples: dict[str, Batch] = {}
        n_features = len(self.technical_columns)
        for split in sample_ends:
            chunks = [p[split] for _, p, _ in parts if split in p]
            technical = (
                np.concatenate([c["technical"] for c in chunks])
                if chunks
                else np.empty((0, self.sequence_length, n_features), dtype=np.float32)
            )
            rows = (
                {k: np.concatenate([c["rows"][k] for c in chunks]) for k in chunks[0]["rows"]}
                if chunks
                else {}
            )
            self._samples[split] = as_batch(technical, rows, self.extra_targets)
        return sum(n for _, _, n in parts)

    def _load_symbol(
        self,
        ix: SymbolIndex,
        columns: list[str],
        runs: list[tuple[int, int]],
        wanted: dict[str, np.ndarray],
    ) -> tuple[dict, dict[str, dict], int]:
        """One symbol's fit rows (``runs``) and its windows of each sample (``wanted``: split
        -> window ends), and how many rows were read."""
        L = self.sequence_length
        if not any(b > a for a, b in runs) and not any(len(e) for e in wanted.values()):
            return {}, {}, 0
        # The samples need rows of every group; the fit rows only their own groups.
        table, position = read_partition(
            self.location, self.settings, ix.symbol, columns, None if wanted else runs
        )
        technical = scaled(self._scalers, ix.symbol, table, self.technical_columns)
        rows = row_arrays(ix, table, self.extra_targets, self.extra_inputs)
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
                "technical": technical[take],
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
                "technical": technical[window],
                "rows": {k: v[ends] for k, v in rows.items()},
            }
        return fit, picked, table.num_rows

    def _keep_fit(self, fit_parts: list[dict]) -> None:
        """Hold the symbols' fit rows as one block, with their window ends into it."""
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
            self.technical = np.empty((0, len(self.technical_columns)), dtype=np.float32)
            self._fit_ends = np.empty(0, dtype=np.int64)
            self._rows = {}

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

    def dataset(self, batch_size: int, **options: Any):
        """A ``tf.data.Dataset`` of batches of this shard's fit windows.

        ``batch_size`` is the batch THIS pipeline yields (the per-replica batch in distributed
        training). ``options`` are ``tfdata.fit_dataset``'s: ``shuffle`` (True), ``seed`` (0),
        ``repeat`` (True), ``drop_remainder`` (True), and ``num_shards``/``shard_index``
        (1, 0), which split the held windows further (for several input pipelines over one
        unsharded source).
        """
        return fit_dataset(
            self.technical,
            self._rows,
            self._fit_ends,
            self.sequence_length,
            batch_size,
            **options,
        )

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
            pick = even(n, max_windows)
            features = {k: v[pick] for k, v in features.items()}
            targets = {k: v[pick] for k, v in targets.items()}
        return features, targets


def _check_format(location: Location, metadata: dict[str, Any]) -> None:
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(
            f"{location} is a prepared dataset of format {version}; this version reads "
            f"format {FORMAT_VERSION} (forward probe targets, a purge covering their "
            "horizons): prepare it again with `monolith data prepare --overwrite`"
        )


def _check_sequence_length(sequence_length: int, metadata: dict[str, Any]) -> None:
    """A window must fit in the purge gap, or a split's last windows would see the next."""
    horizon = max(metadata["target_horizons"].values())
    if sequence_length > int(metadata["purge_bars"]) - horizon:
        raise DataError(
            f"sequence_length {sequence_length} exceeds the purge gap this dataset was "
            f"prepared with ({metadata['purge_bars']} bars incl. the longest target "
            f"horizon {horizon}); re-prepare with the longer window"
        )


def _check_splits(fit_split: str | None, samples: Mapping[str, int | None] | None) -> None:
    if fit_split is not None and fit_split not in FIT_SPLITS:
        raise DataError(f"fit split {fit_split!r} is not one of {list(FIT_SPLITS)}")
    for split in samples or {}:
        if split not in SPLITS:
            raise DataError(f"sample split {split!r} is not one of {list(SPLITS)}")


def _extra_inputs(feats: dict[str, Any]) -> dict[str, list[str]]:
    """The model inputs beyond the technical columns this dataset has, and their columns."""
    extra = {
        "embeddings_input": [feats["embedding"]] if feats.get("embedding_dim") else [],
        "mcp_input": list(feats.get("mcp", [])),
        "cot_input": list(feats.get("cot", [])),
    }
    return {k: v for k, v in extra.items() if v}
