"""Files -> canonical frame -> features -> purged splits -> scalers -> a prepared dataset folder.

A prepared dataset is a folder::

    dataset/instrument=<SYMBOL>/part-0.parquet   one file per symbol, unscaled rows
    scalers.pkl                                  scikit-learn scalers (fitted on train rows)
    scalers.json                                 the same scalers as plain parameters
    data_processing_metadata.json                what was read, cleaned, built and split

It is written to a temporary sibling and renamed into place, so a failure never leaves a
half-written dataset behind.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from monolith._atomic import atomic_directory
from monolith.config import DataConfig, InputSpec
from monolith.data.features import (
    TECHNICAL_COLUMNS,
    add_levels,
    add_technical_indicators,
    fit_regime_hmm,
    predict_regimes,
)
from monolith.data.ingest import read_market_data
from monolith.data.splits import SPLITS, assign_splits, fit_scalers, scalers_to_json
from monolith.data.synthetic import generate_synthetic
from monolith.data.windows import (
    DATASET_DIR,
    METADATA_FILE,
    SCALERS_JSON,
    SCALERS_PKL,
    is_prepared_dataset,
    valid_window_ends,
)
from monolith.errors import DataError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
EMBEDDING_COLUMN = "llm_embedding"
_MCP = re.compile(r"^mcp_feature_\d+$")
_COT = re.compile(r"^cot_feature_\d+$")


def _stage(name: str, started: float) -> float:
    now = time.perf_counter()
    log.info("prepare: %s done in %.2fs", name, now - started)
    return now


def load_source(cfg: DataConfig) -> tuple[pd.DataFrame, dict]:
    """The canonical raw frame and its cleaning report, from files or the generator."""
    if cfg.source == "synthetic":
        frame = generate_synthetic(cfg.synthetic)
        report = {
            "files": [],
            "symbols": {
                str(sym): {"rows_in": int(n), "rows_out": int(n)}
                for sym, n in frame.groupby("symbol").size().items()
            },
            "actions": [
                f"generated synthetic data: {cfg.synthetic.symbols} symbols x "
                f"{cfg.synthetic.rows_per_symbol} rows, seed {cfg.synthetic.seed}; nothing cleaned"
            ],
        }
        return frame, report
    min_rows = cfg.sequence_length + cfg.label_horizon
    return read_market_data(
        cfg.source, min_rows=min_rows, bad_tick_range_multiple=cfg.bad_tick_range_multiple
    )


def _segments(frame: pd.DataFrame, gap_tolerance_bars: int) -> np.ndarray:
    """Per symbol, a new segment starts after a gap of more than the tolerated missing bars."""
    ts = pd.DatetimeIndex(frame["timestamp"]).as_unit("ns").asi8
    symbols = frame["symbol"].to_numpy()
    new_symbol = np.r_[True, symbols[1:] != symbols[:-1]]
    step = np.r_[0, np.diff(ts)]
    segment = np.zeros(len(frame), dtype=np.int64)
    for start, end in _symbol_bounds(new_symbol):
        diffs = step[start + 1 : end]
        if len(diffs) == 0:
            continue
        interval = np.median(diffs)
        breaks = diffs > (gap_tolerance_bars + 1) * interval
        segment[start + 1 : end] = np.cumsum(breaks)
    return segment


def _symbol_bounds(new_symbol: np.ndarray) -> list[tuple[int, int]]:
    starts = np.flatnonzero(new_symbol)
    ends = np.r_[starts[1:], len(new_symbol)]
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _direction_target(frame: pd.DataFrame, horizon: int) -> np.ndarray:
    """1.0 when close ``horizon`` bars later (same symbol and segment) is higher, else 0.0.

    NaN where that bar does not exist. Computed from unscaled closes; the split purge keeps
    the look-ahead of a split's last windows inside the purge gap.
    """
    keys = [frame["symbol"], frame["segment"]]
    future = frame["close"].groupby(keys, sort=False).shift(-horizon)
    target = (future > frame["close"]).astype(np.float64)
    return target.where(future.notna()).to_numpy()


def _feature_columns(frame: pd.DataFrame) -> dict:
    mcp = sorted(c for c in frame.columns if _MCP.match(c))
    cot = sorted(c for c in frame.columns if _COT.match(c))
    embedding_dim = 0
    if EMBEDDING_COLUMN in frame.columns:
        widths = frame[EMBEDDING_COLUMN].map(len).unique()
        if len(widths) != 1:
            raise DataError(f"column {EMBEDDING_COLUMN!r} has rows of different widths {widths}")
        embedding_dim = int(widths[0])
    return {
        "technical": list(TECHNICAL_COLUMNS),
        "embedding": EMBEDDING_COLUMN if embedding_dim else None,
        "embedding_dim": embedding_dim,
        "mcp": mcp,
        "cot": cot,
        "targets": {"regime": "hmm_regime", "direction": "target_direction"},
        "not_model_inputs": ["hmm_regime", "level_sl", "level_tp", "target_direction"],
    }


def _safe_name(symbol: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", symbol)


def build_prepared_frame(cfg: DataConfig) -> tuple[pd.DataFrame, dict]:
    """Run every stage in memory; returns the prepared frame and its metadata (no I/O out)."""
    t = t0 = time.perf_counter()
    raw, cleaning = load_source(cfg)
    t = _stage(f"read {len(raw):,} rows", t)

    if "hmm_regime" in raw.columns:
        # A supplied regime may come from a full-series (look-ahead) decode; keep it for
        # reference but recompute our own, fitted on the train span only.
        raw = raw.rename(columns={"hmm_regime": "hmm_regime_source"})
        cleaning["actions"].append(
            "input column hmm_regime kept as hmm_regime_source; hmm_regime recomputed "
            "(HMM fitted on train rows only, causal filtering)"
        )
    frame, feature_report = add_technical_indicators(raw)
    del raw
    t = _stage("technical indicators", t)

    frame["segment"] = _segments(frame, cfg.gap_tolerance_bars)
    labels, boundaries = assign_splits(
        frame,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        purge_bars=cfg.purge_bars,
        min_split_rows=cfg.sequence_length + cfg.label_horizon,
    )
    frame["split"] = labels
    train_mask = labels == "train"

    regime_model = fit_regime_hmm(frame, train_mask, cfg.hmm_states, cfg.hmm_seed)
    frame["hmm_regime"] = predict_regimes(regime_model, frame).astype(np.int32)
    t = _stage("HMM regimes (fitted on train rows)", t)

    frame = add_levels(frame, cfg.atr_sl_multiple, cfg.atr_tp_multiple)
    frame["target_direction"] = _direction_target(frame, cfg.label_horizon)
    symbols = sorted(frame["symbol"].unique().tolist())
    instruments = {sym: i for i, sym in enumerate(symbols)}
    frame["instrument_id"] = frame["symbol"].map(instruments).astype(np.int32)

    scalers = fit_scalers(frame, labels, list(TECHNICAL_COLUMNS), cfg.scaler)
    t = _stage("splits, targets, scalers", t)

    split_code = pd.Categorical(labels, categories=["train", "val", "test", "purge"]).codes
    ends = valid_window_ends(
        frame["instrument_id"].to_numpy(),
        frame["segment"].to_numpy(),
        split_code,
        ~np.isnan(frame["target_direction"].to_numpy()),
        cfg.sequence_length,
    )
    windows = {name: int((split_code[ends] == i).sum()) for i, name in enumerate(SPLITS)}
    features = _feature_columns(frame)
    spec = InputSpec(
        sequence_length=cfg.sequence_length,
        n_technical=len(TECHNICAL_COLUMNS),
        n_instruments=len(symbols),
        embedding_dim=features["embedding_dim"],
        mcp_dim=len(features["mcp"]),
        cot_dim=len(features["cot"]),
    )
    metadata = {
        "format_version": FORMAT_VERSION,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": cfg.source,
        "source_files": cleaning.get("files", []),
        "cleaning": cleaning,
        "feature_engineering": feature_report,
        "features": features,
        "input_spec": spec.to_dict(),
        "instruments": instruments,
        "sequence_length": cfg.sequence_length,
        "label_horizon": cfg.label_horizon,
        "purge_bars": cfg.purge_bars,
        "gap_tolerance_bars": cfg.gap_tolerance_bars,
        "splits": boundaries,
        "segments": {
            str(sym): int(n) for sym, n in frame.groupby("symbol")["segment"].max().add(1).items()
        },
        "scaler": {
            "kind": cfg.scaler,
            "per": "symbol",
            "fitted_on": "train",
            "features": list(TECHNICAL_COLUMNS),
        },
        "hmm": regime_model.to_dict()
        | {"fitted_on": "train rows only", "decoding": "causal forward filtering"},
        "rows": {
            "prepared": int(len(frame)),
            **{name: int((labels == name).sum()) for name in ("train", "val", "test", "purge")},
        },
        "config": {k: v for k, v in vars(cfg).items() if k != "synthetic"}
        | {"synthetic": vars(cfg.synthetic)},
        "windows": windows,
        "elapsed_seconds": round(time.perf_counter() - t0, 3),
    }
    metadata["_scalers"] = scalers  # popped by write_prepared
    return frame, metadata


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary-encoding: labels and codes, not floats or timestamps.

    Float features are nearly all distinct, so a dictionary only costs a hash table per column
    (several times the data at the write's peak) before Parquet falls back to plain encoding.
    """
    return [
        f.name
        for f in schema
        if not (pa.types.is_floating(f.type) or pa.types.is_timestamp(f.type))
    ]


