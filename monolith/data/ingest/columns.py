"""The canonical frame's columns, and the columns that mark a file as a ready dataset."""

from __future__ import annotations

from monolith.data.features import TECHNICAL_COLUMNS

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV_COLUMNS = (*PRICE_COLUMNS, "volume")
CANONICAL_COLUMNS = ("timestamp", "symbol", *OHLCV_COLUMNS)
# Columns that make a file a ready dataset rather than bare OHLCV.
SEED_MARKERS = frozenset(
    {c.lower() for c in TECHNICAL_COLUMNS[5:]}
    | {"llm_embedding", "hmm_regime", "level_sl", "level_tp"}
)
SEED_NUMERIC_EXTRAS = ("hmm_regime", "level_sl", "level_tp")
