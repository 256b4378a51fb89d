"""Comparable validation metrics and linear probes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from monolith.config import OBJECTIVES, EvalConfig, InputSpec, ModelConfig
from monolith.evaluate import Evaluator, evaluate_epoch, even_sample, probe_score, raw_features
from monolith.model import build_monolith

SPEC = InputSpec(sequence_length=6, n_technical=3, n_instruments=2)
MODEL = ModelConfig(
    dense_units=8,
    lstm_units=8,
    transformer_blocks=1,
    transformer_heads=2,
    latent_dim=8,
    projection_dim=8,
    instrument_embedding_dim=2,
)
EVAL = EvalConfig(reference_batch_size=32, probe_max_windows=120)


def fake_windows(n: int, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    regime = rng.integers(0, 3, n).astype(np.int32)
    x = rng.normal(size=(n, SPEC.sequence_length, SPEC.n_technical)).astype(np.float32)
    x += (regime[:, None, None] - 1).astype(np.float32)
    direction = (x[:, -1, 1] > 0).astype(np.int32)
    return (
        {"technical_input": x, "instrument_input": rng.integers(0, 2, n).astype(np.int32)},
        {"regime": regime, "direction": direction},
    )


TRAIN, VAL = fake_windows(200, 0), fake_windows(100, 1)


def evaluator(**overrides: object) -> Evaluator:
    settings = {
        "train_temperature": 0.07,
        "train_augmentation": "scaling",
        "train_batch_size": 16,
        "train_seed": 3,
    }
    settings.update(overrides)
    return Evaluator(MODEL, EVAL, SPEC, VAL, TRAIN, **settings)  # type: ignore[arg-type]


def test_metrics_include_every_objective_and_lifts_over_the_stronger_baseline() -> None:
    model = build_monolith(MODEL, SPEC, seed=11)
    metrics = evaluate_epoch(model, evaluator())
    assert set(OBJECTIVES) <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    for target in ("regime", "direction"):
        score = metrics[f"val_probe_{target}"]
        random, raw = metrics[f"val_probe_{target}_random"], metrics[f"val_probe_{target}_raw"]
        assert metrics[f"val_probe_{target}_lift_vs_random"] == pytest.approx(score - random)
        assert metrics[f"val_probe_{target}_lift_vs_raw"] == pytest.approx(score - raw)
        assert metrics[f"val_probe_{target}_lift"] == pytest.approx(score - max(random, raw))
    assert metrics["val_probe_mean_lift"] == pytest.approx(
        (metrics["val_probe_regime_lift"] + metrics["val_probe_direction_lift"]) / 2
    )
    # The raw baseline sees what the fake targets are made of.
    assert metrics["val_probe_regime_raw"] > 0.8 and metrics["val_probe_direction_raw"] > 0.8


def test_reference_metrics_do_not_depend_on_the_runs_own_settings() -> None:
    model = build_monolith(MODEL, SPEC, seed=11)
    a = evaluate_epoch(model, evaluator())
    b = evaluate_epoch(
        model,
        evaluator(
            train_temperature=0.5, train_augmentation="jitter", train_batch_size=64, train_seed=9
        ),
    )
    for key in ("val_ref_ntxent", "val_alignment", "val_uniformity", "val_probe_mean_lift"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key
    assert a["val_loss"] != pytest.approx(b["val_loss"], abs=1e-4)
    # And repeat exactly, epoch after epoch.
    assert evaluate_epoch(model, evaluator()) == pytest.approx(a, abs=1e-6)


def test_random_init_baseline_matches_an_untrained_model() -> None:
    untrained = build_monolith(MODEL, SPEC, seed=EVAL.reference_seed)
    metrics = evaluate_epoch(untrained, evaluator())
    assert metrics["val_probe_regime_lift_vs_random"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["val_probe_direction_lift_vs_random"] == pytest.approx(0.0, abs=1e-9)


def test_without_probe_data_probes_use_halves_of_validation() -> None:
    ev = Evaluator(
        MODEL,
        dataclasses.replace(EVAL, probe_max_windows=None),
        SPEC,
        VAL,
        None,
        train_temperature=0.1,
        train_augmentation="jitter",
        train_batch_size=16,
        train_seed=0,
    )
    assert len(ev.probe_fit[1]["regime"]) == len(ev.probe_val[1]["regime"]) == 50
    assert np.isfinite(
        evaluate_epoch(build_monolith(MODEL, SPEC, seed=1), ev)["val_probe_mean_lift"]
    )


def test_probe_helpers() -> None:
    assert list(even_sample(10, None)) == list(range(10))
    sample = even_sample(1000, 10)
    assert len(sample) == 10 and sample[0] == 0 and sample[-1] == 999
    x = np.random.default_rng(0).normal(size=(200, 2))
    y = (x[:, 0] > 0).astype(int)
    assert probe_score(x[:100], y[:100], x[100:], y[100:], seed=0) > 0.9
    assert probe_score(x[:100], np.zeros(100, int), x[100:], y[100:], seed=0) == 0.5
    windows = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    np.testing.assert_array_equal(raw_features(windows)[0], [4, 5, 2, 3])
