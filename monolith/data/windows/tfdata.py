"""The training stream: a ``tf.data`` pipeline that gathers windows on the fly by end row.

Rows are held once (rows x features, scaled); each batch gathers its windows from them, so
the windows are never materialised. The stream carries regime and direction only.
"""

from __future__ import annotations

import numpy as np

from monolith.data.windows.arrays import EXTRA_INPUTS


def fit_dataset(
    technical: np.ndarray,
    rows: dict[str, np.ndarray],
    ends: np.ndarray,
    sequence_length: int,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    num_shards: int = 1,
    shard_index: int = 0,
    repeat: bool = True,
    drop_remainder: bool = True,
):
    """A ``tf.data.Dataset`` of batches of the windows of ``sequence_length`` rows ending at
    ``ends`` (rows into ``technical`` and ``rows``); see ``WindowSource.dataset``."""
    import tensorflow as tf

    tech = tf.constant(technical)
    rows = {k: tf.constant(v) for k, v in rows.items()}
    offsets = tf.range(-sequence_length + 1, 1, dtype=tf.int64)
    extras = [k for k in EXTRA_INPUTS if k in rows]

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
