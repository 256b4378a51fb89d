"""A partition's rows as the arrays windows are cut from, and the structure of a batch.

Element structure of the pipeline and the samples: ``(features, targets)`` with
``features["technical_input"]`` float32 [B, L, F] (scaled with the train-fitted scalers),
``features["instrument_input"]`` int32 [B], and, where present, ``embeddings_input`` [B, E],
``mcp_input`` [B, M], ``cot_input`` [B, C] taken at the window's last bar;
``targets["regime"]`` int32 [B] and ``targets["direction"]`` int32 [B]. The samples also
carry every other prepared probe target, by probe name (``direction_h<H>`` int32, -1 where
the horizon runs past the data; ``fwd_vol_h<H>`` float32, NaN there) and ``end_time``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from monolith.config import probe_kind
from monolith.data.prepared import DIRECTION_COLUMN, REGIME_COLUMN, SCALERS_JSON
from monolith.data.windows.index import SymbolIndex
from monolith.errors import DataError

EXTRA_INPUTS = ("embeddings_input", "mcp_input", "cot_input")


def scaled(
    scalers: dict[str, Any], symbol: str, table: pa.Table, technical_columns: list[str]
) -> np.ndarray:
    """The technical columns of ``symbol``'s rows, scaled with its train-fitted scaler."""
    params = scalers["symbols"].get(symbol)
    if params is None:
        raise DataError(f"no scaler parameters for symbol {symbol!r} in {SCALERS_JSON}")
    values = np.column_stack(
        [table.column(c).to_numpy(zero_copy_only=False) for c in technical_columns]
    ).astype(np.float64, copy=False)
    offset = np.asarray(params["offset"], dtype=np.float64)
    scale = np.asarray(params["scale"], dtype=np.float64)
    return ((values - offset) / scale).astype(np.float32)


def row_arrays(
    ix: SymbolIndex,
    table: pa.Table,
    extra_targets: dict[str, str],
    extra_inputs: dict[str, list[str]],
) -> dict[str, np.ndarray]:
    """Per row: the instrument, the targets (the extra ones where read) and extra inputs."""
    n = table.num_rows
    direction = table.column(DIRECTION_COLUMN).to_numpy(zero_copy_only=False)
    rows = {
        "instrument": np.full(n, ix.instrument, dtype=np.int32),
        "regime": table.column(REGIME_COLUMN).to_numpy(zero_copy_only=False).astype(np.int32),
        "direction": np.nan_to_num(direction.astype(np.float64), nan=-1).astype(np.int32),
    }
    for name, column in extra_targets.items():
        if column not in table.column_names:
            continue  # only the samples read them
        values = table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
        if probe_kind(name) == "classification":
            rows[name] = np.nan_to_num(values, nan=-1).astype(np.int32)
        else:
            rows[name] = values.astype(np.float32)
    for key, names in extra_inputs.items():
        if key == "embeddings_input":
            values = table.column(names[0]).to_pylist()
            rows[key] = np.asarray(values, dtype=np.float32).reshape(n, -1)
        else:
            rows[key] = np.column_stack(
                [table.column(c).to_numpy(zero_copy_only=False) for c in names]
            ).astype(np.float32)
    return rows


def as_batch(
    technical: np.ndarray, rows: dict[str, np.ndarray], extra_targets: dict[str, str]
) -> tuple[dict, dict]:
    """Windows' technical rows and their last bar's row arrays as ``(features, targets)``."""
    n = len(technical)
    features = {
        "technical_input": technical,
        "instrument_input": rows.get("instrument", np.empty(n, dtype=np.int32)),
    }
    for key in EXTRA_INPUTS:
        if key in rows:
            features[key] = rows[key]
    targets = {
        "regime": rows.get("regime", np.empty(n, dtype=np.int32)),
        "direction": rows.get("direction", np.empty(n, dtype=np.int32)),
        # ns since the epoch, UTC: the window's last bar
        "end_time": rows.get("end_time", np.empty(n, dtype=np.int64)),
    }
    for name in extra_targets:
        kind = np.int32 if probe_kind(name) == "classification" else np.float32
        targets[name] = rows.get(name, np.empty(n, dtype=kind))
    return features, targets
