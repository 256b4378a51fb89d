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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import talib

from monolith.errors import DataError

logger = logging.getLogger(__name__)

TECHNICAL_COLUMNS: tuple[str, ...] = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "SMA_short",
    "SMA_long",
    "EMA_short",
    "EMA_long",
    "RSI",
    "MACD",
    "MACDs",
    "MACDh",
    "BBU",
    "BBM",
    "BBL",
    "ATR",
    "STOCHk",
    "STOCHd",
    "ADX",
    "CCI",
    "Momentum",
    "ROC",
    "Williams_%R",
    "TRIX",
    "Ultimate_Osc",
    "DPO",
    "OBV",
    "VWMA",
    "CMF",
    "MFI",
    "Parabolic_SAR",
    "Ichimoku_Tenkan",
    "Ichimoku_Kijun",
    "Ichimoku_SenkouA",
    "Ichimoku_SenkouB",
    "Ichimoku_Chikou",
    "KAMA",
    "VWAP",
    "STOCHRSIk",
    "CMO",
    "PPO",
    "FISHERt",
)
# Observations of the regime HMM: log return and its rolling volatility.
HMM_OBSERVATION_COLUMNS: tuple[str, ...] = ("hmm_obs_return", "hmm_obs_volatility")

# Periods in bars. Standard textbook/TA-Lib settings, so the columns mean what their names say.
INDICATOR_PERIODS: dict[str, Any] = {
    "SMA_short": 10,
    "SMA_long": 50,
    "EMA_short": 12,
    "EMA_long": 26,
    "RSI": 14,
    "MACD": {"fast": 12, "slow": 26, "signal": 9},
    "BBANDS": {"period": 20, "nbdev": 2.0},
    "ATR": 14,
    "STOCH": {"fastk": 14, "slowk": 3, "slowd": 3},
    "ADX": 14,
    "CCI": 20,
    "Momentum": 10,
    "ROC": 10,
    "Williams_%R": 14,
    "TRIX": 15,
    "Ultimate_Osc": {"p1": 7, "p2": 14, "p3": 28},
    "DPO": 20,
    "VWMA": 20,
    "CMF": 20,
    "MFI": 14,
    "Parabolic_SAR": {"acceleration": 0.02, "maximum": 0.2},
    "Ichimoku": {"tenkan": 9, "kijun": 26, "senkou_b": 52, "displacement": 26},
    "KAMA": 10,
    # Rolling, not cumulative from the series start: a cumulative VWAP would make a row's
    # value depend on where the file happens to begin.
    "VWAP": 24,
    # STOCHRSIk is TA-Lib's fastd: the 3-bar SMA of raw StochRSI (what pandas-ta calls k).
    "STOCHRSI": {"rsi": 14, "fastk": 14, "fastd": 3},
    "CMO": 14,
    # PPO on EMAs (TA-Lib's default would be SMAs, unlike the usual definition).
    "PPO": {"fast": 12, "slow": 26},
    "FISHERt": 9,
    "hmm_obs_volatility": 24,
}
_MA_SMA = 0
_MA_EMA = 1


# --------------------------------------------------------------------------------------------
# Indicators


def _shift(values: np.ndarray, bars: int) -> np.ndarray:
    """values[t - bars] at t; the first ``bars`` rows are undefined (NaN)."""
    out = np.full_like(values, np.nan)
    out[bars:] = values[:-bars]
    return out


def _safe_ratio(
    num: np.ndarray,
    den: np.ndarray,
    fallback: np.ndarray | float,
    counts: dict[str, int],
    name: str,
) -> np.ndarray:
    """num/den, with ``fallback`` where den == 0; the fallback rows are counted under ``name``."""
    zero = den == 0
    defined = np.isfinite(num) & np.isfinite(den)
    hits = int(np.count_nonzero(zero & defined))
    if hits:
        counts[name] = counts.get(name, 0) + hits
    out = np.divide(num, den, out=np.full_like(num, np.nan), where=~zero)
    return np.where(zero & defined, fallback, out)


def _smooth(values: np.ndarray, gain: float, decay: float) -> np.ndarray:
    """The causal first-order filter ``y[t] = gain * x[t] + decay * y[t-1]``, from rest
    (``y = 0`` before the first defined value, where it starts: NaN would poison the state).

    Computed as ``gain / (1 - decay)`` times pandas' exponentially weighted mean (which is the
    same recursion normalised to unit gain), run over the series with a zero in front so it
    starts from rest; pandas keeps worker start-up free of scipy.signal's 1.4 s import.
    """
    out = np.full_like(values, np.nan)
    finite = np.flatnonzero(np.isfinite(values))
    if len(finite):
        start = finite[0]
        weight = 1.0 - decay
        padded = pd.Series(np.r_[0.0, values[start:]])
        mean = padded.ewm(alpha=weight, adjust=False).mean().to_numpy()[1:]
        out[start:] = gain / weight * mean
    return out


