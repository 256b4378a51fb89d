"""The preparation of one group of symbols: everything that needs only their own rows.

Read and clean, TA-Lib indicators, trading-calendar segments, purged splits, the group's
share of the regime-HMM fit sample, then (once the HMM is fitted centrally) regime decoding,
SL/TP levels, the probe targets, scalers, and writing each symbol's partition.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from monolith.config import DataConfig
from monolith.data.calendars import SymbolCalendar, trading_segments
from monolith.data.features import (
    TECHNICAL_COLUMNS,
    RegimeModel,
    add_levels,
    add_technical_indicators,
    forward_targets,
    predict_regimes,
    regime_fit_sequences,
)
from monolith.data.ingest import file_symbols, read_market_data
from monolith.data.prepare.partitions import write_partitions
from monolith.data.prepare.process import cpu_seconds, peak_rss_mb
from monolith.data.prepared import SPLIT_CODES, target_column
from monolith.data.sources import SourceFile
from monolith.data.splits import SPLIT_NAMES, SPLITS, fit_scalers, split_codes, symbol_blocks
from monolith.data.synthetic import generate_synthetic
from monolith.data.windows import valid_window_ends
from monolith.errors import DataError
from monolith.storage import StorageSettings
from monolith.uri import parse_uri

TRAIN = SPLIT_NAMES.index("train")
EMBEDDING_COLUMN = "llm_embedding"
_MCP = re.compile(r"^mcp_feature_\d+$")
_COT = re.compile(r"^cot_feature_\d+$")


@dataclass(frozen=True)
class GroupPlan:
    """What one group reads: these files, keeping these symbols (None: every symbol)."""

    files: tuple[SourceFile, ...] = ()
    symbols: tuple[str, ...] | None = None


class SymbolGroup:
    """The preparation of one group of symbols: everything that needs only their own rows.

    Methods are called in order: ``load`` -> ``regime_sample`` -> ``derive`` -> ``finish``.
    The group keeps its rows between the calls (a Ray actor holds them in its own process).
    ``derive`` needs nothing from the regime HMM, so a cluster runs it while the HMM is
    fitted centrally.
    """

    def __init__(
        self,
        cfg: DataConfig,
        plan: GroupPlan | None = None,
        settings: StorageSettings | None = None,
    ) -> None:
        self.cfg = cfg
        self.plan = plan or GroupPlan()
        self.settings = settings
        self.frame: pd.DataFrame | None = None
        self.blocks: list[tuple[str, int, int]] = []
        self.codes = np.empty(0, dtype=np.int8)
        self.derived: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    def _stage(self, name: str, started: float) -> float:
        now = time.perf_counter()
        self.timings[name] = round(self.timings.get(name, 0.0) + now - started, 3)
        return now

    def scan(self, files: list[SourceFile]) -> list[dict[str, int]]:
        """Per file, the symbols it holds and their row counts (before plans exist)."""
        return [file_symbols(f, self.settings) for f in files]

    def assign(self, plan: GroupPlan) -> None:
        self.plan = plan

    def load(self) -> dict[str, Any]:
        """Read, clean, add indicators, segments and splits; returns the group's summary."""
        t = time.perf_counter()
        cfg = self.cfg
        raw, cleaning = self._read()
        t = self._stage("read and clean", t)
        if "hmm_regime" in raw.columns:
            # A supplied regime may come from a full-series (look-ahead) decode; keep it for
            # reference but recompute our own, fitted on the train span only.
            raw = raw.rename(columns={"hmm_regime": "hmm_regime_source"})
            cleaning.setdefault("dataset_actions", []).append(
                "input column hmm_regime kept as hmm_regime_source; hmm_regime recomputed "
                "(HMM fitted on train rows only, causal filtering)"
            )
        frame, feature_report = add_technical_indicators(raw)
        del raw
        t = self._stage("technical indicators", t)
        self.blocks = symbol_blocks(frame)
        frame["segment"], calendars = trading_segments(
            frame, cfg.gap_tolerance_bars, self.blocks, cfg.calendar_of
        )
        restate_gaps(cleaning, calendars)
        t = self._stage("calendars and segments", t)
        self.codes, boundaries = split_codes(
            frame,
            val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction,
            purge_bars=cfg.purge_bars,
            min_split_rows=cfg.sequence_length + cfg.label_horizon,
            blocks=self.blocks,
        )
        frame["split"] = pd.Categorical.from_codes(self.codes, categories=list(SPLIT_NAMES))
        self.frame = frame
        self._stage("splits", t)
        symbols = sorted(boundaries)
        return {
            "symbols": symbols,
            "calendars": {s: calendars[s].to_dict() for s in symbols},
            "train_rows": {s: int(boundaries[s]["train"]["rows"]) for s in symbols},
            "cleaning": cleaning,
            "feature_engineering": feature_report,
            "features": _feature_columns(frame, cfg),
            "splits": boundaries,
        }

    def _read(self) -> tuple[pd.DataFrame, dict]:
        if self.cfg.source == "synthetic":
            return _synthetic(self.cfg)
        return read_market_data(
            files=list(self.plan.files),
            symbols=None if self.plan.symbols is None else frozenset(self.plan.symbols),
            min_rows=self.cfg.sequence_length + self.cfg.label_horizon,
            bad_tick_range_multiple=self.cfg.bad_tick_range_multiple,
            settings=self.settings,
            adjust=self.cfg.adjust,
            wall_clock_gaps=False,  # counted in trading time by load()
        )

    def regime_sample(self, quotas: dict[str, int]) -> dict[str, list[np.ndarray]]:
        """This group's share of the regime-HMM fit sample, per symbol (train rows only)."""
        return regime_fit_sequences(self._loaded(), self.codes == TRAIN, quotas)

    def derive(self, instruments: dict[str, int], reference_rows: dict[str, int]) -> None:
        """What needs no regimes: SL/TP levels, the probe targets, instrument ids, scalers,
        window counts and the symbols' share of the drift reference (``reference_rows``
        scaled train rows each, evenly spaced); kept here until ``finish``."""
        t = time.perf_counter()
        cfg = self.cfg
        frame = add_levels(self._loaded(), cfg.atr_sl_multiple, cfg.atr_tp_multiple)
        frame[target_column("direction")] = self.direction()
        forward = forward_targets(
            frame, self.blocks, cfg.direction_horizons, cfg.volatility_horizons
        )
        for name, values in forward.items():
            frame[target_column(name)] = values
        ids = np.empty(len(frame), dtype=np.int32)
        for symbol, start, stop in self.blocks:
            ids[start:stop] = instruments[symbol]
        frame["instrument_id"] = ids
        scalers = fit_scalers(
            frame, self.codes == TRAIN, list(TECHNICAL_COLUMNS), cfg.scaler, self.blocks
        )
        windows = self.window_counts(frame[target_column("direction")].to_numpy(), ids)
        split_rows = np.bincount(self.codes, minlength=len(SPLIT_NAMES))
        train = self.codes == TRAIN
        technical = [frame[c].to_numpy(dtype=np.float64) for c in TECHNICAL_COLUMNS]
        reference = {}
        for symbol, start, stop in self.blocks:
            train_rows = start + np.flatnonzero(train[start:stop])
            count = reference_rows[symbol]
            spaced = np.linspace(0, len(train_rows) - 1, count).round().astype(int)
            pick = train_rows[np.unique(spaced)] if count else train_rows[:0]
            values = np.column_stack([column[pick] for column in technical])
            reference[symbol] = scalers[symbol].transform(values).astype(np.float32)
        self.frame = frame
        self.derived = {
            "drift_reference": reference,
            "scalers": scalers,
            **windows,
            "rows": {"prepared": int(len(frame))}
            | {name: int(split_rows[code]) for name, code in SPLIT_CODES.items()},
        }
        self._stage("levels, targets, scalers", t)

    def window_counts(self, direction: np.ndarray, ids: np.ndarray | None = None) -> dict:
        """Windows per split, overall and per symbol, and each symbol's segments and longest
        gap-free run (``direction``: the direction target, NaN where it does not exist)."""
        frame = self._loaded()
        if ids is None:
            ids = np.empty(len(frame), dtype=np.int32)
            for i, (_, start, stop) in enumerate(self.blocks):
                ids[start:stop] = i
        segment = frame["segment"].to_numpy()
        ends = valid_window_ends(
            ids, segment, self.codes, ~np.isnan(direction), self.cfg.sequence_length
        )
        per_code = np.bincount(self.codes[ends], minlength=len(SPLIT_NAMES))
        by_symbol = {}
        for symbol, start, stop in self.blocks:
            mine = ends[(ends >= start) & (ends < stop)]
            counts = np.bincount(self.codes[mine], minlength=len(SPLIT_NAMES))
            by_symbol[symbol] = {name: int(counts[SPLIT_CODES[name]]) for name in SPLITS}
        return {
            "windows": {name: int(per_code[SPLIT_CODES[name]]) for name in SPLITS},
            "windows_per_symbol": by_symbol,
            "segments": {s: int(segment[stop - 1]) + 1 for s, _, stop in self.blocks},
            "longest_run": {
                s: int(np.bincount(segment[start:stop] - segment[start]).max())
                for s, start, stop in self.blocks
            },
        }

    def direction(self) -> np.ndarray:
        """The ``direction`` probe target of the loaded rows (NaN past a segment's end)."""
        return _direction_target(self._loaded(), self.cfg.label_horizon, self.blocks)

    def finish(self, model: RegimeModel, target: str) -> dict[str, Any]:
        """Decode the regimes, write each symbol's partition under ``target``; returns the
        scalers and counts (the rows stay here)."""
        t = time.perf_counter()
        frame = self._loaded()
        if not self.derived:
            raise DataError("SymbolGroup: call derive() before finish()")
        frame["hmm_regime"] = predict_regimes(model, frame).astype(np.int32)
        t = self._stage("HMM regimes (decoding)", t)
        write_partitions(frame, parse_uri(target), self.settings, self.blocks)
        self._stage("write partitions", t)
        self.timings["peak_rss_mb"] = peak_rss_mb()
        self.timings["cpu_seconds"] = cpu_seconds()
        self.frame = None  # the rows are written: free them before the central commit
        return {**self.derived, "timings": self.timings}

    def _loaded(self) -> pd.DataFrame:
        if self.frame is None:
            raise DataError("SymbolGroup: call load() first (or the group has finished)")
        return self.frame


