"""Adam whose per-variable update is TensorFlow's fused kernel.

Keras 3's ``Adam.update_step`` is written in backend-neutral ``keras.ops``: about twenty graph
ops per variable (casts, powers, the moment updates, the step), so the MonolithModel's 66
variables put ~1,300 ops into every training step, each traced in a run's first epoch and
executed every step. ``FusedAdam`` is the same algorithm with the same state (Keras's
``momentum`` / ``velocity`` variables and ``iterations``), updated by ``ResourceApplyAdam``,
the kernel ``tf.keras`` 2 used; the step's scalars (the bias corrections, the rate) are made
once per step for all variables, not once per variable (with Grappler off, as on one-CPU
workers, nothing folds them away: ~400 more ops a step). Measured in one worker of
``configs/local.yaml`` on the 2-core reference machine: the first call of the compiled
training loop (trace and 40 steps) fell from 5.7 s to 3.8 s. Its result equals Keras's to
float rounding (``tests/unit/test_optimizer.py``); a checkpoint of either restores into the other.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` (no AMSGrad) with the update in one TensorFlow op per
    variable; everything else, weight decay and clipping included, is Keras's."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError("FusedAdam has no AMSGrad variant; use keras.optimizers.Adam")
        self._step_scalars: dict = {}

    def apply(self, grads, trainable_variables=None):
        self._step_scalars = {}  # this step's scalars, made by its first variable's update
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._step_scalars = {}

    def _scalars(self, dtype, learning_rate) -> dict[str, tf.Tensor]:
        """The update's scalar inputs, once per step for all variables (per device copy of
        the learning rate under a strategy with several devices per worker)."""
        key = (dtype, id(learning_rate))
        if key not in self._step_scalars:
            step = tf.cast(self.iterations + 1, dtype)
            beta_1, beta_2 = tf.constant(self.beta_1, dtype), tf.constant(self.beta_2, dtype)
            scalars = {
                "beta1_power": tf.pow(beta_1, step),
                "beta2_power": tf.pow(beta_2, step),
                "lr": tf.cast(learning_rate, dtype),
                "beta1": beta_1,
                "beta2": beta_2,
                "epsilon": tf.constant(self.epsilon, dtype),
            }
            self._step_scalars[key] = (learning_rate, scalars)  # the rate kept: its id stays
        return self._step_scalars[key][1]

    def update_step(self, gradient, variable, learning_rate) -> None:
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        # Under a tf.distribute update each of these resolves to this device's copy.
        m, v = (slots[index].value for slots in (self._momentums, self._velocities))
        # Keras's update exactly: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
        # var -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + epsilon).
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=m.handle,
            v=v.handle,
            # A sparse gradient (IndexedSlices) becomes dense, its duplicate rows summed.
            grad=tf.cast(tf.convert_to_tensor(gradient), dtype),
            use_locking=False,
            **self._scalars(dtype, learning_rate),
        )
