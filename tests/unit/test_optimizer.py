"""FusedAdam: Keras's Adam to float rounding, in one process and across mirrored replicas,
with the same state (so checkpoints of either restore into the other)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from _subprocess import run_script

from monolith.contrastive.optimizer import FusedAdam


def _train(optimizer: keras.optimizers.Optimizer, steps: int = 6) -> list[np.ndarray]:
    """A small dense model (a sparse embedding gradient too) after ``steps`` compiled steps."""
    keras.utils.set_random_seed(3)
    inputs = {"x": keras.Input((5,), name="x"), "id": keras.Input((), dtype="int32", name="id")}
    hidden = keras.layers.Dense(7, activation="tanh")(inputs["x"])
    embedded = keras.layers.Embedding(4, 7)(inputs["id"])
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden + embedded))
    optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    batches = [
        {"x": rng.normal(size=(8, 5)).astype("float32"), "id": rng.integers(0, 4, 8)}
        for _ in range(steps)
    ]

    @tf.function(autograph=False)
    def step(batch: dict) -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(batch) - 1.0))
        # Dense, as the trainer hands them over (Keras updates a sparse gradient's
        # duplicate rows one by one, which is not Adam's update of their sum).
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    for batch in batches:
        step({k: tf.constant(v) for k, v in batch.items()})
    return [np.array(v) for v in model.get_weights()]


def test_fused_adam_matches_keras_adam() -> None:
    keras_weights = _train(keras.optimizers.Adam(learning_rate=0.05))
    fused_weights = _train(FusedAdam(learning_rate=0.05))
    initial = _train(FusedAdam(learning_rate=0.05), steps=0)
    for ours, theirs, before in zip(fused_weights, keras_weights, initial, strict=True):
        assert not np.allclose(ours, before)  # it trained
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_fused_adam_has_keras_adams_state() -> None:
    variables = [keras.Variable(np.ones((3, 2), "float32")), keras.Variable(np.zeros(4, "float32"))]
    ours, theirs = FusedAdam(), keras.optimizers.Adam()
    ours.build(variables)
    theirs.build(variables)

    def layout(optimizer: keras.optimizers.Optimizer) -> list[tuple[str, tuple]]:
        # A checkpoint holds the values in this order; the name before "/" is the instance's.
        return [(v.path.split("/", 1)[1], tuple(v.shape)) for v in optimizer.variables]

    assert layout(ours) == layout(theirs)
    assert len(layout(ours)) == 2 + 2 * len(variables)  # iterations, rate, m and v of each


def test_fused_adam_refuses_amsgrad() -> None:
    with pytest.raises(ValueError, match="AMSGrad"):
        FusedAdam(amsgrad=True)


MIRRORED_SCRIPT = """
import json
import sys
sys.path.insert(0, TESTS_DIR)
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from test_trainer import MODEL, SPEC, TRAIN, TRAIN_DATA
from monolith.config import EvalConfig
from monolith.contrastive.trainer import ContrastiveTrainer

def dataset_fn(context):
    per_replica = context.get_per_replica_batch_size(TRAIN.batch_size)
    return (tf.data.Dataset.from_tensor_slices(TRAIN_DATA)
            .batch(per_replica, drop_remainder=True).repeat())

out = {}
for name in ("fused", "keras"):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    trainer = ContrastiveTrainer(MODEL, TRAIN, EvalConfig(), SPEC, strategy=strategy)
    if name == "keras":  # the same state, updated by Keras's own Adam
        with strategy.scope():
            trainer.optimizer = keras.optimizers.Adam(learning_rate=TRAIN.learning_rate)
            trainer.optimizer.build(trainer.model.trainable_variables)
    out["optimizer"] = type(trainer.optimizer).__name__ if name == "fused" else out["optimizer"]
    trainer.train_steps(trainer.make_iterator(dataset_fn), 1)
    replicas = [
        [np.array(c).tolist() for c in strategy.experimental_local_results(v.value)]
        for v in trainer.model.trainable_variables
    ]
    out[name] = replicas
print("RESULT" + json.dumps(out))
"""


def test_fused_adam_under_a_two_replica_strategy_matches_keras_adam() -> None:
    """The trainer's own optimizer, in a compiled distributed step: every replica's copy of
    every variable moves as Keras's Adam moves it (one step: later ones start from weights a
    rounding apart, which Adam's normalised update amplifies where a gradient is near 0)."""
    result = run_script(MIRRORED_SCRIPT)
    assert result["optimizer"] == "FusedAdam"
    for fused, theirs in zip(result["fused"], result["keras"], strict=True):
        first, second = (np.array(c) for c in fused)
        np.testing.assert_array_equal(first, second)  # the replicas stay in step
        np.testing.assert_allclose(first, np.array(theirs[0]), rtol=1e-5, atol=1e-7)
