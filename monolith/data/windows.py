"""Windows over a prepared dataset, delivered as a sharded, streaming ``tf.data`` pipeline.

Memory holds the scaled feature matrix once (rows x features); a window is gathered from it
on the fly by its end row, so memory does not grow with ``sequence_length x rows``.

A window of length L ending at row ``e`` is valid when rows ``e-L+1 .. e`` belong to the same
symbol, the same split and the same gap-free segment, and the direction target at ``e`` exists.
Element structure: ``(features, targets)`` with

- ``features["technical_input"]`` float32 [B, L, F] (scaled with the train-fitted scalers),
  ``features["instrument_input"]`` int32 [B], and, where present, ``embeddings_input``
  [B, E], ``mcp_input`` [B, M], ``cot_input`` [B, C] taken at the window's last bar;
- ``targets["regime"]`` int32 [B] (HMM regime at the last bar) and ``targets["direction"]``
  int32 [B] (1 when the close H bars later is higher).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from monolith.config import InputSpec
from monolith.data.splits import SPLITS, apply_scalers_json
from monolith.errors import DataError

log = logging.getLogger(__name__)

METADATA_FILE = "data_processing_metadata.json"
SCALERS_JSON = "scalers.json"
SCALERS_PKL = "scalers.pkl"
DATASET_DIR = "dataset"
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2, "purge": 3}


def is_prepared_dataset(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / METADATA_FILE).is_file() and (path / DATASET_DIR).is_dir()


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
    idx = np.arange(n)
    block_start = np.maximum.accumulate(np.where(change, idx, 0))
    ok = (
        (idx - block_start + 1 >= sequence_length)
        & has_target
        & (split_code != _SPLIT_CODE["purge"])
    )
    return idx[ok]


class WindowSource:
    """A prepared dataset loaded once per process, serving windows of every split."""

    def __init__(self, prepared_dir: str | Path, *, sequence_length: int | None = None):
        self.path = Path(prepared_dir)
        if not is_prepared_dataset(self.path):
            raise DataError(
                f"{self.path} is not a prepared dataset (expected {METADATA_FILE} and "
                f"{DATASET_DIR}/); create one with `monolith data prepare`"
            )
        self.metadata = json.loads((self.path / METADATA_FILE).read_text())
        scalers = json.loads((self.path / SCALERS_JSON).read_text())
        feats = self.metadata["features"]
        self.technical_columns: list[str] = feats["technical"]
        self.sequence_length = int(sequence_length or self.metadata["sequence_length"])
        if self.sequence_length > int(self.metadata["purge_bars"]) - int(
            self.metadata["label_horizon"]
        ):
            raise DataError(
                f"sequence_length {self.sequence_length} exceeds the purge gap this dataset was "
                f"prepared with ({self.metadata['purge_bars']} bars incl. label horizon "
                f"{self.metadata['label_horizon']}); re-prepare with the longer window"
            )

        table = pads.dataset(self.path / DATASET_DIR, format="parquet")
        frame = table.to_table().to_pandas()
        frame = frame.sort_values(["instrument_id", "timestamp"], kind="stable").reset_index(
            drop=True
        )
        symbols = frame["symbol"].astype(str).to_numpy()
        self.technical = apply_scalers_json(
            frame[self.technical_columns].to_numpy(dtype=np.float64), symbols, scalers
        )
        self.instrument = frame["instrument_id"].to_numpy(dtype=np.int32)
        self.regime = frame["hmm_regime"].to_numpy(dtype=np.int32)
        direction = frame["target_direction"].to_numpy(dtype=np.float64)
        self.direction = np.nan_to_num(direction, nan=-1).astype(np.int32)
        self.split_code = frame["split"].map(_SPLIT_CODE).to_numpy(dtype=np.int8)
        self.extras: dict[str, np.ndarray] = {}
        if feats.get("embedding_dim", 0):
            self.extras["embeddings_input"] = np.asarray(
                np.stack(frame[feats["embedding"]].to_numpy()), dtype=np.float32
            )
        if feats.get("mcp"):
            self.extras["mcp_input"] = frame[feats["mcp"]].to_numpy(dtype=np.float32)
        if feats.get("cot"):
            self.extras["cot_input"] = frame[feats["cot"]].to_numpy(dtype=np.float32)
        all_ends = valid_window_ends(
            self.instrument,
            frame["segment"].to_numpy(),
            self.split_code,
            ~np.isnan(direction),
            self.sequence_length,
        )
        self._ends = {
            name: all_ends[self.split_code[all_ends] == _SPLIT_CODE[name]] for name in SPLITS
        }
        # The final job trains on train and validation together (the test split stays out).
        self._ends["train+val"] = np.concatenate([self._ends["train"], self._ends["val"]])
        self.timestamps = frame["timestamp"].to_numpy()
        self.spec = InputSpec(
            sequence_length=self.sequence_length,
            n_technical=len(self.technical_columns),
            n_instruments=len(self.metadata["instruments"]),
            embedding_dim=int(feats.get("embedding_dim", 0)),
            mcp_dim=len(feats.get("mcp", [])),
            cot_dim=len(feats.get("cot", [])),
        )
        log.info(
            "windows (L=%d): %s",
            self.sequence_length,
            {k: len(v) for k, v in self._ends.items()},
        )

    # -- sizes -------------------------------------------------------------------------------
    def window_ends(self, split: str) -> np.ndarray:
        if split not in self._ends:
            raise DataError(f"unknown split {split!r}; allowed {list(self._ends)}")
        return self._ends[split]

    def num_windows(self, split: str) -> int:
        return len(self.window_ends(split))

    def steps_per_epoch(self, split: str, global_batch: int, num_shards: int = 1) -> int:
        """Full global batches per epoch, equal on every shard (collectives need that)."""
        per_shard = self.num_windows(split) // num_shards
        steps = per_shard // (global_batch // num_shards)
        if steps < 1:
            raise DataError(
                f"split {split!r} has {self.num_windows(split)} windows: fewer than one global "
                f"batch of {global_batch} over {num_shards} worker(s); lower train.batch_size or "
                f"supply more data"
            )
        return steps

    # -- tf.data -------------------------------------------------------------------------------
    def dataset(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_shards: int = 1,
        shard_index: int = 0,
        repeat: bool = True,
        drop_remainder: bool = True,
    ):
        """A ``tf.data.Dataset`` of batches of windows of ``split`` for one shard.

        ``batch_size`` is the batch THIS pipeline yields (the per-replica batch in
        distributed training). Sharding happens on window indices before shuffling, so each
        worker reads only its own windows.
        """
        import tensorflow as tf

        ends = self.window_ends(split)
        tech = tf.constant(self.technical)
        inst = tf.constant(self.instrument)
        regime = tf.constant(self.regime)
        direction = tf.constant(self.direction)
        extras = {k: tf.constant(v) for k, v in self.extras.items()}
        offsets = tf.range(-self.sequence_length + 1, 1, dtype=tf.int64)

        def gather(idx):
            window = idx[:, None] + offsets[None, :]
            features = {
                "technical_input": tf.gather(tech, window),
                "instrument_input": tf.gather(inst, idx),
            }
            for key, value in extras.items():
                features[key] = tf.gather(value, idx)
            targets = {"regime": tf.gather(regime, idx), "direction": tf.gather(direction, idx)}
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
        # We shard by hand above; stop tf.distribute from sharding a second time.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

    # -- materialised (evaluation, probes) ----------------------------------------------------
    def arrays(
        self, split: str, max_windows: int | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Windows of ``split`` as numpy arrays, evenly thinned to at most ``max_windows``."""
        ends = self.window_ends(split)
        if max_windows is not None and len(ends) > max_windows:
            pick = np.linspace(0, len(ends) - 1, max_windows).round().astype(np.int64)
            ends = ends[pick]
        window = ends[:, None] + np.arange(-self.sequence_length + 1, 1)[None, :]
        features = {
            "technical_input": self.technical[window],
            "instrument_input": self.instrument[ends],
        }
        for key, value in self.extras.items():
            features[key] = value[ends]
        targets = {"regime": self.regime[ends], "direction": self.direction[ends]}
        return features, targets


def load_prepared_frame(prepared_dir: str | Path) -> pd.DataFrame:
    """The prepared rows (unscaled) as one frame sorted by (symbol, timestamp)."""
    table = pads.dataset(Path(prepared_dir) / DATASET_DIR, format="parquet")
    frame = table.to_table().to_pandas()
    return frame.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
