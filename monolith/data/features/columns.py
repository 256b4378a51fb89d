"""The feature columns: the 43 technical columns, the HMM observations, and their periods."""

from __future__ import annotations

from typing import Any

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
