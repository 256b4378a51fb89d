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

ROOT = Path(__file__).resolve().parents[2]


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
        # probes and the objectives they allow
        (
            {"eval": {"objective": "val_probe_fwd_vol_h24_lift", "probes": ["regime"]}},
            "eval.objective = 'val_probe_fwd_vol_h24_lift' is invalid: probe 'fwd_vol_h24' is "
            "not configured",
        ),
        ({"eval": {"objective": "val_probe_regime_random"}}, "unknown metric"),
        ({"eval": {"probes": ["regime", "volatility"]}}, "'volatility' is unknown"),
        ({"eval": {"probes": ["regime", "regime"]}}, "['regime'] listed twice"),
        ({"eval": {"probes": []}}, "eval.probes = [] is invalid"),
        (
            {"eval": {"probes": ["direction_h12"]}},
            "'direction_h12' needs 12 in data.direction_horizons = [1, 24]",
        ),
        (
            {"data": {"volatility_horizons": [6]}},  # the default probes want fwd_vol_h24
            "'fwd_vol_h24' needs 24 in data.volatility_horizons = [6]",
        ),
        ({"data": {"direction_horizons": [0]}}, "data.direction_horizons = [0]"),
        ({"data": {"volatility_horizons": 24}}, "data.volatility_horizons = 24"),
        ({"data": {"direction_horizons": [4, 4]}}, "listed twice"),
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


def test_any_configured_probe_score_or_lift_is_an_objective():
    from monolith.config import DEFAULT_PROBES, OBJECTIVES

    cfg = config_from_dict(
        {
            "data": {"direction_horizons": [2], "volatility_horizons": [6, 48]},
            "eval": {
                "probes": ["regime", "direction_h2", "fwd_vol_h48", "knn_views"],
                "objective": "val_probe_fwd_vol_h48_lift_vs_raw",
            },
        }
    )
    assert cfg.eval.mode == "max"
    assert cfg.data.purge_bars == cfg.data.sequence_length + 48  # the longest horizon
    assert cfg.data.target_horizons == {
        "direction": 4,
        "direction_h2": 2,
        "fwd_vol_h6": 6,
        "fwd_vol_h48": 48,
    }
    for objective in ("val_probe_knn_views", "val_probe_direction_h2_lift", "val_ref_ntxent"):
        assert config_from_dict(
            {**cfg.to_dict(), "eval": {**cfg.to_dict()["eval"], "objective": objective}}
        )
    assert OBJECTIVES["val_ref_ntxent"] == "min" and OBJECTIVES["val_probe_mean_lift"] == "max"
    assert OBJECTIVES["val_probe_direction_h7_lift_vs_random"] == "max"
    assert "val_probe_direction_h7_random" not in OBJECTIVES and "val_loss" not in OBJECTIVES
    assert set(OBJECTIVES) == {
        "val_ref_ntxent",
        "val_probe_mean_lift",
        *(f"val_probe_{p}_lift" for p in DEFAULT_PROBES),
    }
    assert MonolithConfig().validate().eval.probes == list(DEFAULT_PROBES)