def _fisher(high: np.ndarray, low: np.ndarray, counts: dict[str, int]) -> np.ndarray:
    """Ehlers' Fisher transform of the median price, with both recursions as linear filters.

    Ehlers clips the smoothed position to +-0.999 inside the recursion; here the clip is
    applied after the (linear) smoothing, which keeps the whole transform vectorised. The
    smoothed position is bounded by 1 by construction, so the clip only trims extremes.
    """
    period = INDICATOR_PERIODS["FISHERt"]
    median = (high + low) / 2.0
    top = talib.MAX(median, period)
    bottom = talib.MIN(median, period)
    position = _safe_ratio(median - bottom, top - bottom, 0.5, counts, "FISHERt") - 0.5
    smoothed = np.clip(_smooth(position, 0.66, 0.67), -0.999, 0.999)
    return _smooth(np.log((1.0 + smoothed) / (1.0 - smoothed)), 0.5, 0.5)


def _indicators(
    o: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    counts: dict[str, int],
) -> dict[str, np.ndarray]:
    """All computed columns for one symbol's series, each trailing (row t uses rows <= t)."""
    p = INDICATOR_PERIODS
    out: dict[str, np.ndarray] = {}
    out["SMA_short"] = talib.SMA(c, p["SMA_short"])
    out["SMA_long"] = talib.SMA(c, p["SMA_long"])
    out["EMA_short"] = talib.EMA(c, p["EMA_short"])
    out["EMA_long"] = talib.EMA(c, p["EMA_long"])
    out["RSI"] = talib.RSI(c, p["RSI"])
    m = p["MACD"]
    out["MACD"], out["MACDs"], out["MACDh"] = talib.MACD(c, m["fast"], m["slow"], m["signal"])
    b = p["BBANDS"]
    out["BBU"], out["BBM"], out["BBL"] = talib.BBANDS(
        c, b["period"], b["nbdev"], b["nbdev"], _MA_SMA
    )
    out["ATR"] = talib.ATR(h, lo, c, p["ATR"])
    s = p["STOCH"]
    out["STOCHk"], out["STOCHd"] = talib.STOCH(
        h, lo, c, s["fastk"], s["slowk"], _MA_SMA, s["slowd"], _MA_SMA
    )
    out["ADX"] = talib.ADX(h, lo, c, p["ADX"])
    out["CCI"] = talib.CCI(h, lo, c, p["CCI"])
    out["Momentum"] = talib.MOM(c, p["Momentum"])
    out["ROC"] = talib.ROC(c, p["ROC"])
    out["Williams_%R"] = talib.WILLR(h, lo, c, p["Williams_%R"])
    out["TRIX"] = talib.TRIX(c, p["TRIX"])
    u = p["Ultimate_Osc"]
    out["Ultimate_Osc"] = talib.ULTOSC(h, lo, c, u["p1"], u["p2"], u["p3"])
    dpo = p["DPO"]
    out["DPO"] = c - _shift(talib.SMA(c, dpo), dpo // 2 + 1)
    out["OBV"] = talib.OBV(c, v)
    vwma = p["VWMA"]
    out["VWMA"] = _safe_ratio(
        talib.SUM(c * v, vwma), talib.SUM(v, vwma), talib.SMA(c, vwma), counts, "VWMA"
    )
    cmf = p["CMF"]
    multiplier = _safe_ratio((c - lo) - (h - c), h - lo, 0.0, counts, "CMF_flat_bar")
    out["CMF"] = _safe_ratio(talib.SUM(multiplier * v, cmf), talib.SUM(v, cmf), 0.0, counts, "CMF")
    out["MFI"] = talib.MFI(h, lo, c, v, p["MFI"])
    sar = p["Parabolic_SAR"]
    out["Parabolic_SAR"] = talib.SAR(h, lo, sar["acceleration"], sar["maximum"])
    ich = p["Ichimoku"]
    tenkan = (talib.MAX(h, ich["tenkan"]) + talib.MIN(lo, ich["tenkan"])) / 2.0
    kijun = (talib.MAX(h, ich["kijun"]) + talib.MIN(lo, ich["kijun"])) / 2.0
    span_b = (talib.MAX(h, ich["senkou_b"]) + talib.MIN(lo, ich["senkou_b"])) / 2.0
    out["Ichimoku_Tenkan"] = tenkan
    out["Ichimoku_Kijun"] = kijun
    out["Ichimoku_SenkouA"] = _shift((tenkan + kijun) / 2.0, ich["displacement"])
    out["Ichimoku_SenkouB"] = _shift(span_b, ich["displacement"])
    out["Ichimoku_Chikou"] = _shift(c, ich["displacement"])
    out["KAMA"] = talib.KAMA(c, p["KAMA"])
    vwap = p["VWAP"]
    typical = (h + lo + c) / 3.0
    out["VWAP"] = _safe_ratio(
        talib.SUM(typical * v, vwap), talib.SUM(v, vwap), talib.SMA(typical, vwap), counts, "VWAP"
    )
    sr = p["STOCHRSI"]
    _, out["STOCHRSIk"] = talib.STOCHRSI(c, sr["rsi"], sr["fastk"], sr["fastd"], _MA_SMA)
    out["CMO"] = talib.CMO(c, p["CMO"])
    ppo = p["PPO"]
    out["PPO"] = talib.PPO(c, ppo["fast"], ppo["slow"], _MA_EMA)
    out["FISHERt"] = _fisher(h, lo, counts)
    return out


def _observations(c: np.ndarray) -> dict[str, np.ndarray]:
    log_close = np.log(c)
    returns = np.full_like(c, np.nan)
    returns[1:] = np.diff(log_close)
    return {
        "hmm_obs_return": returns,
        "hmm_obs_volatility": talib.STDDEV(returns, INDICATOR_PERIODS["hmm_obs_volatility"], 1.0),
    }


def _symbol_codes(frame: pd.DataFrame) -> tuple[np.ndarray, Any]:
    """Integer codes of the symbol column (``pd.factorize``: dictionary-encodes Arrow strings
    without building millions of Python strings) and the symbols they index."""
    return pd.factorize(frame["symbol"], sort=False)


def _symbol_blocks(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Start/stop row of each symbol's contiguous block in a frame sorted by symbol."""
    codes, uniques = _symbol_codes(frame)
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = np.concatenate(([0], change)) if len(codes) else np.array([], dtype=int)
    stops = np.concatenate((change, [len(codes)])) if len(codes) else np.array([], dtype=int)
    names = [str(uniques[codes[i]]) for i in starts]
    if len(set(names)) != len(names):
        raise DataError("frame is not grouped by symbol: sort it by (symbol, timestamp) first")
    return starts, stops, names


def _timestamp_ns(frame: pd.DataFrame) -> np.ndarray:
    """Timestamps as int64 ns (tz-aware columns would otherwise become slow object arrays)."""
    return pd.DatetimeIndex(frame["timestamp"]).as_unit("ns").asi8


def _require_sorted(frame: pd.DataFrame, where: str) -> None:
    missing = [c for c in ("timestamp", "symbol") if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: frame lacks column(s) {missing}; found {list(frame.columns)}")
    starts, stops, _ = _symbol_blocks(frame)
    ts = _timestamp_ns(frame)
    for start, stop in zip(starts, stops, strict=True):
        if stop - start > 1 and not np.all(ts[start + 1 : stop] > ts[start : stop - 1]):
            raise DataError(
                f"{where}: symbol {frame['symbol'].iat[start]!r} is not strictly increasing in "
                "time; pass the frame read_market_data returns (sorted, deduplicated)"
            )


def add_technical_indicators(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Add the 43 technical columns and the two HMM observation columns, per symbol, causally.

    A frame that already holds all 43 columns (a ready dataset) keeps them; they are only
    checked to be finite. Warm-up rows are dropped per symbol and counted.

    Returns:
        The frame (timestamp, symbol, the 43 columns in order, the HMM observations, then any
        other columns) and a report: ``warmup_rows_dropped`` per symbol, ``warmup_bars``,
        ``nonfinite_rows_dropped`` per symbol, ``safe_division_fallbacks`` per column and
        ``indicator_periods``.

    Raises:
        DataError: a required column is missing, a given technical value is not finite, or
            a symbol has no row left after warm-up.
    """
    missing = [c for c in ("timestamp", "symbol", *TECHNICAL_COLUMNS[:5]) if c not in frame.columns]
    if missing:
        raise DataError(
            f"add_technical_indicators: missing column(s) {missing}; found {list(frame.columns)}"
        )
    _require_sorted(frame, "add_technical_indicators")
    precomputed = all(c in frame.columns for c in TECHNICAL_COLUMNS)
    if precomputed:
        values = frame[list(TECHNICAL_COLUMNS)].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row, col = (int(x[0]) for x in np.nonzero(bad))
            raise DataError(
                f"ready dataset: column {TECHNICAL_COLUMNS[col]!r}, row {row + 1} "
                f"(symbol {frame['symbol'].iat[row]!r}, {frame['timestamp'].iat[row]}) holds "
                f"{values[row, col]!r}; technical columns must be finite"
            )
    computed_names = ([] if precomputed else list(TECHNICAL_COLUMNS[5:])) + list(
        HMM_OBSERVATION_COLUMNS
    )
    computed_set = set(computed_names)
    value_names = [*TECHNICAL_COLUMNS, *HMM_OBSERVATION_COLUMNS]
    n = len(frame)
    # One (column, row) float64 block holds every output value; each symbol's kept rows are
    # written straight into it and it becomes the frame's float block without a copy, so the
    # indicators exist once (plus one symbol's temporaries), not as a full-size scratch
    # matrix, then Series, then a consolidated frame.
    block = np.empty((len(value_names), n))
    keep = np.zeros(n, dtype=bool)
    filled = 0
    counts: dict[str, int] = {}
    starts, stops, names = _symbol_blocks(frame)
    given = {
        c: frame[c].to_numpy(dtype=np.float64)
        for c in (TECHNICAL_COLUMNS if precomputed else TECHNICAL_COLUMNS[:5])
    }
    warmup_rows: dict[str, int] = {}
    nonfinite_rows: dict[str, dict[str, int]] = {}
    for start, stop, name in zip(starts, stops, names, strict=True):
        part = {c: np.ascontiguousarray(given[c][start:stop]) for c in TECHNICAL_COLUMNS[:5]}
        columns = (
            {}
            if precomputed
            else _indicators(
                part["open"], part["high"], part["low"], part["close"], part["volume"], counts
            )
        )
        columns.update(_observations(part["close"]))

        # Warm-up is the leading run of rows with an undefined value; anything undefined
        # later is a non-finite value, dropped and counted separately so it is never mistaken
        # for warm-up.
        finite = {c: np.isfinite(columns[c]) for c in computed_names}
        row_defined = np.logical_and.reduce(list(finite.values()))
        warm = np.logical_and.accumulate(~row_defined)
        warmup_rows[name] = int(warm.sum())
        late_rows = int(np.count_nonzero(~row_defined & ~warm))
        if late_rows:
            nonfinite_rows[name] = {
                c: int(k) for c in computed_names if (k := np.count_nonzero(~finite[c] & ~warm))
            }
            logger.warning(
                "%s: dropping non-finite indicator rows after warm-up: %s",
                name,
                nonfinite_rows[name],
            )
        del finite, warm
        if stop - start - warmup_rows[name] - late_rows <= 0:
            raise DataError(
                f"symbol {name!r}: all {stop - start} row(s) fall in the indicator warm-up; "
                "at least one more row than the warm-up is needed"
            )
        keep[start:stop] = row_defined
        rows = int(row_defined.sum())
        for j, column in enumerate(value_names):
            source = columns[column] if column in computed_set else given[column][start:stop]
            np.compress(row_defined, source, out=block[j, filled : filled + rows])
        filled += rows
        del columns, part

    # Only the first ``filled`` rows were written; the untouched tail of each column is never
    # paged in.
    out = pd.DataFrame(block[:, :filled].T, columns=value_names, copy=False)
    del block
    out.insert(0, "timestamp", frame["timestamp"].array[keep])
    out.insert(1, "symbol", frame["symbol"].array[keep])
    taken = {"timestamp", "symbol", *TECHNICAL_COLUMNS, *HMM_OBSERVATION_COLUMNS}
    for name in frame.columns:
        if name not in taken:
            out[name] = frame[name].loc[keep].to_numpy()

    report = {
        "indicators": "given" if precomputed else "computed",
        "warmup_rows_dropped": warmup_rows,
        "warmup_bars": max(warmup_rows.values(), default=0),
        "nonfinite_rows_dropped": nonfinite_rows,
        "safe_division_fallbacks": counts,
        "indicator_periods": INDICATOR_PERIODS,
    }
    logger.info(
        "indicators %s for %d symbol(s); dropped %d warm-up row(s)",
        report["indicators"],
        len(names),
        sum(warmup_rows.values()),
    )
    return out, report


# --------------------------------------------------------------------------------------------
# Regime HMM


@dataclass(frozen=True)
class RegimeModel:
    """A fitted Gaussian HMM over standardised (return, volatility) observations.

    States are relabelled by ascending mean volatility, so 0 is always the calmest regime.
    Parameters are held as plain arrays (full covariances), which is all causal filtering
    needs; ``obs_mean``/``obs_scale`` are the train-row statistics used to standardise.
    """

    n_states: int
    seed: int
    startprob: np.ndarray
    transmat: np.ndarray
    means: np.ndarray
    covars: np.ndarray
    obs_mean: np.ndarray
    obs_scale: np.ndarray
    train_rows: int
    log_likelihood: float
    converged: bool

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RegimeModel:
        """The model a dataset's (or a bundle's) metadata recorded with ``to_dict``."""
        return cls(
            n_states=int(raw["n_states"]),
            seed=int(raw["seed"]),
            startprob=np.asarray(raw["startprob"], dtype=np.float64),
            transmat=np.asarray(raw["transmat"], dtype=np.float64),
            means=np.asarray(raw["means"], dtype=np.float64),
            covars=np.asarray(raw["covars"], dtype=np.float64),
            obs_mean=np.asarray(raw["obs_mean"], dtype=np.float64),
            obs_scale=np.asarray(raw["obs_scale"], dtype=np.float64),
            train_rows=int(raw["train_rows"]),
            log_likelihood=float(raw["log_likelihood"]),
            converged=bool(raw["converged"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters (for the dataset metadata)."""
        return {
            "n_states": self.n_states,
            "seed": self.seed,
            "startprob": self.startprob.tolist(),
            "transmat": self.transmat.tolist(),
            "means": self.means.tolist(),
            "covars": self.covars.tolist(),
            "obs_mean": self.obs_mean.tolist(),
            "obs_scale": self.obs_scale.tolist(),
            "observations": list(HMM_OBSERVATION_COLUMNS),
            "train_rows": self.train_rows,
            "log_likelihood": self.log_likelihood,
            "converged": self.converged,
        }


def _observation_matrix(frame: pd.DataFrame, where: str) -> np.ndarray:
    missing = [c for c in HMM_OBSERVATION_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; run add_technical_indicators first")
    return frame[list(HMM_OBSERVATION_COLUMNS)].to_numpy(dtype=np.float64)


def _run_lengths(frame: pd.DataFrame, mask: np.ndarray) -> list[int]:
    """Lengths of runs of consecutive selected rows within one symbol (one HMM sequence each)."""
    symbols, _ = _symbol_codes(frame)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return []
    breaks = np.flatnonzero((np.diff(idx) != 1) | (symbols[idx[1:]] != symbols[idx[:-1]])) + 1
    bounds = np.concatenate(([0], breaks, [len(idx)]))
    return np.diff(bounds).tolist()


def _initialise(hmm: Any, z: np.ndarray, n_states: int) -> None:
    """Start EM from volatility quantiles: state k holds the k-th slice of calm-to-wild rows.

    This places the states where regimes differ most (volatility), so EM converges quickly
    and to the same optimum for the same train rows.
    """
    order = np.argsort(z[:, 1], kind="stable")
    groups = np.array_split(order, n_states)
    hmm.startprob_ = np.full(n_states, 1.0 / n_states)
    # Regimes persist: start from a sticky chain (expected stay of 20 bars).
    transmat = np.full((n_states, n_states), 0.05 / (n_states - 1))
    np.fill_diagonal(transmat, 0.95)
    hmm.transmat_ = transmat
    hmm.means_ = np.array([z[g].mean(axis=0) for g in groups])
    hmm.covars_ = np.array([z[g].var(axis=0) for g in groups]) + 1e-3


# The regime HMM is fitted on a documented subsample when the train rows are many: a Gaussian
# HMM of a few states over two observations is pinned down by a few hundred thousand bars,
# and EM over every train row of a large dataset would cost a minute per million rows on
# one core (the one step of a preparation that cannot be spread over a cluster). Both the
# single-process and the cluster preparation take exactly this sample.
HMM_FIT_CHUNK_ROWS = 1000


def regime_fit_quotas(train_rows: dict[str, int], max_rows: int | None) -> dict[str, int]:
    """How many train rows of each symbol the regime HMM is fitted on.

    Every train row when the total is at most ``max_rows`` (or ``max_rows`` is None);
    otherwise each symbol's share of ``max_rows`` in proportion to its train rows (floor).
    """
    total = sum(train_rows.values())
    if max_rows is None or total <= max_rows:
        return dict(train_rows)
    return {sym: int(max_rows * n // total) for sym, n in train_rows.items()}


def regime_fit_chunks(n_rows: int, quota: int) -> list[tuple[int, int]]:
    """``(start, stop)`` row ranges of one symbol's train rows that make up its fit sample.

    All rows when ``quota >= n_rows`` (one sequence). Otherwise ``ceil(quota / 1000)``
    contiguous chunks of 1,000 rows (the last one shorter so they sum to ``quota``), their
    starts spread evenly over the symbol's train rows: deterministic, so every run and every
    way of splitting the work over processes fits the same HMM. Each chunk is one HMM
    sequence (the chain restarts at a chunk's first bar).
    """
    if quota >= n_rows:
        return [(0, n_rows)] if n_rows else []
    if quota <= 0:
        return []
    count = -(-quota // HMM_FIT_CHUNK_ROWS)
    lengths = [HMM_FIT_CHUNK_ROWS] * (count - 1) + [quota - HMM_FIT_CHUNK_ROWS * (count - 1)]
    span = n_rows - HMM_FIT_CHUNK_ROWS
    starts = np.linspace(0, max(span, 0), count).round().astype(np.int64)
    return [(int(a), int(a) + n) for a, n in zip(starts, lengths, strict=True)]


def regime_fit_sequences(
    frame: pd.DataFrame, train_mask: np.ndarray, quotas: dict[str, int] | None = None
) -> dict[str, list[np.ndarray]]:
    """Per symbol, the observation sequences its train rows contribute to the HMM fit.

    Sequences are runs of consecutive train rows within a symbol (the train split is one
    run per symbol), cut to ``regime_fit_chunks`` when ``quotas`` limits the symbol.
    """
    mask = np.asarray(train_mask)
    observations = _observation_matrix(frame, "regime_fit_sequences")
    symbols = frame["symbol"].to_numpy()
    out: dict[str, list[np.ndarray]] = {}
    position = 0
    idx = np.flatnonzero(mask)
    for length in _run_lengths(frame, mask):
        rows = idx[position : position + length]
        position += length
        symbol = str(symbols[rows[0]])
        quota = length if quotas is None else min(quotas.get(symbol, length), length)
        for start, stop in regime_fit_chunks(length, quota):
            out.setdefault(symbol, []).append(observations[rows[start:stop]])
    return out


def fit_regime_hmm(
    frame: pd.DataFrame, train_mask: np.ndarray, n_states: int, seed: int
) -> RegimeModel:
    """Fit a Gaussian HMM on the HMM observation columns of the train rows only.

    Each symbol's train rows form their own sequence (no sequence joins two symbols or jumps
    over unselected rows). Observations are standardised with train-row statistics only.

    Raises:
        DataError: the mask does not match the frame, selects too few rows, or selects rows
            with undefined observations.
    """
    where = "fit_regime_hmm"
    _require_sorted(frame, where)
    mask = np.asarray(train_mask)
    if mask.dtype != bool or mask.shape != (len(frame),):
        raise DataError(
            f"{where}: train_mask must be a boolean array of shape ({len(frame)},), got "
            f"dtype {mask.dtype} shape {mask.shape}"
        )
    sequences = regime_fit_sequences(frame, mask)
    return fit_regime_hmm_sequences(
        [seq for symbol in sorted(sequences) for seq in sequences[symbol]], n_states, seed
    )


def fit_regime_hmm_sequences(sequences: list[np.ndarray], n_states: int, seed: int) -> RegimeModel:
    """Fit the regime HMM on observation sequences (each ``(T_i, 2)``, train rows only).

    Observations are standardised with the statistics of these rows only.

    Raises:
        DataError: too few rows, or rows with undefined observations.
    """
    from hmmlearn.hmm import GaussianHMM  # imported here: only fitting needs it

    where = "fit_regime_hmm"
    if not 2 <= n_states <= 10:
        raise DataError(f"{where}: n_states = {n_states} is invalid: allowed range [2, 10]")
    sequences = [np.asarray(seq, dtype=np.float64) for seq in sequences if len(seq)]
    x = np.concatenate(sequences) if sequences else np.empty((0, len(HMM_OBSERVATION_COLUMNS)))
    if len(x) < 10 * n_states:
        raise DataError(
            f"{where}: {len(x)} train row(s) for {n_states} states; at least {10 * n_states} needed"
        )
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise DataError(
            f"{where}: observations at train row {int(np.flatnonzero(bad)[0]) + 1} are not "
            "finite; drop warm-up rows (add_technical_indicators does) before fitting"
        )
    obs_mean = x.mean(axis=0)
    obs_scale = x.std(axis=0)
    obs_scale = np.where(obs_scale > 0, obs_scale, 1.0)
    z = (x - obs_mean) / obs_scale
    hmm = GaussianHMM(
        n_components=n_states,
        # Diagonal covariances and the scaling recursion: ~4x faster than full/log on two
        # observations, with the same regimes on the real data.
        covariance_type="diag",
        implementation="scaling",
        # A few dozen EM steps reach the regime split; more only polish the likelihood.
        n_iter=50,
        tol=1e-3,
        random_state=seed,
        # Our own initialisation (below) instead of k-means: deterministic, and k-means on
        # tens of thousands of rows costs more than the whole EM.
        init_params="",
    )
    _initialise(hmm, z, n_states)
    hmm.fit(z, lengths=[len(seq) for seq in sequences])
    order = np.argsort(hmm.means_[:, 1], kind="stable")
    model = RegimeModel(
        n_states=n_states,
        seed=seed,
        startprob=hmm.startprob_[order].copy(),
        transmat=hmm.transmat_[np.ix_(order, order)].copy(),
        means=hmm.means_[order].copy(),
        covars=hmm.covars_[order].copy(),
        obs_mean=obs_mean,
        obs_scale=obs_scale,
        train_rows=len(x),
        log_likelihood=float(hmm.monitor_.history[-1]) if hmm.monitor_.history else float("nan"),
        converged=bool(hmm.monitor_.converged),
    )
    logger.info(
        "regime HMM: %d states fitted on %d train rows in %d sequence(s) (converged=%s)",
        n_states,
        len(x),
        len(sequences),
        model.converged,
    )
    return model


def _emission_log_likelihood(model: RegimeModel, z: np.ndarray) -> np.ndarray:
    """log N(z_t | mean_k, cov_k) for every row and state, vectorised (T, K)."""
    d = z.shape[1]
    out = np.empty((len(z), model.n_states))
    for k in range(model.n_states):
        chol = np.linalg.cholesky(model.covars[k])
        # (z - mean) @ inv(L).T: one small matrix product over the rows instead of a solve
        # with millions of right-hand sides.
        solved = (z - model.means[k]) @ np.linalg.inv(chol).T
        log_det = 2.0 * np.log(np.diag(chol)).sum()
        out[:, k] = -0.5 * (d * np.log(2.0 * np.pi) + log_det + (solved**2).sum(axis=1))
    return out


def _forward_log_numpy(
    log_start: np.ndarray, log_trans: np.ndarray, log_emission: np.ndarray
) -> np.ndarray:
    """Log forward variables log p(obs_<=t, state_t); the reference and fallback path."""
    alpha = np.empty_like(log_emission)
    alpha[0] = log_start + log_emission[0]
    for t in range(1, len(log_emission)):
        prev = alpha[t - 1][:, None] + log_trans
        top = prev.max(axis=0)
        alpha[t] = top + np.log(np.exp(prev - top).sum(axis=0)) + log_emission[t]
    return alpha


def filtered_state_probabilities(model: RegimeModel, frame: pd.DataFrame) -> np.ndarray:
    """p(state_t | obs_<=t) per row, filtering each symbol's rows in time order.

    The filter runs across time gaps within a symbol as if the next bar followed directly.
    """
    where = "predict_regimes"
    _require_sorted(frame, where)
    x = _observation_matrix(frame, where)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: observations at row {row + 1} (symbol {frame['symbol'].iat[row]!r}) are "
            "not finite"
        )
    log_emission = _emission_log_likelihood(model, (x - model.obs_mean) / model.obs_scale)
    try:
        # hmmlearn's compiled forward pass: the same causal recursion, ~100x faster than
        # a Python loop. Only the forward half is used; the backward half would look ahead.
        from hmmlearn import _hmmc

        def forward(e: np.ndarray) -> np.ndarray:
            return _hmmc.forward_log(model.startprob, model.transmat, e)[1]
    except (ImportError, AttributeError):  # pragma: no cover - hmmlearn internals moved
        with np.errstate(divide="ignore"):
            log_start, log_trans = np.log(model.startprob), np.log(model.transmat)

        def forward(e: np.ndarray) -> np.ndarray:
            return _forward_log_numpy(log_start, log_trans, e)

    probs = np.empty_like(log_emission)
    starts, stops, _ = _symbol_blocks(frame)
    for start, stop in zip(starts, stops, strict=True):
        alpha = forward(np.ascontiguousarray(log_emission[start:stop]))
        alpha -= alpha.max(axis=1, keepdims=True)
        weights = np.exp(alpha)
        probs[start:stop] = weights / weights.sum(axis=1, keepdims=True)
    return probs


def predict_regimes(model: RegimeModel, frame: pd.DataFrame) -> np.ndarray:
    """Causal regime labels: argmax of p(state_t | obs_<=t) per symbol (0 = calmest)."""
    return filtered_state_probabilities(model, frame).argmax(axis=1).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Levels


def add_levels(frame: pd.DataFrame, sl_multiple: float, tp_multiple: float) -> pd.DataFrame:
    """A copy with ATR-based stop-loss and take-profit levels around the close."""
    for name, value in (("sl_multiple", sl_multiple), ("tp_multiple", tp_multiple)):
        if not np.isfinite(value) or value <= 0:
            raise DataError(f"add_levels: {name} = {value!r} is invalid: must be a positive number")
    missing = [c for c in ("close", "ATR") if c not in frame.columns]
    if missing:
        raise DataError(f"add_levels: missing column(s) {missing}; found {list(frame.columns)}")
    # A shallow copy: with copy-on-write, adding columns to it never touches ``frame``, and
    # the (large) float block is shared instead of duplicated.
    out = frame.copy(deep=False)
    close = frame["close"].to_numpy(dtype=np.float64)
    atr = frame["ATR"].to_numpy(dtype=np.float64)
    out["level_sl"] = close - sl_multiple * atr
    out["level_tp"] = close + tp_multiple * atr
    return out


# --------------------------------------------------------------------------------------------
# Forward targets (probe labels): the one place that looks AHEAD, on purpose
#
# The target of a window ending at bar t is a function of bars t+1 .. t+H only: a position
# decided at t's close is entered at the next bar's open, so the path starts at open[t+1].
# Nothing at or before t enters it, so a target never restates what the window shows. It is
# NaN where bar t+H is past the symbol's end or in another gap-free segment; the split purge
# (``DataConfig.purge_bars``, covering the longest horizon) keeps a split's last targets out
# of the next split.


def _forward_rows(segment: np.ndarray, horizon: int) -> np.ndarray:
    """Rows t of one symbol whose bars t+1..t+H exist in t's segment (segments are
    contiguous, non-decreasing runs, so comparing t with t+H suffices)."""
    now = np.arange(max(len(segment) - horizon, 0))
    return now[segment[now + horizon] == segment[now]]


def forward_return_sign(
    open_: np.ndarray, close: np.ndarray, segment: np.ndarray, horizon: int
) -> np.ndarray:
    """1.0 where close[t+H] > open[t+1] (the H-bar return from the next open is positive),
    else 0.0; NaN where bar t+H is missing (one symbol's rows, in time order)."""
    out = np.full(len(close), np.nan)
    now = _forward_rows(segment, horizon)
    out[now] = (close[now + horizon] > open_[now + 1]).astype(np.float64)
    return out


def forward_volatility(
    open_: np.ndarray, close: np.ndarray, segment: np.ndarray, horizon: int
) -> np.ndarray:
    """Realised volatility of bars t+1..t+H: the root mean square of their H log returns,
    log(close[t+1] / open[t+1]) then log(close[k] / close[k-1]) for k = t+2..t+H; NaN where
    bar t+H is missing (one symbol's rows, in time order).

    Summed bar by bar over the horizon rather than from a running cumulative sum, so a
    target is exactly a function of its own H bars (a cumulative sum would carry rounding
    from every earlier bar).
    """
    out = np.full(len(close), np.nan)
    now = _forward_rows(segment, horizon)
    if len(now) == 0:
        return out
    log_close = np.log(close)
    step = np.empty(len(close))
    step[0] = np.nan  # no previous close; never read (k >= t+2 >= 1 below)
    step[1:] = np.diff(log_close)
    total = (log_close[now + 1] - np.log(open_[now + 1])) ** 2
    for k in range(2, horizon + 1):
        total += step[now + k] ** 2
    out[now] = np.sqrt(total / horizon)
    return out


FORWARD_TARGETS = {"direction_h": forward_return_sign, "fwd_vol_h": forward_volatility}


def forward_targets(
    frame: pd.DataFrame,
    blocks: list[tuple[str, int, int]],
    direction_horizons: list[int],
    volatility_horizons: list[int],
) -> dict[str, np.ndarray]:
    """The forward targets, by probe name (``direction_h<H>``, ``fwd_vol_h<H>``), per symbol.

    ``frame`` is sorted by (symbol, timestamp) with its ``segment`` column; ``blocks`` are
    its symbols' (symbol, start, stop) rows. Prices are the unscaled opens and closes.
    """
    open_ = frame["open"].to_numpy(dtype=np.float64)
    close = frame["close"].to_numpy(dtype=np.float64)
    segment = frame["segment"].to_numpy()
    wanted = [("direction_h", h) for h in direction_horizons]
    wanted += [("fwd_vol_h", h) for h in volatility_horizons]
    out: dict[str, np.ndarray] = {}
    for prefix, horizon in wanted:
        values = np.full(len(frame), np.nan)
        for _, start, stop in blocks:
            values[start:stop] = FORWARD_TARGETS[prefix](
                open_[start:stop], close[start:stop], segment[start:stop], horizon
            )
        out[f"{prefix}{horizon}"] = values
    return out
