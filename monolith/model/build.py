"""``build_monolith``: the MonolithModel as a Keras functional model.

Inputs (by name): ``technical_input`` [L, F] float32, ``instrument_input`` [] int32, and,
only when the spec gives them a width, ``embeddings_input`` [E], ``mcp_input`` [M],
``cot_input`` [C]. Outputs (a dict): ``latent`` (the representation we publish),
``projection`` (unit-norm vectors the contrastive loss sees) and ``reconstruction`` (the
technical window decoded from the latent).
"""

from __future__ import annotations

from typing import Any

import keras

from monolith.config import InputSpec, ModelConfig
from monolith.model.layers import L2Normalize, TransformerBlock, l2_regularizer

OUTPUTS = ("latent", "projection", "reconstruction")
OPTIONAL_INPUTS = {
    "embeddings_input": "embedding_dim",
    "mcp_input": "mcp_dim",
    "cot_input": "cot_dim",
}


def input_names(spec: InputSpec) -> list[str]:
    """The model's input names for ``spec``: the two always present, then the optional ones."""
    names = ["technical_input", "instrument_input"]
    return names + [name for name, dim in OPTIONAL_INPUTS.items() if getattr(spec, dim) > 0]


def build_monolith(
    model_cfg: ModelConfig, spec: InputSpec, *, seed: int | None = None
) -> keras.Model:
    """Build the MonolithModel.

    Args:
        model_cfg: architecture hyperparameters.
        spec: input shapes; a zero width leaves that branch out.
        seed: when given, the global Keras seed is set first, so the initial weights (and
            dropout streams) are a function of the seed alone.

    Returns:
        A functional ``keras.Model`` taking a dict of named inputs and returning
        ``{"latent", "projection", "reconstruction"}``.
    """
    if seed is not None:
        keras.utils.set_random_seed(seed)
    reg = l2_regularizer(model_cfg.l2_reg)
    window = (spec.sequence_length, spec.n_technical)

    technical = keras.Input(window, dtype="float32", name="technical_input")
    instrument = keras.Input((), dtype="int32", name="instrument_input")
    inputs = {"technical_input": technical, "instrument_input": instrument}

    # The layers are made in this order on purpose: with a seed, the initial weights depend
    # on the order in which layers draw from Keras's global seed.
    branches = [_sequence_branch(technical, model_cfg, reg)]
    branches.append(
        keras.layers.Embedding(
            spec.n_instruments, model_cfg.instrument_embedding_dim, name="instrument_embedding"
        )(instrument)
    )
    branches += _side_branches(spec, model_cfg, reg, inputs)
    merged = keras.layers.Concatenate(name="merge")(branches)
    latent = keras.layers.Dense(model_cfg.latent_dim, kernel_regularizer=reg, name="latent")(merged)
    return keras.Model(
        inputs=inputs,
        outputs={"latent": latent, **_heads(latent, model_cfg, reg, window)},
        name="monolith",
    )


def _sequence_branch(technical: Any, model_cfg: ModelConfig, reg: Any) -> Any:
    """The technical window through the input dense layer, the LSTM and the transformer
    blocks, pooled over time."""
    x = keras.layers.Dense(model_cfg.dense_units, kernel_regularizer=reg, name="input_dense")(
        technical
    )
    if model_cfg.use_batch_norm:
        x = keras.layers.BatchNormalization(name="input_batch_norm")(x)
    x = keras.layers.Activation("relu", name="input_relu")(x)
    x = keras.layers.Dropout(model_cfg.dropout_rate, name="input_dropout")(x)
    x = keras.layers.LSTM(
        model_cfg.lstm_units,
        return_sequences=True,
        kernel_regularizer=reg,
        recurrent_regularizer=reg,
        name="lstm",
    )(x)
    for i in range(model_cfg.transformer_blocks):
        x = TransformerBlock(
            num_heads=model_cfg.transformer_heads,
            ff_dim=model_cfg.transformer_ff_dim_factor * model_cfg.lstm_units,
            dropout_rate=model_cfg.dropout_rate,
            l2_reg=model_cfg.l2_reg,
            name=f"transformer_{i}",
        )(x)
    return keras.layers.GlobalAveragePooling1D(name="sequence_pool")(x)


def _side_branches(
    spec: InputSpec, model_cfg: ModelConfig, reg: Any, inputs: dict[str, Any]
) -> list[Any]:
    """A dense branch per optional input the spec gives a width; each input joins ``inputs``."""
    branches = []
    for name, dim_attr in OPTIONAL_INPUTS.items():
        width = getattr(spec, dim_attr)
        if width <= 0:
            continue
        side = keras.Input((width,), dtype="float32", name=name)
        inputs[name] = side
        branch_name = name.removesuffix("_input")
        branches.append(
            keras.layers.Dense(
                model_cfg.dense_units,
                activation="relu",
                kernel_regularizer=reg,
                name=f"{branch_name}_dense",
            )(side)
        )
    return branches


def _heads(
    latent: Any, model_cfg: ModelConfig, reg: Any, window: tuple[int, int]
) -> dict[str, Any]:
    """The two heads on the latent: the unit-norm ``projection`` the contrastive loss sees
    and the ``reconstruction`` of the technical window."""
    hidden = keras.layers.Dense(
        model_cfg.latent_dim, activation="relu", kernel_regularizer=reg, name="projection_hidden"
    )(latent)
    hidden = keras.layers.Dense(
        model_cfg.projection_dim, kernel_regularizer=reg, name="projection_out"
    )(hidden)
    projection = L2Normalize(name="projection")(hidden)

    length, n_features = window
    decoded = keras.layers.Dense(
        model_cfg.dense_units, activation="relu", kernel_regularizer=reg, name="decoder_hidden"
    )(latent)
    decoded = keras.layers.Dense(length * n_features, kernel_regularizer=reg, name="decoder_out")(
        decoded
    )
    reconstruction = keras.layers.Reshape(window, name="reconstruction")(decoded)
    return {"projection": projection, "reconstruction": reconstruction}


def encoder_from(model: keras.Model) -> keras.Model:
    """The sub-model from the named inputs to the ``latent`` output (weights shared)."""
    return keras.Model(
        inputs=model.inputs, outputs=model.get_layer("latent").output, name="encoder"
    )
