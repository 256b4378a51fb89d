"""Features: the 43 columns, no look-ahead, an HMM that never sees val/test rows, levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monolith.config import SyntheticConfig
from monolith.data.features import (
    HMM_OBSERVATION_COLUMNS,
    TECHNICAL_COLUMNS,
    add_levels,
    add_technical_indicators,
    filtered_state_probabilities,
    fit_regime_hmm,
    forward_return_sign,
    forward_targets,
    forward_volatility,
    predict_regimes,
)
from monolith.data.features.forward import forward_log_numpy as _forward_log_numpy
from monolith.data.ingest import read_market_data
from monolith.data.synthetic import generate_synthetic
from monolith.errors import DataError

COMPUTED = [*TECHNICAL_COLUMNS[5:], *HMM_OBSERVATION_COLUMNS]
ROWS = 1200


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return generate_synthetic(SyntheticConfig(symbols=2, rows_per_symbol=ROWS, seed=3))


@pytest.fixture(scope="module")
def featured(raw: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    return add_technical_indicators(raw)


def _first_share_mask(frame: pd.DataFrame, share: float) -> np.ndarray:
    """True on each symbol's first ``share`` of rows: a chronological train split."""
    position = frame.groupby("symbol").cumcount().to_numpy()
    size = frame.groupby("symbol")["symbol"].transform("size").to_numpy()
    return position < share * size


def test_columns_in_order_and_finite(featured: tuple[pd.DataFrame, dict]) -> None:
    frame, report = featured
    assert len(TECHNICAL_COLUMNS) == 43
    assert list(frame.columns[: 2 + 43]) == ["timestamp", "symbol", *TECHNICAL_COLUMNS]
    assert list(frame.columns[45:47]) == list(HMM_OBSERVATION_COLUMNS)
    assert "true_regime" in frame.columns  # passed through, never used as a feature here
    assert np.isfinite(frame[COMPUTED].to_numpy()).all()
    assert report["warmup_bars"] == 77  # Ichimoku Senkou B: 52-bar range shown 26 bars later
    assert report["warmup_rows_dropped"] == {"SYN0/USD": 77, "SYN1/USD": 77}
    assert len(frame) == 2 * (ROWS - 77)
    assert isinstance(frame.index, pd.RangeIndex)


def test_no_look_ahead(raw: pd.DataFrame) -> None:
    """Altering bars after t never changes any value at or before t."""
    t_cut = raw["timestamp"].iloc[700]
    rng = np.random.default_rng(0)
    altered = raw.copy()
    later = (altered["timestamp"] > t_cut).to_numpy()
    factor = np.exp(rng.normal(0.0, 0.05, size=later.sum()))
    for column in ("open", "high", "low", "close"):
        altered.loc[later, column] = altered.loc[later, column] * factor
    altered.loc[later, "volume"] = altered.loc[later, "volume"] * rng.uniform(0.1, 10, later.sum())
    before, _ = add_technical_indicators(raw)
    after, _ = add_technical_indicators(altered)
    upto = (before["timestamp"] <= t_cut).to_numpy()
    np.testing.assert_array_equal(
        before.loc[upto, COMPUTED].to_numpy(), after.loc[upto, COMPUTED].to_numpy()
    )
    # And the change did reach the later rows, so the test has teeth.
    assert not np.allclose(before.loc[~upto, "SMA_long"], after.loc[~upto, "SMA_long"])


def test_symbols_do_not_mix(raw: pd.DataFrame) -> None:
    one, _ = add_technical_indicators(raw[raw["symbol"] == "SYN0/USD"].reset_index(drop=True))
    both, _ = add_technical_indicators(raw)
    np.testing.assert_array_equal(
        one[COMPUTED].to_numpy(), both.loc[both["symbol"] == "SYN0/USD", COMPUTED].to_numpy()
    )


