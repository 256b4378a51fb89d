"""Synthetic: a seeded multi-symbol market with hidden regimes, the default dataset.

One Markov chain of market regimes (calm, normal, turbulent) drives the drift and volatility
of a shared market factor; each symbol adds its own beta and idiosyncratic noise. Bars are
built to look like exchange bars: the open is the previous close plus a little noise, high
and low bracket open and close, prices stay positive, and volume rises with the size of the
move relative to the regime's volatility.

The output has the canonical schema of ``read_market_data`` plus ``true_regime``, the hidden
state. ``true_regime`` exists for tests and diagnostics only: the pipeline never feeds it to
the model (it would be the label it is meant to discover).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from monolith.config import SyntheticConfig
from monolith.errors import ConfigError

logger = logging.getLogger(__name__)

START = pd.Timestamp("2020-01-01", tz="UTC")
# Per regime: hourly drift and volatility of the market factor (calm, normal, turbulent).
REGIME_DRIFT = np.array([0.0002, 0.0, -0.0006])
REGIME_VOLATILITY = np.array([0.003, 0.008, 0.02])
# Regimes persist for tens of bars on average; the chain moves to the other states evenly.
REGIME_STAY_PROBABILITY = 0.97
STARTING_PRICE_RANGE = (5.0, 500.0)


def _regime_chain(rng: np.random.Generator, rows: int) -> np.ndarray:
    """A Markov chain over the regimes, drawn segment by segment (geometric stays)."""
    n_regimes = len(REGIME_VOLATILITY)
    states = np.empty(rows, dtype=np.int64)
    position = 0
    state = int(rng.integers(n_regimes))
    while position < rows:
        stay = int(rng.geometric(1.0 - REGIME_STAY_PROBABILITY))
        states[position : position + stay] = state
        position += stay
        state = int((state + rng.integers(1, n_regimes)) % n_regimes)
    return states


def _bar_interval(cfg: SyntheticConfig) -> pd.Timedelta:
    try:
        interval = pd.Timedelta(cfg.interval)
    except ValueError:
        interval = None
    if interval is None or interval <= pd.Timedelta(0):
        raise ConfigError(
            f"data.synthetic.interval = {cfg.interval!r} is invalid: expected a positive "
            "duration such as '1h' or '15min'"
        )
    return interval


def generate_synthetic(cfg: SyntheticConfig) -> pd.DataFrame:
    """Generate the seeded synthetic market in the canonical raw schema.

    Returns:
        Columns ``timestamp`` (UTC), ``symbol`` (``SYN0/USD``...), ``open high low close
        volume`` (float64), then ``llm_embedding`` (lists of ``embedding_dim`` floats) and
        ``mcp_feature_000``... when configured, then ``true_regime``; sorted by
        (symbol, timestamp). The same config always gives the same frame.
    """
    cfg.validate()
    interval = _bar_interval(cfg)
    rng = np.random.default_rng(cfg.seed)
    rows, n_symbols = cfg.rows_per_symbol, cfg.symbols

    regime = _regime_chain(rng, rows)
    sigma = REGIME_VOLATILITY[regime]
    market = REGIME_DRIFT[regime] + sigma * rng.standard_normal(rows)
    # Heavier market exposure and a per-symbol volatility scale keep the symbols distinct.
    beta = rng.uniform(0.6, 1.4, size=(n_symbols, 1))
    idio_scale = rng.uniform(0.3, 0.8, size=(n_symbols, 1))
    bar_sigma = np.sqrt((beta * sigma) ** 2 + (idio_scale * sigma) ** 2)
    returns = beta * market + idio_scale * sigma * rng.standard_normal((n_symbols, rows))

    start_price = np.exp(rng.uniform(*np.log(STARTING_PRICE_RANGE), size=(n_symbols, 1)))
    close = start_price * np.exp(np.cumsum(returns, axis=1))
    previous_close = np.concatenate([start_price, close[:, :-1]], axis=1)
    # Opens differ from the previous close by a small fraction of the bar's volatility.
    open_ = previous_close * np.exp(0.05 * bar_sigma * rng.standard_normal((n_symbols, rows)))
    wick = bar_sigma * np.abs(rng.standard_normal((2, n_symbols, rows))) * 0.5
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    surprise = np.abs(returns) / bar_sigma
    base_volume = np.exp(rng.uniform(np.log(1e3), np.log(1e6), size=(n_symbols, 1)))
    volume = base_volume * np.exp(
        0.6 * surprise + 0.3 * regime + 0.4 * rng.standard_normal((n_symbols, rows))
    )

    timestamps = pd.date_range(START, periods=rows, freq=interval)
    names = [f"SYN{i}/USD" for i in range(n_symbols)]
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(
                np.tile(timestamps.as_unit("ns").asi8, n_symbols), unit="ns", utc=True
            ),
            "symbol": np.repeat(names, rows),
            "open": open_.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "volume": volume.ravel(),
        }
    )
    all_regimes = np.tile(regime, n_symbols)
    one_hot = np.eye(len(REGIME_VOLATILITY))[all_regimes]
    if cfg.embedding_dim:
        # A regime prototype buried in unit noise: informative, but only weakly.
        prototypes = rng.standard_normal((len(REGIME_VOLATILITY), cfg.embedding_dim))
        noise = rng.standard_normal((len(frame), cfg.embedding_dim))
        embedding = 0.3 * prototypes[all_regimes] + noise
        frame["llm_embedding"] = pd.Series(embedding.tolist(), dtype=object)
    if cfg.mcp_features:
        weights = rng.normal(0.0, 0.5, size=(len(REGIME_VOLATILITY), cfg.mcp_features))
        noise = rng.standard_normal((len(frame), cfg.mcp_features))
        mcp = one_hot @ weights + noise
        for j in range(cfg.mcp_features):
            frame[f"mcp_feature_{j:03d}"] = mcp[:, j]
    frame["true_regime"] = all_regimes
    frame = frame.sort_values(["symbol", "timestamp"], kind="stable", ignore_index=True)
    logger.info("synthetic market: %d symbol(s) x %d bars (seed %d)", n_symbols, rows, cfg.seed)
    return frame
