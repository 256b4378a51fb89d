"""Registered Keras layers of the MonolithModel.

Every layer here is a registered serializable class with ``get_config``; the model has no
``Lambda`` layers, so a saved ``.keras`` file loads with ``safe_mode=True`` and no custom
code path beyond importing this module.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


def l2_regularizer(l2_reg: float) -> keras.regularizers.Regularizer | None:
    """An L2 kernel regulariser, or None when ``l2_reg`` is 0 (no zero-valued losses)."""
    return keras.regularizers.L2(l2_reg) if l2_reg > 0 else None


@keras.saving.register_keras_serializable(package="monolith")
class TransformerBlock(keras.layers.Layer):
    """Post-norm transformer encoder block: self-attention and a ReLU feed-forward network.

    The attention width is the width of the input sequence; each head has
    ``key_dim = width // num_heads``. Kernels carry L2 regularisation ``l2_reg``.
    """

    def __init__(
        self,
        num_heads: int,
        ff_dim: int,
        dropout_rate: float = 0.0,
        l2_reg: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.ff_dim = int(ff_dim)
        self.dropout_rate = float(dropout_rate)
        self.l2_reg = float(l2_reg)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        width = int(input_shape[-1])
        if width % self.num_heads != 0:
            raise ValueError(
                f"TransformerBlock: num_heads = {self.num_heads} does not divide the width {width}"
            )
        reg = l2_regularizer(self.l2_reg)
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=width // self.num_heads,
            dropout=self.dropout_rate,
            kernel_regularizer=reg,
            name="attention",
        )
        self.attention_dropout = keras.layers.Dropout(self.dropout_rate)
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="attention_norm")
        self.ff_hidden = keras.layers.Dense(
            self.ff_dim, activation="relu", kernel_regularizer=reg, name="ff_hidden"
        )
        self.ff_out = keras.layers.Dense(width, kernel_regularizer=reg, name="ff_out")
        self.ff_dropout = keras.layers.Dropout(self.dropout_rate)
        self.ff_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="ff_norm")
        self.attention.build(input_shape, input_shape)
        self.attention_norm.build(input_shape)
        self.ff_hidden.build(input_shape)
        self.ff_out.build((*input_shape[:-1], self.ff_dim))
        self.ff_norm.build(input_shape)
        super().build(input_shape)

    def call(self, x: Any, training: bool | None = None) -> Any:
        attended = self.attention(x, x, training=training)
        x = self.attention_norm(x + self.attention_dropout(attended, training=training))
        ff = self.ff_out(self.ff_hidden(x))
        return self.ff_norm(x + self.ff_dropout(ff, training=training))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "dropout_rate": self.dropout_rate,
            "l2_reg": self.l2_reg,
        }


@keras.saving.register_keras_serializable(package="monolith")
class L2Normalize(keras.layers.Layer):
    """Scales each vector to unit L2 norm along ``axis`` (the contrastive embedding space)."""

    def __init__(self, axis: int = -1, epsilon: float = 1e-12, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.epsilon = float(epsilon)

    def call(self, x: Any) -> Any:
        squared = ops.sum(ops.square(x), axis=self.axis, keepdims=True)
        return x * ops.rsqrt(ops.maximum(squared, self.epsilon))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon}
