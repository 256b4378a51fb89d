"""The technical columns: TA-Lib indicators and causal filters, per symbol, with no look-ahead.

TA-Lib computes what it has (all its functions are trailing); the rest is built from TA-Lib's
rolling primitives (SUM, MAX, MIN, SMA) and causal IIR filters. Warm-up rows (where any
computed column is still undefined) are dropped per symbol and counted, never filled.
Divisions that can hit zero (flat bars, zero volume) use an explicit, counted fallback.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import talib

from monolith.data.features.blocks import require_sorted, symbol_blocks
from monolith.data.features.columns import (
    HMM_OBSERVATION_COLUMNS,
    INDICATOR_PERIODS,
    TECHNICAL_COLUMNS,
)
from monolith.errors import DataError

logger = logging.getLogger(__name__)

_MA_SMA = 0
_MA_EMA = 1


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
    """The regime HMM's observations: the log return and its rolling volatility."""
    log_close = np.log(c)
    returns = np.full_like(c, np.nan)
    returns[1:] = np.diff(log_close)
    return {
        "hmm_obs_return": returns,
        "hmm_obs_volatility": talib.STDDEV(returns, INDICATOR_PERIODS["hmm_obs_volatility"], 1.0),
    }


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
    precomputed = _check_input(frame)
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
    starts, stops, names = symbol_blocks(frame)
    given = {
        c: frame[c].to_numpy(dtype=np.float64)
        for c in (TECHNICAL_COLUMNS if precomputed else TECHNICAL_COLUMNS[:5])
    }
    warmup_rows: dict[str, int] = {}
    nonfinite_rows: dict[str, dict[str, int]] = {}
    for start, stop, name in zip(starts, stops, names, strict=True):
        part = {c: np.ascontiguousarray(given[c][start:stop]) for c in TECHNICAL_COLUMNS[:5]}
        columns = {} if precomputed else _indicators(*part.values(), counts)
        columns.update(_observations(part["close"]))
        row_defined, warmup_rows[name], late = _defined_rows(name, columns, computed_names)
        if late:
            nonfinite_rows[name] = late
        keep[start:stop] = row_defined
        rows = int(row_defined.sum())
        for j, column in enumerate(value_names):
            source = columns[column] if column in computed_set else given[column][start:stop]
            np.compress(row_defined, source, out=block[j, filled : filled + rows])
        filled += rows
        del columns, part
    out = _kept_frame(frame, block, filled, keep, value_names)
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


def _check_input(frame: pd.DataFrame) -> bool:
    """Refuse a frame without OHLCV or not sorted; whether it holds all 43 columns already
    (then they must be finite)."""
    missing = [c for c in ("timestamp", "symbol", *TECHNICAL_COLUMNS[:5]) if c not in frame.columns]
    if missing:
        raise DataError(
            f"add_technical_indicators: missing column(s) {missing}; found {list(frame.columns)}"
        )
    require_sorted(frame, "add_technical_indicators")
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
    return precomputed


def _defined_rows(
    name: str, columns: dict[str, np.ndarray], computed_names: list[str]
) -> tuple[np.ndarray, int, dict[str, int]]:
    """One symbol's rows with every computed value defined, its warm-up length, and per
    column the values undefined after the warm-up (dropped too, and logged).

    Warm-up is the leading run of rows with an undefined value; anything undefined later is a
    non-finite value, dropped and counted separately so it is never mistaken for warm-up.
    """
    finite = {c: np.isfinite(columns[c]) for c in computed_names}
    row_defined = np.logical_and.reduce(list(finite.values()))
    warm = np.logical_and.accumulate(~row_defined)
    warmup = int(warm.sum())
    late_rows = int(np.count_nonzero(~row_defined & ~warm))
    late: dict[str, int] = {}
    if late_rows:
        late = {c: int(k) for c in computed_names if (k := np.count_nonzero(~finite[c] & ~warm))}
        logger.warning("%s: dropping non-finite indicator rows after warm-up: %s", name, late)
    if len(row_defined) - warmup - late_rows <= 0:
        raise DataError(
            f"symbol {name!r}: all {len(row_defined)} row(s) fall in the indicator warm-up; "
            "at least one more row than the warm-up is needed"
        )
    return row_defined, warmup, late


def _kept_frame(
    frame: pd.DataFrame, block: np.ndarray, filled: int, keep: np.ndarray, value_names: list[str]
) -> pd.DataFrame:
    """The output frame on ``block``'s first ``filled`` rows, with the kept rows' timestamp,
    symbol and other columns of ``frame``."""
    # Only the first ``filled`` rows were written; the untouched tail of each column is never
    # paged in.
    out = pd.DataFrame(block[:, :filled].T, columns=value_names, copy=False)
    out.insert(0, "timestamp", frame["timestamp"].array[keep])
    out.insert(1, "symbol", frame["symbol"].array[keep])
    taken = {"timestamp", "symbol", *TECHNICAL_COLUMNS, *HMM_OBSERVATION_COLUMNS}
    for name in frame.columns:
        if name not in taken:
            out[name] = frame[name].loc[keep].to_numpy()
    return out