def test_chikou_is_the_lagged_close(featured: tuple[pd.DataFrame, dict], raw: pd.DataFrame) -> None:
    frame, _ = featured
    source = raw[raw["symbol"] == "SYN0/USD"]["close"].to_numpy()
    chikou = frame[frame["symbol"] == "SYN0/USD"]["Ichimoku_Chikou"].to_numpy()
    np.testing.assert_array_equal(chikou, source[77 - 26 : ROWS - 26])


def test_flat_bars_use_counted_fallbacks() -> None:
    n = 200
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2021-01-01", periods=n, freq="h", tz="UTC"),
            "symbol": "FLAT",
            "open": 10.0,
            "high": 10.0,
            "low": 10.0,
            "close": 10.0,
            "volume": 0.0,
        }
    )
    out, report = add_technical_indicators(frame)
    assert len(out) > 0
    assert np.isfinite(out[COMPUTED].to_numpy()).all()
    fallbacks = report["safe_division_fallbacks"]
    assert fallbacks["VWAP"] > 0 and fallbacks["CMF"] > 0 and fallbacks["FISHERt"] > 0


def test_ready_dataset_columns_are_kept(featured: tuple[pd.DataFrame, dict]) -> None:
    frame, _ = featured
    ready = frame.drop(columns=list(HMM_OBSERVATION_COLUMNS)).copy()
    ready["RSI"] = 42.0  # a value computing would never give everywhere
    out, report = add_technical_indicators(ready)
    assert report["indicators"] == "given"
    assert (out["RSI"] == 42.0).all()
    ready.loc[5, "CCI"] = np.inf
    with pytest.raises(DataError, match=r"column 'CCI', row 6"):
        add_technical_indicators(ready)


def test_too_short_for_warmup(raw: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="warm-up"):
        add_technical_indicators(raw.iloc[:50].reset_index(drop=True))


def test_unsorted_frame_is_refused(raw: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="not strictly increasing"):
        add_technical_indicators(raw.iloc[::-1].reset_index(drop=True))


# --------------------------------------------------------------------------------------------
# Regime HMM


def _params(model) -> list[np.ndarray]:
    return [
        model.startprob,
        model.transmat,
        model.means,
        model.covars,
        model.obs_mean,
        model.obs_scale,
    ]


def test_hmm_sees_only_train_rows(featured: tuple[pd.DataFrame, dict]) -> None:
    frame, _ = featured
    mask = _first_share_mask(frame, 0.7)
    fitted = fit_regime_hmm(frame, mask, n_states=3, seed=5)
    alone = fit_regime_hmm(
        frame[mask].reset_index(drop=True), np.ones(int(mask.sum()), dtype=bool), 3, 5
    )
    for a, b in zip(_params(fitted), _params(alone), strict=True):
        np.testing.assert_array_equal(a, b)
    # Arbitrary val/test observations change nothing.
    scrambled = frame.copy()
    rng = np.random.default_rng(1)
    for column in HMM_OBSERVATION_COLUMNS:
        scrambled.loc[~mask, column] = rng.normal(0, 50, size=(~mask).sum())
    again = fit_regime_hmm(scrambled, mask, 3, 5)
    for a, b in zip(_params(fitted), _params(again), strict=True):
        np.testing.assert_array_equal(a, b)
    assert fitted.train_rows == int(mask.sum())
    # Labels are ordered calm -> wild.
    assert np.all(np.diff(fitted.means[:, 1]) > 0)


def test_regimes_are_causal(featured: tuple[pd.DataFrame, dict]) -> None:
    frame, _ = featured
    model = fit_regime_hmm(frame, _first_share_mask(frame, 0.7), 3, 0)
    labels = predict_regimes(model, frame)
    assert labels.dtype == np.int64 and set(np.unique(labels)) <= {0, 1, 2}
    cut = 600  # a row of the first symbol
    altered = frame.copy()
    later = np.zeros(len(frame), dtype=bool)
    later[cut + 1 :] = True
    rng = np.random.default_rng(2)
    for column in HMM_OBSERVATION_COLUMNS:
        altered.loc[later, column] = rng.normal(0, 3, size=later.sum())
    np.testing.assert_array_equal(predict_regimes(model, altered)[: cut + 1], labels[: cut + 1])
    assert not np.array_equal(predict_regimes(model, altered)[cut + 1 :], labels[cut + 1 :])


