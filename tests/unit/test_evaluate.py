"""Comparable validation metrics and the probes: kinds, baselines, fit on train only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import monolith.evaluate as evaluate_module
from monolith.config import OBJECTIVES, EvalConfig, InputSpec, ModelConfig
from monolith.errors import ConfigError, DataError
from monolith.evaluate import Evaluator, evaluate_epoch, even_sample, split_work
from monolith.model import build_monolith
from monolith.probes import probe_score, raw_features, retrieval_score, spearman

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
PROBES = ["regime", "direction", "direction_h1", "direction_h24", "fwd_vol_h24"]
assert EVAL.probes == PROBES  # the defaults


def fake_windows(n: int, seed: int, vol_offset: float = 0.0) -> tuple[dict, dict]:
    """Windows whose level carries the regime, whose last bar carries the directions and
    whose spread carries the volatility; the long horizons are undefined on a few windows
    (-1 / NaN), as at the end of a symbol's data."""
    rng = np.random.default_rng(seed)
    regime = rng.integers(0, 3, n).astype(np.int32)
    x = rng.normal(size=(n, SPEC.sequence_length, SPEC.n_technical)).astype(np.float32)
    x += (regime[:, None, None] - 1).astype(np.float32)
    direction = (x[:, -1, 1] > 0).astype(np.int32)
    direction_h24 = (x[:, -1, 0] > 0).astype(np.int32)
    direction_h24[-7:] = -1
    fwd_vol = (np.exp(x[:, -1, 2]) + vol_offset).astype(np.float32)
    fwd_vol[-5:] = np.nan
    return (
        {"technical_input": x, "instrument_input": rng.integers(0, 2, n).astype(np.int32)},
        {
            "regime": regime,
            "direction": direction,
            "direction_h1": (x[:, -1, 2] > 0).astype(np.int32),
            "direction_h24": direction_h24,
            "fwd_vol_h24": fwd_vol,
            "end_time": np.arange(n, dtype=np.int64),
        },
    )


TRAIN, VAL = fake_windows(200, 0), fake_windows(100, 1)


def evaluator(
    eval_cfg: EvalConfig = EVAL, val: tuple = VAL, train: tuple = TRAIN, **overrides: object
) -> Evaluator:
    settings = {
        "train_temperature": 0.07,
        "train_augmentation": "scaling",
        "train_batch_size": 16,
        "train_seed": 3,
    }
    settings.update(overrides)
    return Evaluator(MODEL, eval_cfg, SPEC, val, train, **settings)  # type: ignore[arg-type]


def test_metrics_include_every_objective_and_lifts_over_the_stronger_baseline() -> None:
    model = build_monolith(MODEL, SPEC, seed=11)
    metrics = evaluate_epoch(model, evaluator())
    assert set(OBJECTIVES) <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    for target in PROBES:
        score = metrics[f"val_probe_{target}"]
        random, raw = metrics[f"val_probe_{target}_random"], metrics[f"val_probe_{target}_raw"]
        assert metrics[f"val_probe_{target}_lift_vs_random"] == pytest.approx(score - random)
        assert metrics[f"val_probe_{target}_lift_vs_raw"] == pytest.approx(score - raw)
        assert metrics[f"val_probe_{target}_lift"] == pytest.approx(score - max(random, raw))
    assert metrics["val_probe_mean_lift"] == pytest.approx(
        np.mean([metrics[f"val_probe_{target}_lift"] for target in PROBES])
    )
    # The raw baseline sees what the fake targets are made of.
    for target in PROBES:
        assert metrics[f"val_probe_{target}_raw"] > 0.8, target
    # Only the configured probes are reported, with every sibling the report looks for.
    names = {k.removeprefix("val_probe_") for k in metrics if k.startswith("val_probe_")}
    suffixes = ("", "_random", "_raw", "_lift", "_lift_vs_random", "_lift_vs_raw")
    assert names == {"mean_lift"} | {f"{t}{s}" for t in PROBES for s in suffixes}


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
    for target in PROBES:
        assert metrics[f"val_probe_{target}_lift_vs_random"] == pytest.approx(0.0, abs=1e-9)


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


