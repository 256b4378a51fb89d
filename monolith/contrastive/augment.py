"""Augmentations of batched technical windows: small pure functions of tensors.

Every function takes a batch ``x`` of shape [B, L, F] and a stateless seed (a shape-[2]
integer tensor) and draws its randomness with ``tf.random.stateless_*``: the same seed gives
the same view, in eager mode, inside ``tf.function`` and on every replica of a strategy.
Features are already scaled (unit-ish variance), so the noise scales are in feature units.
"""

from __future__ import annotations

import tensorflow as tf

from monolith.config import AUGMENTATIONS

JITTER_SIGMA = 0.05
SCALING_SIGMA = 0.1
MASK_FRACTION = 0.2


def jitter(x: tf.Tensor, seed: tf.Tensor, sigma: float = JITTER_SIGMA) -> tf.Tensor:
    """Add i.i.d. Gaussian noise N(0, sigma^2) to every value of every window."""
    return x + sigma * tf.random.stateless_normal(tf.shape(x), seed, dtype=x.dtype)


def scaling(x: tf.Tensor, seed: tf.Tensor, sigma: float = SCALING_SIGMA) -> tf.Tensor:
    """Multiply each feature of each window by its own factor drawn from N(1, sigma^2).

    One factor per (sample, feature), shared across the window's time steps, so the shape of
    each series is kept while its amplitude changes.
    """
    shape = tf.stack([tf.shape(x)[0], 1, tf.shape(x)[2]])
    factors = 1.0 + sigma * tf.random.stateless_normal(shape, seed, dtype=x.dtype)
    return x * factors


def time_masking(x: tf.Tensor, seed: tf.Tensor, mask_fraction: float = MASK_FRACTION) -> tf.Tensor:
    """Zero one contiguous span of time steps per window (all features of those steps).

    The span has ``max(1, round(mask_fraction * L))`` steps, capped at ``L - 1`` so at least
    one step always survives; its start is uniform over the positions where it fits. With
    ``L = 1`` the span is empty and the window is returned unchanged: masking the only bar
    would erase the sample (zero is the scaled mean, so the view would carry no signal).
    """
    batch, length = tf.shape(x)[0], tf.shape(x)[1]
    span = tf.cast(tf.round(mask_fraction * tf.cast(length, tf.float32)), tf.int32)
    span = tf.minimum(tf.maximum(span, 1), length - 1)
    start = tf.random.stateless_uniform(
        [batch, 1], seed, minval=0, maxval=length - span + 1, dtype=tf.int32
    )
    steps = tf.range(length)[tf.newaxis, :]
    keep = tf.logical_or(steps < start, steps >= start + span)
    return x * tf.cast(keep, x.dtype)[:, :, tf.newaxis]


_BY_NAME = {"jitter": jitter, "scaling": scaling, "time_masking": time_masking}
assert set(_BY_NAME) == set(AUGMENTATIONS)


def augment(x: tf.Tensor, augmentation_type: str, seed: tf.Tensor) -> tf.Tensor:
    """Apply the augmentations named in ``augmentation_type`` ("a" or "a+b+..."), in order.

    Each part gets its own seed, folded in from ``seed`` and the part's position.
    """
    seed = tf.convert_to_tensor(seed)
    for i, name in enumerate(augmentation_type.split("+")):
        if name not in _BY_NAME:
            raise ValueError(
                f"augmentation_type = {augmentation_type!r}: unknown part {name!r}; "
                f"allowed {list(AUGMENTATIONS)} or several joined with '+'"
            )
        x = _BY_NAME[name](x, tf.random.experimental.stateless_fold_in(seed, i))
    return x


def make_views(
    x: tf.Tensor, augmentation_type: str, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Two independent stochastic views of the same windows (both augmented)."""
    seeds = tf.random.experimental.stateless_split(tf.convert_to_tensor(seed), num=2)
    return augment(x, augmentation_type, seeds[0]), augment(x, augmentation_type, seeds[1])
