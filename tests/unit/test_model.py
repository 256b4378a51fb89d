"""build_monolith: inputs, outputs, serialisation with safe_mode, registered layers."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from monolith.config import InputSpec, ModelConfig
from monolith.model import L2Normalize, TransformerBlock, build_monolith, encoder_from

SMALL = ModelConfig(
    dense_units=8,
    lstm_units=8,
    transformer_blocks=2,
    transformer_heads=2,
    latent_dim=12,
    projection_dim=6,
    instrument_embedding_dim=3,
)
FULL_SPEC = InputSpec(6, 4, 3, embedding_dim=5, mcp_dim=2, cot_dim=3)


def features(spec: InputSpec, n: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {
        "technical_input": rng.normal(size=(n, spec.sequence_length, spec.n_technical)).astype(
            np.float32
        ),
        "instrument_input": rng.integers(0, spec.n_instruments, n).astype(np.int32),
    }
    for name, width in (
        ("embeddings_input", spec.embedding_dim),
        ("mcp_input", spec.mcp_dim),
        ("cot_input", spec.cot_dim),
    ):
        if width:
            out[name] = rng.normal(size=(n, width)).astype(np.float32)
    return out


def test_inputs_and_outputs_are_named_and_shaped() -> None:
    model = build_monolith(SMALL, FULL_SPEC, seed=0)
    assert sorted(model.input) == sorted(
        ["technical_input", "instrument_input", "embeddings_input", "mcp_input", "cot_input"]
    )
    out = model(features(FULL_SPEC), training=False)
    assert set(out) == {"latent", "projection", "reconstruction"}
    assert out["latent"].shape == (5, 12)
    assert out["projection"].shape == (5, 6)
    assert out["reconstruction"].shape == (5, 6, 4)
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(out["projection"]), axis=1), 1.0, atol=1e-5
    )


def test_absent_branches_create_no_inputs_and_single_bar_windows_work() -> None:
    spec = InputSpec(1, 4, 2)
    model = build_monolith(SMALL, spec, seed=0)
    assert sorted(model.input) == ["instrument_input", "technical_input"]
    assert model(features(spec), training=True)["reconstruction"].shape == (5, 1, 4)


def test_no_lambda_layers_and_all_custom_layers_registered() -> None:
    model = build_monolith(SMALL, FULL_SPEC, seed=0)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "Lambda" not in kinds
    assert {"TransformerBlock", "L2Normalize"} <= kinds
    for cls in (TransformerBlock, L2Normalize):
        assert keras.saving.get_registered_object(f"monolith>{cls.__name__}") is cls


def test_keras_round_trip_with_safe_mode_gives_identical_outputs(tmp_path: Path) -> None:
    model = build_monolith(SMALL, FULL_SPEC, seed=0)
    x = features(FULL_SPEC)
    model(x, training=True)  # move batch-norm statistics off their initial values
    path = tmp_path / "monolith.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    before, after = model(x, training=False), loaded(x, training=False)
    for name in before:
        np.testing.assert_array_equal(np.asarray(before[name]), np.asarray(after[name]))
    encoder = encoder_from(loaded)
    np.testing.assert_array_equal(np.asarray(encoder(x)), np.asarray(before["latent"]))


def test_same_seed_same_weights() -> None:
    a = build_monolith(SMALL, FULL_SPEC, seed=5).get_weights()
    b = build_monolith(SMALL, FULL_SPEC, seed=5).get_weights()
    c = build_monolith(SMALL, FULL_SPEC, seed=6).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_l2_penalties_follow_l2_reg() -> None:
    with_reg = build_monolith(SMALL, FULL_SPEC, seed=0)
    without = build_monolith(ModelConfig(**{**SMALL.__dict__, "l2_reg": 0.0}), FULL_SPEC, seed=0)
    assert len(with_reg.losses) > 0 and float(sum(with_reg.losses)) > 0
    assert len(without.losses) == 0


def test_transformer_block_config_round_trip() -> None:
    block = TransformerBlock(num_heads=2, ff_dim=16, dropout_rate=0.1, l2_reg=1e-4, name="t")
    clone = TransformerBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()
    with pytest.raises(ValueError, match="num_heads"):
        TransformerBlock(num_heads=3, ff_dim=4).build((None, 5, 8))
