"""The original project's training step, re-implemented faithfully as a benchmark baseline.

What it reproduces (the "Sprint 2" training loop, per optimizer step):

- Python batching over NumPy arrays: the training windows are held as arrays (here
  ``WindowSource.arrays("train")``), shuffled with a NumPy permutation once per epoch and
  sliced into batches of ``train.batch_size`` in a Python loop.
- Per-sample NumPy augmentation: a Python ``for`` loop over the batch applies
  ``augmentation_type = "scaling"`` to each raw anchor, multiplying it by one random factor
  drawn uniformly from [0.9, 1.1] (one scalar per sample). The result is the positive view.
- One negative per anchor: another sample's view, the positive batch rolled by one.
- InfoNCE with that single negative: a 2-way softmax over
  ``[cos(anchor, positive), cos(anchor, negative)] / temperature`` with the positive at
  index 0, plus the model's L2 kernel penalties. No reconstruction term.
- Eager execution (no ``tf.function``) and THREE forward passes per step through the same
  model (anchor, positive, negative), under one ``tf.GradientTape``; Adam at
  ``train.learning_rate``.

The model is the same MonolithModel architecture as ours (``build_monolith`` with the same
``ModelConfig`` and input spec), so the comparison isolates the training-loop design: data
path, augmentation, loss and execution mode. Its decoder head is computed (it is part of the
architecture) but the original loss has no reconstruction term, so only the L2 penalty
reaches the decoder kernels.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from monolith.config import InputSpec, ModelConfig, TrainConfig
from monolith.model.build import build_monolith

SCALING_LOW, SCALING_HIGH = 0.9, 1.1

Features = dict[str, np.ndarray]


def numpy_batches(features: Features, batch_size: int, seed: int) -> Iterator[Features]:
    """Endless shuffled batches sliced from in-memory arrays, one epoch after another."""
    rng = np.random.default_rng(seed)
    n = len(features["technical_input"])
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield {k: v[idx] for k, v in features.items()}


def scaling_views(anchor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The original's per-sample loop: each window times one factor from U(0.9, 1.1)."""
    positive = np.empty_like(anchor)
    for i in range(len(anchor)):
        positive[i] = anchor[i] * rng.uniform(SCALING_LOW, SCALING_HIGH)
    return positive


def info_nce_one_negative(
    z_anchor: tf.Tensor, z_positive: tf.Tensor, z_negative: tf.Tensor, temperature: float
) -> tf.Tensor:
    """Mean 2-way cross-entropy with the positive at index 0 (cosine similarities / tau)."""
    a = tf.math.l2_normalize(z_anchor, axis=1)
    p = tf.math.l2_normalize(z_positive, axis=1)
    n = tf.math.l2_normalize(z_negative, axis=1)
    logits = tf.stack([tf.reduce_sum(a * p, axis=1), tf.reduce_sum(a * n, axis=1)], axis=1)
    labels = tf.zeros(tf.shape(logits)[0], dtype=tf.int32)
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits / temperature)
    )


class OriginalTrainer:
    """Eager, three-forward-pass, single-negative contrastive training on NumPy batches."""

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, spec: InputSpec) -> None:
        self.train_cfg = train_cfg
        self.model = build_monolith(model_cfg, spec, seed=train_cfg.seed)
        self.optimizer = keras.optimizers.Adam(learning_rate=train_cfg.learning_rate)
        self.rng = np.random.default_rng(train_cfg.seed)

    def train_step(self, batch: Features) -> float:
        """One optimizer step on one NumPy batch; returns the loss as a Python float."""
        anchor = {k: v for k, v in batch.items() if k in self.model.input}
        anchor["technical_input"] = anchor["technical_input"].astype(np.float32)
        positive = dict(anchor, technical_input=scaling_views(anchor["technical_input"], self.rng))
        negative = {k: np.roll(v, 1, axis=0) for k, v in positive.items()}
        with tf.GradientTape() as tape:
            z_anchor = self.model(anchor, training=True)["projection"]
            z_positive = self.model(positive, training=True)["projection"]
            z_negative = self.model(negative, training=True)["projection"]
            loss = info_nce_one_negative(
                z_anchor, z_positive, z_negative, self.train_cfg.contrastive_temperature
            )
            if self.model.losses:
                loss = loss + tf.add_n(self.model.losses)
        variables = self.model.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return float(loss)