def test_probes_are_fitted_on_train_windows_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every probe (trained encoder and both baselines) is fitted on the train sample's
    targets; the validation targets only score. Train volatilities lie far below 1000, val's
    above it, so a fit that saw a val window would show it."""
    fitted: list[tuple[str, np.ndarray]] = []
    real_fit = evaluate_module.fit_probe

    def recording_fit(kind: str, x: np.ndarray, y: np.ndarray, seed: int):  # noqa: ANN202
        fitted.append((kind, np.array(y)))
        return real_fit(kind, x, y, seed)

    monkeypatch.setattr(evaluate_module, "fit_probe", recording_fit)
    val = fake_windows(100, 1, vol_offset=1000.0)
    ev = evaluator(val=val)
    evaluate_epoch(build_monolith(MODEL, SPEC, seed=11), ev)
    pick = even_sample(len(TRAIN[1]["regime"]), EVAL.probe_max_windows)
    expected = []
    for target in PROBES:
        y = TRAIN[1][target][pick]
        expected.append(y[np.isfinite(y) & (y >= 0)])
    assert len(fitted) == 3 * len(PROBES)  # random, raw, then the trained encoder
    for kind, y in fitted:
        assert any(len(y) == len(e) and np.array_equal(y, e) for e in expected), kind
    vols = np.concatenate([y for kind, y in fitted if kind == "regression"])
    assert len(vols) and vols.max() < 1000
    # Scrambling the val targets changes the scores, never what is fitted.
    before = [y for _, y in fitted]
    fitted.clear()
    scrambled = (val[0], {k: v[::-1].copy() for k, v in val[1].items()})
    evaluate_epoch(build_monolith(MODEL, SPEC, seed=11), evaluator(val=scrambled))
    assert all(np.array_equal(a, b) for a, b in zip(before, [y for _, y in fitted], strict=True))


def test_windows_without_a_defined_target_are_left_out() -> None:
    ev = evaluator()
    n_fit, n_val = len(ev.probe_fit[1]["regime"]), len(ev.probe_val[1]["regime"])
    (fit_rows, fit_y), (val_rows, val_y) = ev.labels["direction_h24"]
    assert (fit_y >= 0).all() and (val_y >= 0).all()
    pick = even_sample(len(TRAIN[1]["regime"]), EVAL.probe_max_windows)
    undefined = int((TRAIN[1]["direction_h24"][pick] < 0).sum())
    assert undefined > 0 and n_val == 100  # the val sample is all 100 windows
    assert len(fit_rows) == n_fit - undefined and len(val_rows) == n_val - 7
    (_, fit_v), (_, val_v) = ev.labels["fwd_vol_h24"]
    assert np.isfinite(fit_v).all() and len(val_v) == n_val - 5
    assert len(ev.labels["regime"][1][0]) == n_val


def test_regression_probe_scores_a_latent_that_encodes_the_target_above_noise() -> None:
    rng = np.random.default_rng(0)
    target = np.exp(rng.normal(size=600))  # positive and heavy-tailed, like volatility
    noise = rng.normal(size=(600, 8))
    encodes = noise.copy()
    encodes[:, 3] += 2.0 * np.log(target)
    fit, val = slice(0, 400), slice(400, 600)
    good = probe_score(encodes[fit], target[fit], encodes[val], target[val], 0, "regression")
    bad = probe_score(noise[fit], target[fit], noise[val], target[val], 0, "regression")
    assert good > 0.8 and abs(bad) < 0.2
    assert spearman(np.arange(5.0), np.full(5, 2.0)) == 0.0  # constant: nothing ranked
    assert spearman(np.arange(5.0), np.arange(5.0) ** 3) == pytest.approx(1.0)


def test_the_runs_model_computes_the_untrained_baseline_and_keeps_its_weights() -> None:
    """With the run's model given, the baselines come from it holding the untrained weights
    (its compiled forward, no second trace): the same scores, and its own weights after."""
    cfg = dataclasses.replace(EVAL, probes=[*PROBES, "knn_views"])
    trained = build_monolith(MODEL, SPEC, seed=11)
    before = [np.array(v.numpy()) for v in trained.variables]
    traced_before = len(evaluate_module._FORWARDS)
    borrowed = evaluator(cfg, model=trained)
    assert len(evaluate_module._FORWARDS) == traced_before + 1  # the run's model's only
    assert trained in evaluate_module._FORWARDS
    own = evaluator(cfg)
    for kind in ("random", "raw"):
        assert borrowed.baselines[kind] == pytest.approx(own.baselines[kind], abs=1e-6), kind
    for value, variable in zip(before, trained.variables, strict=True):
        np.testing.assert_array_equal(value, variable.numpy())
    # A model of another architecture is left alone: the untrained model runs itself.
    other = build_monolith(dataclasses.replace(MODEL, latent_dim=MODEL.latent_dim + 2), SPEC)
    apart = evaluator(cfg, model=other)
    for kind in ("random", "raw"):
        assert apart.baselines[kind] == pytest.approx(own.baselines[kind], abs=1e-6), kind
    assert other not in evaluate_module._FORWARDS


def test_knn_views_retrieval_probe() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(96, 6))
    assert retrieval_score(a, a + 0.01 * rng.normal(size=a.shape), 32) == 1.0
    assert retrieval_score(a, rng.normal(size=a.shape), 32) < 0.2  # chance is 1/32
    cfg = dataclasses.replace(EVAL, probes=["regime", "knn_views"])
    metrics = evaluate_epoch(build_monolith(MODEL, SPEC, seed=EVAL.reference_seed), evaluator(cfg))
    assert 0.0 <= metrics["val_probe_knn_views"] <= 1.0
    assert metrics["val_probe_knn_views_lift_vs_random"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["val_probe_mean_lift"] == pytest.approx(
        (metrics["val_probe_regime_lift"] + metrics["val_probe_knn_views_lift"]) / 2
    )
    assert "val_probe_direction" not in metrics


def test_a_probe_the_data_cannot_serve_is_refused() -> None:
    bare = (VAL[0], {k: VAL[1][k] for k in ("regime", "direction")})
    with pytest.raises(DataError, match=r"probe 'direction_h1': the val windows carry no"):
        evaluator(val=bare)
    undefined = (VAL[0], {**VAL[1], "fwd_vol_h24": np.full(100, np.nan, np.float32)})
    with pytest.raises(DataError, match=r"probe 'fwd_vol_h24': 0 of the 100 val windows"):
        evaluator(val=undefined)
    # An unvalidated config whose objective names a probe it does not run.
    cfg = dataclasses.replace(EVAL, probes=["regime"], objective="val_probe_direction_lift")
    with pytest.raises(ConfigError, match="probe 'direction' is not in eval.probes"):
        evaluator(cfg)


def test_work_split_over_workers_is_balanced_and_the_same_on_every_worker() -> None:
    chunks = [("reference", i, 256) for i in range(4)] + [("train", i, 64) for i in range(16)]
    probes_at, owner = split_work(chunks, 2000, 2)
    assert probes_at == 1 and split_work(chunks, 2000, 2) == (probes_at, owner)
    load = [0, 2000]
    for (name, index), worker in owner.items():
        load[worker] += 2 * dict(((n, i), w) for n, i, w in chunks)[(name, index)]
    assert abs(load[0] - load[1]) <= 2 * 256  # within one chunk
    assert set(owner.values()) == {0, 1}
    # A set kept whole (the retrieval probe standardises over all its windows) stays on one.
    _, owner = split_work(chunks, 4000, 2, whole=("reference",))
    assert len({w for (name, _), w in owner.items() if name == "reference"}) == 1
    assert split_work(chunks, 4000, 1)[1] == dict.fromkeys(owner, 0)


@pytest.mark.parametrize("probes", [PROBES, ["regime", "knn_views"]])
def test_workers_shares_add_up_to_the_single_process_metrics(probes: list[str]) -> None:
    """Two (three) workers each evaluate their share; summing their figures, as the trainer's
    collective does, gives what one process computes alone."""
    cfg = dataclasses.replace(EVAL, probes=probes, reference_batch_size=32)
    model = build_monolith(MODEL, SPEC, seed=11)
    alone = evaluate_epoch(model, evaluator(cfg))
    for workers in (2, 3):
        shares = [evaluator(cfg, worker=w, workers=workers) for w in range(workers)]
        names = shares[0].figure_names
        assert all(s.figure_names == names for s in shares)
        figures = [s.figures(model) for s in shares]
        assert all(figures), "every worker has a share"
        # The probes (and their baselines) run on the last worker only.
        assert all(not any(k.startswith("probe_regime") for k in f) for f in figures[:-1])
        vectors = [np.array([f.get(n, 0.0) for n in names]) for f in figures]
        for s in shares:
            got = evaluate_epoch(model, s, lambda v, vectors=vectors: np.sum(vectors, axis=0))
            assert got == pytest.approx(alone, rel=1e-9, abs=1e-9)
        with pytest.raises(ValueError, match="add_up"):
            evaluate_epoch(model, shares[0])
