"""Features: the 43 technical columns, the causal HMM regime, the SL/TP levels, and the
forward targets of the probes.

Every feature at row t depends only on rows <= t of the same symbol (no look-ahead):

- TA-Lib computes what it has (all its functions are trailing); the rest is built from
  TA-Lib's rolling primitives (SUM, MAX, MIN, SMA) and causal IIR filters.
- DPO is the trailing variant: close[t] - SMA(close, n)[t - (n//2 + 1)], not the centred one.
- Ichimoku Chikou is close lagged by 26 bars. The textbook chikou plots today's close 26 bars
  back, i.e. it puts close[t+26] at row t, which leaks the future into the past.
- Ichimoku Senkou spans are the values computed 26 bars ago (their usual forward plot, seen
  from the bar where they are read).
- The regime label at t is the argmax of the forward-filtered state probability
  p(state_t | obs_<=t), never the Viterbi path or smoothed posteriors, which use later bars.

Indicators run over each symbol's series as it is: gaps in time are left in (the bar after a
gap is treated as the next bar). The windowing step refuses windows across large gaps, so the
effect is limited to indicator memory across a gap, which we accept and document.

The forward targets (last section) are the opposite by design: probe labels, never model
inputs, each a function of rows t+1..t+H only (see ``forward_targets``).

Warm-up rows (where any computed column is still undefined) are dropped per symbol and
counted, never filled. Divisions that can hit zero (flat bars, zero volume) use an explicit,
counted fallback, listed per column in the report.

Its rooms: ``columns`` (names and periods), ``technical`` (indicators), ``regime`` (the HMM)
with ``forward`` (its forward pass), ``levels`` (SL/TP), ``targets`` (forward targets),
``blocks`` (a frame's symbols as row blocks).
"""

from monolith.data.features.columns import (
    HMM_OBSERVATION_COLUMNS,
    INDICATOR_PERIODS,
    TECHNICAL_COLUMNS,
)
from monolith.data.features.forward import forward_log_numpy
from monolith.data.features.levels import add_levels
from monolith.data.features.regime import (
    HMM_FIT_CHUNK_ROWS,
    RegimeModel,
    filtered_state_probabilities,
    fit_regime_hmm,
    fit_regime_hmm_sequences,
    predict_regimes,
    regime_fit_chunks,
    regime_fit_quotas,
    regime_fit_sequences,
)
from monolith.data.features.targets import (
    FORWARD_TARGETS,
    forward_return_sign,
    forward_targets,
    forward_volatility,
)
from monolith.data.features.technical import add_technical_indicators

__all__ = [
    "FORWARD_TARGETS",
    "HMM_FIT_CHUNK_ROWS",
    "HMM_OBSERVATION_COLUMNS",
    "INDICATOR_PERIODS",
    "TECHNICAL_COLUMNS",
    "RegimeModel",
    "add_levels",
    "add_technical_indicators",
    "filtered_state_probabilities",
    "fit_regime_hmm",
    "fit_regime_hmm_sequences",
    "forward_log_numpy",
    "forward_return_sign",
    "forward_targets",
    "forward_volatility",
    "predict_regimes",
    "regime_fit_chunks",
    "regime_fit_quotas",
    "regime_fit_sequences",
]