def test_regimes_match_the_reference_forward_filter(featured: tuple[pd.DataFrame, dict]) -> None:
    frame, _ = featured
    model = fit_regime_hmm(frame, _first_share_mask(frame, 0.7), 3, 0)
    probs = filtered_state_probabilities(model, frame)
    part = frame[frame["symbol"] == "SYN1/USD"]
    z = (part[list(HMM_OBSERVATION_COLUMNS)].to_numpy() - model.obs_mean) / model.obs_scale
    from scipy.stats import multivariate_normal

    log_emission = np.column_stack(
        [multivariate_normal(model.means[k], model.covars[k]).logpdf(z) for k in range(3)]
    )
    with np.errstate(divide="ignore"):  # a start probability may be exactly 0
        log_start, log_trans = np.log(model.startprob), np.log(model.transmat)
    alpha = _forward_log_numpy(log_start, log_trans, log_emission)
    reference = np.exp(alpha - alpha.max(axis=1, keepdims=True))
    reference /= reference.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs[part.index], reference, atol=1e-9)


def test_regimes_track_the_true_regime(featured: tuple[pd.DataFrame, dict]) -> None:
    frame, _ = featured
    model = fit_regime_hmm(frame, _first_share_mask(frame, 0.7), 3, 0)
    labels = predict_regimes(model, frame)
    truth = frame["true_regime"].to_numpy()  # 0 calm ... 2 turbulent, as our labels
    assert np.mean(labels == truth) > 0.6


def test_fit_rejects_bad_input(featured: tuple[pd.DataFrame, dict]) -> None:
    frame, _ = featured
    with pytest.raises(DataError, match="boolean array"):
        fit_regime_hmm(frame, np.ones(3, dtype=bool), 3, 0)
    with pytest.raises(DataError, match="n_states"):
        fit_regime_hmm(frame, np.ones(len(frame), dtype=bool), 1, 0)
    broken = frame.copy()
    broken.loc[3, "hmm_obs_return"] = np.nan
    with pytest.raises(DataError, match="row 4"):
        fit_regime_hmm(broken, np.ones(len(frame), dtype=bool), 3, 0)


# --------------------------------------------------------------------------------------------
# Levels


def test_levels(featured: tuple[pd.DataFrame, dict]) -> None:
    frame, _ = featured
    out = add_levels(frame, 1.5, 3.0)
    np.testing.assert_allclose(out["level_sl"], frame["close"] - 1.5 * frame["ATR"])
    np.testing.assert_allclose(out["level_tp"], frame["close"] + 3.0 * frame["ATR"])
    assert (out["level_sl"] < out["close"]).all() and (out["level_tp"] > out["close"]).all()
    assert "level_sl" not in frame.columns
    with pytest.raises(DataError, match="sl_multiple"):
        add_levels(frame, 0.0, 3.0)


# --------------------------------------------------------------------------------------------
# Real data


def test_real_data_features_and_regimes(shared_data_dir: Path) -> None:
    raw_frame, _ = read_market_data(shared_data_dir)
    frame, report = add_technical_indicators(raw_frame)
    assert report["warmup_rows_dropped"] == {s: 77 for s in raw_frame["symbol"].unique()}
    assert report["nonfinite_rows_dropped"] == {}
    assert np.isfinite(frame[COMPUTED].to_numpy()).all()
    model = fit_regime_hmm(frame, _first_share_mask(frame, 0.7), 3, 0)
    labels = predict_regimes(model, frame)
    assert len(labels) == len(frame)
    assert np.bincount(labels, minlength=3).min() > 0.05 * len(frame)