def _symbol_parts(frame: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """Each symbol's rows in symbol order, as zero-copy row slices when the frame is grouped.

    ``build_prepared_frame`` returns rows sorted by symbol, so each symbol is one contiguous
    run and a slice (a view under copy-on-write) replaces groupby's gathered copy.
    """
    symbols = frame["symbol"]
    if len(frame) == 0:
        return
    new = np.flatnonzero(symbols.iloc[1:].to_numpy() != symbols.iloc[:-1].to_numpy()) + 1
    starts = np.r_[0, new]
    stops = np.r_[new, len(frame)]
    firsts = [symbols.iat[i] for i in starts]
    if all(a < b for a, b in zip(firsts, firsts[1:], strict=False)):
        for start, stop, symbol in zip(starts.tolist(), stops.tolist(), firsts, strict=True):
            yield symbol, frame.iloc[start:stop]
        return
    for symbol, part in frame.groupby("symbol", sort=True):  # not grouped: gather
        yield symbol, part.reset_index(drop=True)


def write_prepared(frame: pd.DataFrame, metadata: dict, output: Path) -> None:
    """Write atomically: a temporary sibling folder renamed into place."""
    scalers = metadata.pop("_scalers")
    with atomic_directory(output) as tmp:
        # The system allocator hands the encoder's buffers back to the OS after each file;
        # Arrow's default pool would keep them for the rest of the process.
        pool = pa.system_memory_pool()
        for symbol, part in _symbol_parts(frame):
            folder = tmp / DATASET_DIR / f"instrument={_safe_name(str(symbol))}"
            folder.mkdir(parents=True)
            table = pa.Table.from_pandas(part, preserve_index=False)
            pq.write_table(
                table,
                folder / "part-0.parquet",
                use_dictionary=_dictionary_columns(table.schema),
                memory_pool=pool,
            )
            del table, part
        with open(tmp / SCALERS_PKL, "wb") as fh:
            pickle.dump(scalers, fh)
        columns = metadata["scaler"]["features"]
        (tmp / SCALERS_JSON).write_text(
            json.dumps(scalers_to_json(scalers, columns, metadata["scaler"]["kind"]), indent=1)
        )
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))


def prepare_dataset(cfg: DataConfig, output: str | Path, *, overwrite: bool = False) -> dict:
    """Prepare ``cfg.source`` into the folder ``output``; returns the metadata written."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise DataError(f"output {output} already exists; pass --overwrite to replace it")
    if output.exists() and not is_prepared_dataset(output):
        raise DataError(
            f"output {output} exists and is not a prepared dataset; refusing to replace it"
        )
    frame, metadata = build_prepared_frame(cfg)
    write_prepared(frame, metadata, output)
    log.info(
        "prepared %s rows of %d symbols into %s (windows: %s)",
        f"{metadata['rows']['prepared']:,}",
        len(metadata["instruments"]),
        output,
        metadata["windows"],
    )
    return metadata


def ensure_prepared(cfg: DataConfig, cache_dir: str | Path) -> Path:
    """A prepared dataset for ``cfg``: the source itself if it is one, else prepared once."""
    if is_prepared_dataset(cfg.source):
        return Path(cfg.source)
    cache_dir = Path(cache_dir)
    if not is_prepared_dataset(cache_dir):
        prepare_dataset(cfg, cache_dir, overwrite=False)
    return cache_dir
