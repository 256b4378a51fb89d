"""Config loading and validation: every bad value names its key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from monolith.config import (
    TUNED_HYPERPARAMETERS,
    MonolithConfig,
    config_from_dict,
    load_config,
)
from monolith.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_seed_best_preset_holds_the_original_hyperparameters():
    cfg = load_config(ROOT / "configs" / "seed_best.yaml")
    hp = cfg.hyperparameters()
    assert hp["learning_rate"] == 0.0015562385502385044
    assert hp["dropout_rate"] == 0.10263639892545441
    assert hp["l2_reg"] == 7.224308701685084e-05
    assert (hp["dense_units"], hp["lstm_units"], hp["latent_dim"]) == (32, 64, 80)
    assert (hp["transformer_blocks"], hp["transformer_heads"]) == (3, 8)
    assert hp["transformer_ff_dim_factor"] == 2
    assert hp["batch_size"] == 64 and hp["use_batch_norm"] is True
    assert hp["contrastive_temperature"] == 0.055566784132156696
    assert hp["augmentation_type"] == "scaling"
    assert set(TUNED_HYPERPARAMETERS) <= set(hp)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"model": {"transformer_heads": 3}}, "transformer_heads = 3 does not divide"),
        ({"train": {"augmentation_type": "mixup"}}, "train.augmentation_type = 'mixup'"),
        ({"train": {"learning_rate": -1}}, "train.learning_rate = -1"),
        ({"train": {"batch_size": 1.5}}, "train.batch_size = 1.5"),
        ({"model": {"dropout_rate": float("nan")}}, "model.dropout_rate"),
        ({"model": {"use_batch_norm": "yes"}}, "model.use_batch_norm"),
        ({"data": {"scaler": "quantile"}}, "data.scaler = 'quantile'"),
        ({"data": {"val_fraction": 0.5, "test_fraction": 0.4}}, "val_fraction + test_fraction"),
        ({"eval": {"objective": "train_loss"}}, "eval.objective = 'train_loss'"),
        ({"model": {"lstm_unit": 64}}, "model.lstm_unit"),
        ({"trainn": {}}, "unknown section(s) ['trainn']"),
        ({"data": {"synthetic": {"symbols": 0}}}, "data.synthetic.symbols = 0"),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(raw, needle):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, source="cfg.yaml")
    assert needle in str(info.value)
    assert str(info.value).startswith("cfg.yaml: ")


def test_flat_hyperparameters_reach_their_sections():
    cfg = MonolithConfig().validate()
    new = cfg.with_hyperparameters(
        {
            "learning_rate": 0.01,
            "dense_units": 96.0,  # numeric types from a search space are coerced losslessly
            "use_batch_norm": 0,
            "augmentation_type": "jitter",
            "sequence_length": 8,
        }
    )
    assert new.train.learning_rate == 0.01
    assert new.model.dense_units == 96 and isinstance(new.model.dense_units, int)
    assert new.model.use_batch_norm is False
    assert new.train.augmentation_type == "jitter"
    assert new.data.sequence_length == 8
    assert cfg.model.dense_units == 32, "the original config is not mutated"


def test_unknown_or_invalid_flat_hyperparameters_raise():
    cfg = MonolithConfig().validate()
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        cfg.with_hyperparameters({"dense_unit": 32})
    with pytest.raises(ConfigError, match="transformer_heads"):
        cfg.with_hyperparameters({"lstm_units": 96, "transformer_heads": 64})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