# --------------------------------------------------------------------------------------------
# Forward targets: bars after t only

FORWARD = {"direction_h": forward_return_sign, "fwd_vol_h": forward_volatility}


def _path(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0.0, 0.002, n))  # small gaps
    return open_, close, np.zeros(n, dtype=np.int64)


@pytest.mark.parametrize("prefix", sorted(FORWARD))
@pytest.mark.parametrize("horizon", [1, 4, 24])
def test_forward_target_at_t_uses_bars_t_plus_1_to_t_plus_h_only(prefix: str, horizon: int) -> None:
    open_, close, segment = _path()
    target = FORWARD[prefix]
    base = target(open_, close, segment, horizon)
    t = 150
    # Rewriting every bar up to and including t leaves the target at t exactly as it was ...
    past_open, past_close = open_.copy(), close.copy()
    past_open[: t + 1] *= 3.0
    past_close[: t + 1] *= np.linspace(0.2, 5.0, t + 1)
    assert target(past_open, past_close, segment, horizon)[t] == base[t]
    # ... and so does rewriting bars after t + H.
    late_open, late_close = open_.copy(), close.copy()
    late_open[t + horizon + 1 :] *= 3.0
    late_close[t + horizon + 1 :] *= 0.3
    assert target(late_open, late_close, segment, horizon)[t] == base[t]
    # A change at bar t+1 does reach it: the next open is where the forward path starts.
    moved_open = open_.copy()
    moved_open[t + 1] = close[t + horizon] * (1.5 if base[t] == 1.0 else 0.5)
    assert target(moved_open, close, segment, horizon)[t] != base[t]


@pytest.mark.parametrize("prefix", sorted(FORWARD))
def test_forward_target_is_undefined_past_the_end_and_across_a_gap(prefix: str) -> None:
    open_, close, segment = _path(100)
    horizon = 5
    values = FORWARD[prefix](open_, close, segment, horizon)
    assert np.isnan(values[-horizon:]).all() and np.isfinite(values[:-horizon]).all()
    segment[60:] = 1  # a gap before bar 60: no target of a bar before it may reach it
    values = FORWARD[prefix](open_, close, segment, horizon)
    assert np.isnan(values[60 - horizon : 60]).all()
    assert np.isfinite(values[: 60 - horizon]).all() and np.isfinite(values[60:-horizon]).all()


def test_forward_values_are_what_their_names_say() -> None:
    open_, close, segment = _path(50)
    h = 3
    sign = forward_return_sign(open_, close, segment, h)
    vol = forward_volatility(open_, close, segment, h)
    for t in (0, 10, 40):
        assert sign[t] == float(close[t + h] > open_[t + 1])
        path = np.log(np.r_[open_[t + 1], close[t + 1 : t + h + 1]])
        assert vol[t] == pytest.approx(np.sqrt(np.mean(np.diff(path) ** 2)), rel=1e-12)


def test_forward_targets_stay_within_each_symbol(raw: pd.DataFrame) -> None:
    frame = raw.assign(segment=0)
    blocks = [
        (s, int(idx[0]), int(idx[-1]) + 1)
        for s, idx in frame.groupby("symbol", sort=True).indices.items()
    ]
    out = forward_targets(frame, blocks, [1, 6], [6])
    assert sorted(out) == ["direction_h1", "direction_h6", "fwd_vol_h6"]
    for _, start, stop in blocks:
        assert np.isnan(out["fwd_vol_h6"][stop - 6 : stop]).all()
        assert np.isfinite(out["fwd_vol_h6"][start : stop - 6]).all()
        one = frame.iloc[start:stop]
        np.testing.assert_array_equal(
            out["direction_h6"][start:stop],
            forward_return_sign(
                one["open"].to_numpy(), one["close"].to_numpy(), np.zeros(stop - start), 6
            ),
        )