def _synthetic(cfg: DataConfig) -> tuple[pd.DataFrame, dict]:
    """The generated market (its symbols share one market factor: one group generates all)."""
    frame = generate_synthetic(cfg.synthetic)
    report = {
        "files": [],
        "symbols": {
            str(sym): {"rows_in": int(n), "rows_out": int(n)}
            for sym, n in frame.groupby("symbol").size().items()
        },
        "dataset_actions": [
            f"generated synthetic data: {cfg.synthetic.symbols} symbols x "
            f"{cfg.synthetic.rows_per_symbol} rows, seed {cfg.synthetic.seed}; nothing cleaned"
        ],
    }
    return frame, report


def restate_gaps(cleaning: dict, calendars: dict[str, SymbolCalendar]) -> None:
    """The cleaning report's gaps, counted in each symbol's trading time: bars missing while
    its market is open (a closure is none), with one line per symbol that has any."""
    for symbol, cal in calendars.items():
        entry = cleaning.get("symbols", {}).get(symbol)
        if entry is None:
            continue
        entry.update(
            gaps=cal.gaps,
            missing_bars=cal.missing_bars,
            closures_spanned=cal.closures,
            calendar=cal.calendar,
        )
        if cal.gaps:
            line = (
                f"{symbol}: {cal.gaps} gap(s) totalling {cal.missing_bars} bar(s) missing while "
                f"the market was open (calendar {cal.calendar}) left unfilled (windows must not "
                "span them)"
            )
            cleaning.setdefault("symbol_actions", {}).setdefault(symbol, []).append(line)
            cleaning.setdefault("actions", []).append(line)


def _direction_target(
    frame: pd.DataFrame, horizon: int, blocks: list[tuple[str, int, int]]
) -> np.ndarray:
    """1.0 when close ``horizon`` bars later (same symbol and segment) is higher, else 0.0.

    NaN where that bar does not exist. Computed from unscaled closes; the split purge keeps
    the look-ahead of a split's last windows inside the purge gap.
    """
    close = frame["close"].to_numpy(dtype=np.float64)
    segment = frame["segment"].to_numpy()
    target = np.full(len(frame), np.nan)
    for _, start, stop in blocks:
        now = np.arange(start, max(start, stop - horizon))
        later = now + horizon
        same = segment[later] == segment[now]  # segments are contiguous runs
        target[now[same]] = (close[later[same]] > close[now[same]]).astype(np.float64)
    return target


def _feature_columns(frame: pd.DataFrame, cfg: DataConfig) -> dict:
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
        # Probe name -> its column (hmm_regime, then target_<probe>: see features/targets.py).
        "targets": {name: target_column(name) for name in cfg.probe_targets},
        "not_model_inputs": [
            "hmm_regime",
            "level_sl",
            "level_tp",
            *(target_column(name) for name in cfg.target_horizons),
        ],
    }
