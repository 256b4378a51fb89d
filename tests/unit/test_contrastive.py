"""NT-Xent against a NumPy reference (one replica and across replicas) and augmentations."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import tensorflow as tf
from _subprocess import run_script

from monolith.contrastive.augment import (
    augment,
    jitter,
    make_views,
    scaling,
    time_masking,
)
from monolith.contrastive.loss import alignment, nt_xent_loss, uniformity


def numpy_nt_xent(z1: np.ndarray, z2: np.ndarray, temperature: float) -> float:
    """The textbook NT-Xent: 2N anchors, positive at i <-> i + N, self excluded."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    sim = z @ z.T / temperature
    np.fill_diagonal(sim, -np.inf)
    positive = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    log_softmax = sim - np.log(np.exp(sim).sum(axis=1, keepdims=True))
    return float(-log_softmax[np.arange(2 * n), positive].mean())


@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("n", [2, 7, 32])
def test_nt_xent_matches_numpy_reference(temperature: float, n: int) -> None:
    rng = np.random.default_rng(n)
    z1 = rng.normal(size=(n, 16)).astype(np.float32)
    z2 = (z1 + 0.5 * rng.normal(size=(n, 16))).astype(np.float32)
    got = float(nt_xent_loss(tf.constant(z1), tf.constant(z2), temperature))
    assert got == pytest.approx(numpy_nt_xent(z1, z2, temperature), abs=1e-5, rel=1e-5)


def test_nt_xent_is_low_for_matching_views_and_symmetric() -> None:
    rng = np.random.default_rng(0)
    z = tf.math.l2_normalize(tf.constant(rng.normal(size=(16, 8)), tf.float32), axis=1)
    other = tf.math.l2_normalize(tf.constant(rng.normal(size=(16, 8)), tf.float32), axis=1)
    assert float(nt_xent_loss(z, z, 0.1)) < float(nt_xent_loss(z, other, 0.1))
    assert float(nt_xent_loss(z, other, 0.1)) == pytest.approx(
        float(nt_xent_loss(other, z, 0.1)), abs=1e-6
    )


def test_alignment_and_uniformity_match_numpy() -> None:
    rng = np.random.default_rng(1)
    z1 = rng.normal(size=(12, 5)).astype(np.float32)
    z1 /= np.linalg.norm(z1, axis=1, keepdims=True)
    z2 = rng.normal(size=(12, 5)).astype(np.float32)
    z2 /= np.linalg.norm(z2, axis=1, keepdims=True)
    expected_align = np.mean(np.linalg.norm(z1 - z2, axis=1) ** 2)
    d2 = ((z1[:, None, :] - z1[None, :, :]) ** 2).sum(-1)
    expected_unif = np.log(np.mean(np.exp(-2 * d2[np.triu_indices(12, k=1)])))
    assert float(alignment(z1, z2)) == pytest.approx(expected_align, abs=1e-5)
    assert float(uniformity(tf.constant(z1))) == pytest.approx(expected_unif, abs=1e-4)


CROSS_REPLICA_SCRIPT = textwrap.dedent(
    """
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import numpy as np
    from monolith.contrastive.loss import nt_xent_loss

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    global_batch, dim, temperature = 8, 6, 0.2
    x1 = rng.normal(size=(global_batch, dim)).astype(np.float32)
    x2 = (x1 + 0.3 * rng.normal(size=(global_batch, dim))).astype(np.float32)
    kernel0 = rng.normal(size=(dim, 4)).astype(np.float32)

    # One replica holding the whole (concatenated) global batch.
    kernel = tf.Variable(kernel0)
    with tf.GradientTape() as tape:
        single = nt_xent_loss(x1 @ kernel, x2 @ kernel, temperature)
    single_grad = tape.gradient(single, kernel)

    with strategy.scope():
        shared = tf.Variable(kernel0)
    local = global_batch // 2

    def shard(values):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(
                values[ctx.replica_id_in_sync_group * local:][:local]
            )
        )

    @tf.function
    def distributed(a, b):
        def replica_fn(a, b):
            context = tf.distribute.get_replica_context()
            with tf.GradientTape() as tape:
                loss = nt_xent_loss(a @ shared, b @ shared, temperature,
                                    replica_context=context)
            return loss, tape.gradient(loss, shared)  # summed over replicas below

        loss, grad = strategy.run(replica_fn, args=(a, b))
        return (
            strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, grad, axis=None),
            strategy.experimental_local_results(loss),
        )

    loss, grad, per_replica = distributed(shard(x1), shard(x2))
    print("RESULT" + json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "single": float(single),
        "distributed": float(loss),
        "per_replica": [float(v) for v in per_replica],
        "local_only": [
            float(nt_xent_loss(x1[i * local:][:local] @ kernel0, x2[i * local:][:local] @ kernel0,
                               temperature))
            for i in range(2)
        ],
        "grad_diff": float(np.abs(np.asarray(grad) - np.asarray(single_grad)).max()),
        "grad_scale": float(np.abs(np.asarray(single_grad)).max()),
    }))
    """
)


def test_cross_replica_loss_and_gradients_equal_single_replica_on_global_batch() -> None:
    result = run_script(CROSS_REPLICA_SCRIPT)
    assert result["replicas"] == 2
    assert result["distributed"] == pytest.approx(result["single"], abs=1e-5)
    # Each replica really used the other's negatives: its loss is not the local-only loss.
    for gathered, local in zip(result["per_replica"], result["local_only"], strict=True):
        assert abs(gathered - local) > 1e-3
    assert result["grad_scale"] > 1e-3
    assert result["grad_diff"] < 1e-5


# ---- augmentations -------------------------------------------------------------------------

SEED = tf.constant([3, 4], tf.int64)


def windows(batch: int = 64, length: int = 20, features: int = 5) -> tf.Tensor:
    return tf.constant(np.random.default_rng(0).normal(size=(batch, length, features)), tf.float32)


@pytest.mark.parametrize(
    "name", ["jitter", "scaling", "time_masking", "jitter+scaling+time_masking"]
)
def test_augment_keeps_shape_and_is_deterministic(name: str) -> None:
    x = windows()
    a = augment(x, name, SEED)
    assert a.shape == x.shape
    np.testing.assert_array_equal(a.numpy(), augment(x, name, SEED).numpy())
    assert not np.allclose(a.numpy(), augment(x, name, tf.constant([3, 5], tf.int64)).numpy())
    traced = tf.function(lambda v, s: augment(v, name, s))(x, SEED)
    np.testing.assert_allclose(traced.numpy(), a.numpy(), atol=1e-6)


def test_jitter_noise_scale() -> None:
    x = tf.zeros([256, 32, 8])
    noise = jitter(x, SEED, sigma=0.05).numpy()
    assert noise.mean() == pytest.approx(0.0, abs=2e-3)
    assert noise.std() == pytest.approx(0.05, rel=0.03)


def test_scaling_factor_per_sample_and_feature() -> None:
    x = tf.ones([512, 10, 6])
    scaled = scaling(x, SEED, sigma=0.1).numpy()
    # One factor per (sample, feature): constant along time, varying across features.
    np.testing.assert_allclose(scaled, np.repeat(scaled[:, :1, :], 10, axis=1))
    factors = scaled[:, 0, :]
    assert factors.mean() == pytest.approx(1.0, abs=0.01)
    assert factors.std() == pytest.approx(0.1, rel=0.1)
    assert np.std(factors, axis=1).mean() > 0.05


@pytest.mark.parametrize(("length", "fraction", "span"), [(20, 0.2, 4), (16, 0.2, 3), (2, 0.9, 1)])
def test_time_mask_is_one_contiguous_span(length: int, fraction: float, span: int) -> None:
    x = tf.ones([128, length, 3])
    masked = time_masking(x, SEED, mask_fraction=fraction).numpy()
    zeroed = masked[:, :, 0] == 0
    assert (masked == masked[:, :, :1]).all()  # all features of a masked step
    starts = []
    for row in zeroed:
        steps = np.flatnonzero(row)
        assert len(steps) == span
        assert (np.diff(steps) == 1).all()
        starts.append(steps[0])
    assert len(set(starts)) > 1  # the span moves between windows


def test_time_mask_leaves_single_bar_windows_unchanged() -> None:
    x = windows(length=1)
    np.testing.assert_array_equal(time_masking(x, SEED).numpy(), x.numpy())
    v1, v2 = make_views(x, "jitter+time_masking", SEED)
    assert v1.shape == x.shape and not np.allclose(v1.numpy(), v2.numpy())


def test_make_views_are_two_different_augmented_views() -> None:
    x = windows()
    v1, v2 = make_views(x, "scaling", SEED)
    assert not np.allclose(v1.numpy(), x.numpy())
    assert not np.allclose(v2.numpy(), x.numpy())
    assert not np.allclose(v1.numpy(), v2.numpy())
    w1, w2 = make_views(x, "scaling", SEED)
    np.testing.assert_array_equal(v1.numpy(), w1.numpy())
    np.testing.assert_array_equal(v2.numpy(), w2.numpy())


def test_unknown_augmentation_is_named() -> None:
    with pytest.raises(ValueError, match="warp"):
        augment(windows(), "jitter+warp", SEED)
