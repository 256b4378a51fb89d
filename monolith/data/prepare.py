"""Files -> canonical frame -> features -> purged splits -> regimes -> scalers -> a prepared dataset.

The work is split by what it needs to see:

- per symbol (``SymbolGroup``): read and clean its rows, TA-Lib indicators, gap segments,
  purged splits, its share of the regime-HMM fit sample, then (once the HMM is fitted)
  regime decoding, SL/TP levels, the probe targets (``direction`` and the forward targets,
  ``monolith.data.features.forward_targets``), its scaler, and writing its partition;
- central, on small summaries only: the instrument map (every symbol, sorted), the regime HMM
  fitted on the pooled sample (``monolith.data.features.regime_fit_quotas``: every train row
  up to ``data.hmm_fit_max_rows``, else a documented deterministic subsample), and the merged
  metadata, scalers and commit.

``prepare_dataset`` runs the groups in this process (one group holding every symbol), or
through a ``GroupRunner`` that spreads groups of symbols over processes (``ray_jobs.prepare``
runs each group as a Ray actor). Both fit the same HMM on the same sample and produce the same
dataset; only ``timings`` in the metadata differ. Rows never pass through the central step.

The output (a local folder or an ``s3://`` prefix, layout in ``monolith.data.prepared``) is
complete only when its metadata file exists, which is written last: a local folder is built
in a temporary sibling and renamed into place; on S3 the partitions go straight to the prefix
and a failure removes what was written.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from monolith.config import DataConfig, InputSpec
from monolith.data.calendars import SymbolCalendar, trading_segments
from monolith.data.features import (
    TECHNICAL_COLUMNS,
    RegimeModel,
    add_levels,
    add_technical_indicators,
    fit_regime_hmm_sequences,
    forward_targets,
    predict_regimes,
    regime_fit_quotas,
    regime_fit_sequences,
)
from monolith.data.prepared import (
    DRIFT_REFERENCE,
    FORMAT_VERSION,
    METADATA_FILE,
    ROW_GROUP_ROWS,
    SCALERS_JSON,
    SCALERS_PKL,
    SPLIT_CODES,
    is_prepared_dataset,
    partition_path,
    target_column,
)
from monolith.data.readiness import check_trainable
from monolith.data.sources import SourceFile, resolve_sources
from monolith.data.splits import (
    SPLIT_NAMES,
    SPLITS,
    fit_scalers,
    scalers_to_json,
    sklearn_scalers,
    split_codes,
    symbol_blocks,
)
from monolith.data.windows import valid_window_ends
from monolith.errors import DataError, MonolithError
from monolith.storage import StorageSettings
from monolith.uri import Location, parse_uri

log = logging.getLogger(__name__)

TRAIN = SPLIT_NAMES.index("train")
EMBEDDING_COLUMN = "llm_embedding"
_MCP = re.compile(r"^mcp_feature_\d+$")
_COT = re.compile(r"^cot_feature_\d+$")


# --------------------------------------------------------------------------------------------
# Per group of symbols


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
        from monolith.data.ingest import file_symbols

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
        from monolith.data.ingest import read_market_data

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
        self.timings["peak_rss_mb"] = _peak_rss_mb()
        self.timings["cpu_seconds"] = _cpu_seconds()
        self.frame = None  # the rows are written: free them before the central commit
        return {**self.derived, "timings": self.timings}

    def _loaded(self) -> pd.DataFrame:
        if self.frame is None:
            raise DataError("SymbolGroup: call load() first (or the group has finished)")
        return self.frame


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far (recorded with the timings)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _cpu_seconds() -> float:
    """CPU seconds (user + system) this process has used so far, all its threads."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 2)


def _synthetic(cfg: DataConfig) -> tuple[pd.DataFrame, dict]:
    """The generated market (its symbols share one market factor: one group generates all)."""
    from monolith.data.synthetic import generate_synthetic

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
        # Probe name -> its column (hmm_regime, then target_<probe>: see features.py).
        "targets": {name: target_column(name) for name in cfg.probe_targets},
        "not_model_inputs": [
            "hmm_regime",
            "level_sl",
            "level_tp",
            *(target_column(name) for name in cfg.target_horizons),
        ],
    }


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
    """Each symbol's rows in symbol order, as zero-copy row slices when the frame is grouped."""
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


def write_partitions(
    frame: pd.DataFrame,
    target: Location,
    settings: StorageSettings | None = None,
    blocks: list[tuple[str, int, int]] | None = None,
) -> None:
    """One Parquet file per symbol under ``target`` (a local folder or an s3:// prefix)."""
    from monolith.filesystems import arrow_filesystem

    fs, root = arrow_filesystem(target, settings)
    # The system allocator hands the encoder's buffers back to the OS after each file;
    # Arrow's default pool would keep them for the rest of the process.
    pool = pa.system_memory_pool()
    parts = (
        ((symbol, frame.iloc[a:b]) for symbol, a, b in blocks)
        if blocks is not None
        else _symbol_parts(frame)
    )
    for symbol, part in parts:
        path = f"{root}/{partition_path(str(symbol))}"
        if not target.is_s3:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(part, preserve_index=False)
        try:
            pq.write_table(
                table,
                path,
                filesystem=fs,
                use_dictionary=_dictionary_columns(table.schema),
                row_group_size=ROW_GROUP_ROWS,
                memory_pool=pool,
            )
        except OSError as exc:
            from monolith.errors import StorageError

            raise StorageError(
                f"cannot write {target.join(partition_path(str(symbol)))}: {exc}"
            ) from None
        del table, part


# --------------------------------------------------------------------------------------------
# Running the groups


class GroupRunner(Protocol):
    """Runs ``SymbolGroup`` work for a list of plans (in this process, or over a cluster)."""

    slots: int  # how many groups it can run at once

    def open(self, cfg: DataConfig, settings: StorageSettings | None) -> None:
        """Get ready (a cluster starts its group processes, which warm up meanwhile)."""

    def file_symbols(self, files: list[SourceFile]) -> list[dict[str, int]]:
        """Per file, the symbols it holds and their row counts."""

    def start(self, plans: list[GroupPlan]) -> None:
        """One group per plan (at most ``slots``)."""

    def call(self, method: str, *args: Any) -> list[Any]:
        """The same ``SymbolGroup`` method on every group; results in plan order."""

    def submit(self, method: str, *args: Any) -> None:
        """Start the same method on every group without waiting; a later ``call`` runs after
        it (and raises its errors)."""

    def close(self) -> None: ...


class InProcessRunner:
    """Every group in this process, one after the other (the single-process path)."""

    slots = 1

    def __init__(self) -> None:
        self.cfg: DataConfig | None = None
        self.settings: StorageSettings | None = None
        self.groups: list[SymbolGroup] = []

    def open(self, cfg: DataConfig, settings: StorageSettings | None) -> None:
        self.cfg, self.settings = cfg, settings

    def file_symbols(self, files: list[SourceFile]) -> list[dict[str, int]]:
        return SymbolGroup(self.cfg, None, self.settings).scan(files)

    def start(self, plans: list[GroupPlan]) -> None:
        self.groups = [SymbolGroup(self.cfg, plan, self.settings) for plan in plans]

    def call(self, method: str, *args: Any) -> list[Any]:
        return [getattr(group, method)(*args) for group in self.groups]

    def submit(self, method: str, *args: Any) -> None:
        self.call(method, *args)

    def close(self) -> None:
        self.groups = []


def plan_groups(
    files: list[SourceFile], per_file: list[dict[str, int]], n_groups: int
) -> list[GroupPlan]:
    """Symbols spread over at most ``n_groups`` groups of near-equal rows (largest first to
    the lightest group); each group reads the files that hold any of its symbols."""
    rows: dict[str, int] = {}
    for counts in per_file:
        for symbol, n in counts.items():
            rows[symbol] = rows.get(symbol, 0) + int(n)
    n_groups = max(1, min(n_groups, len(rows)))
    loads = [0] * n_groups
    members: list[list[str]] = [[] for _ in range(n_groups)]
    for symbol in sorted(rows, key=lambda s: (-rows[s], s)):
        lightest = min(range(n_groups), key=lambda g: (loads[g], g))
        members[lightest].append(symbol)
        loads[lightest] += rows[symbol]
    plans = []
    for group in members:
        wanted = set(group)
        group_files = tuple(f for f, c in zip(files, per_file, strict=True) if wanted & set(c))
        plans.append(GroupPlan(files=group_files, symbols=tuple(sorted(group))))
    return plans


# --------------------------------------------------------------------------------------------
# The central steps


@dataclass
class _Output:
    """Where a preparation writes: the final location, and where the groups write now."""

    location: Location
    settings: StorageSettings | None
    overwrite: bool
    staging: Path | None = None  # local outputs are built here and renamed into place
    written: bool = field(default=False)

    @property
    def target(self) -> str:
        return str(self.staging) if self.staging is not None else str(self.location)

    def check(self) -> None:
        """Refuse before any work: an existing output without overwrite, or one that is not
        a prepared dataset (never replaced); an unreachable or denied S3 prefix."""
        exists = self._exists()
        if exists and not self.overwrite:
            raise DataError(
                f"output {self.location} already exists; pass --overwrite to replace it"
            )
        if exists and not is_prepared_dataset(self.location, self.settings):
            raise DataError(
                f"output {self.location} exists and is not a prepared dataset; refusing to "
                "replace it"
            )

    def _exists(self) -> bool:
        if not self.location.is_s3:
            return self.location.path.exists()
        from monolith import storage

        storage.check_access(str(self.location), self.settings)
        return bool(storage.list_objects(str(self.location), self.settings))

    def begin(self) -> None:
        if self.location.is_s3:
            if self.overwrite and self._exists():
                from monolith import storage

                storage.delete_prefix(str(self.location), self.settings)
            return
        parent = self.location.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.location.path.name}.tmp-", dir=parent))
        self.staging.chmod(0o755)  # mkdtemp makes it private; datasets are meant to be shared

    def write(self, name: str, body: bytes) -> None:
        from monolith import storage

        if self.staging is not None:
            (self.staging / name).write_bytes(body)
        else:
            storage.write_bytes(str(self.location.join(name)), body, self.settings)

    def commit(self) -> None:
        if self.staging is not None:
            final = self.location.path
            if final.exists():
                trash = final.with_name(f".{final.name}.old-{time.time_ns()}")
                final.rename(trash)
                self.staging.rename(final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                self.staging.rename(final)
            self.staging = None
        self.written = True

    def abort(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        elif self.location.is_s3 and not self.written:
            from monolith import storage

            try:
                storage.delete_prefix(str(self.location), self.settings)
            except MonolithError as exc:
                log.warning("could not remove the partial output %s: %s", self.location, exc)


def prepare_dataset(
    cfg: DataConfig,
    output: str | Path,
    *,
    overwrite: bool = False,
    settings: StorageSettings | None = None,
    runner: GroupRunner | None = None,
    global_batch: int | None = None,
) -> dict:
    """Prepare ``cfg.source`` into ``output`` (a folder or s3:// prefix); returns the metadata.

    ``runner`` runs the per-symbol work (default: this process, one group); the central
    steps run here on summaries. A split with fewer windows than ``global_batch`` (or none)
    is a DataError, and nothing is left at ``output``.
    """
    started = time.perf_counter()
    out = _Output(parse_uri(output, "output"), settings, overwrite)
    out.check()
    runner = runner or InProcessRunner()
    timings: dict[str, Any] = {}
    try:
        runner.open(cfg, settings)  # group processes start while the sources are listed
        files: list[SourceFile] = []
        if cfg.source != "synthetic":
            files = resolve_sources(cfg.source, settings)
        if cfg.source == "synthetic" or runner.slots <= 1:
            plans = [GroupPlan(files=tuple(files))]
        else:
            plans = plan_groups(files, _scan(files, runner, settings), runner.slots)
        timings.update(groups=len(plans), planned=round(time.perf_counter() - started, 3))
        rss = {"planned": _peak_rss_mb()}
        out.begin()
    except BaseException:
        runner.close()
        raise
    if runner.slots > 1:
        # This process only waits while the groups load: import what the central HMM fit and
        # scalers.pkl need (hmmlearn, scikit-learn: ~2 s) now rather than on the critical path.
        threading.Thread(target=_import_central_libraries, daemon=True).start()
    try:
        t = time.perf_counter()
        runner.start(plans)  # waits for the group processes to be up
        timings["groups started"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        summaries = runner.call("load")
        timings["load (groups)"] = round(time.perf_counter() - t, 3)
        rss["loaded"] = _peak_rss_mb()
        _check_disjoint(summaries)
        train_rows = {s: n for summary in summaries for s, n in summary["train_rows"].items()}
        quotas = regime_fit_quotas(train_rows, cfg.hmm_fit_max_rows)
        instruments = {s: i for i, s in enumerate(sorted(train_rows))}
        t = time.perf_counter()
        samples = runner.call("regime_sample", quotas)
        # The groups derive targets and scalers while the HMM is fitted here.
        runner.submit("derive", instruments, drift_reference_quotas(train_rows))
        pooled = {s: seqs for sample in samples for s, seqs in sample.items()}
        model = fit_regime_hmm_sequences(
            [seq for s in sorted(pooled) for seq in pooled[s]], cfg.hmm_states, cfg.hmm_seed
        )
        timings["regime HMM fit (central)"] = round(time.perf_counter() - t, 3)
        rss["fitted"] = _peak_rss_mb()
        t = time.perf_counter()
        finished = runner.call("finish", model, out.target)
        timings["finish and write (groups)"] = round(time.perf_counter() - t, 3)
        metadata, scalers = merge_metadata(
            cfg, files, summaries, finished, model, instruments, quotas
        )
        check_trainable(metadata, global_batch)
        timings["elapsed_seconds"] = round(time.perf_counter() - started, 3)
        timings["group_stages"] = [f["timings"] for f in finished]
        timings["driver_peak_rss_mb"] = rss | {"finished": _peak_rss_mb()}
        timings["driver_cpu_seconds"] = _cpu_seconds()
        metadata["timings"] = timings
        out.write(SCALERS_PKL, pickle.dumps(sklearn_scalers(scalers)))
        reference = {s: ref for f in finished for s, ref in f["drift_reference"].items()}
        out.write(DRIFT_REFERENCE, drift_reference_bytes(reference, metadata["scaler"]["features"]))
        columns = metadata["scaler"]["features"]
        out.write(
            SCALERS_JSON,
            json.dumps(scalers_to_json(scalers, columns, cfg.scaler), indent=1).encode(),
        )
        out.write(METADATA_FILE, json.dumps(metadata, indent=2, default=str).encode())
        out.commit()
    except BaseException:
        out.abort()
        raise
    finally:
        runner.close()
    log.info(
        "prepared %s rows of %d symbols into %s in %.1fs (%d group(s); windows: %s)",
        f"{metadata['rows']['prepared']:,}",
        len(metadata["instruments"]),
        output,
        timings["elapsed_seconds"],
        len(plans),
        metadata["windows"],
    )
    return metadata


DRIFT_REFERENCE_ROWS = 20_000


def drift_reference_quotas(train_rows: dict[str, int]) -> dict[str, int]:
    """Train rows per symbol in the drift reference: ``DRIFT_REFERENCE_ROWS`` shared in
    proportion to the symbols' train rows (all of them below it)."""
    return regime_fit_quotas(train_rows, DRIFT_REFERENCE_ROWS)


def drift_reference_bytes(reference: dict[str, np.ndarray], features: list[str]) -> bytes:
    """The drift reference file: scaled train rows (symbols in order) and their columns."""
    import io

    values = (
        np.concatenate([reference[s] for s in sorted(reference)])
        if reference
        else np.empty((0, len(features)), dtype=np.float32)
    )
    buffer = io.BytesIO()
    np.savez(buffer, values=values, features=np.asarray(features, dtype=str))
    return buffer.getvalue()


def _import_central_libraries() -> None:
    import hmmlearn.hmm  # noqa: F401
    import sklearn.preprocessing  # noqa: F401


def _scan(
    files: list[SourceFile], runner: GroupRunner, settings: StorageSettings | None
) -> list[dict[str, int]]:
    """Per file, its symbols and rows: from metadata here (Parquet footers, a CSV's first
    bytes; no rows), and by the groups where a symbol column must be read."""
    from concurrent.futures import ThreadPoolExecutor

    from monolith.data.ingest import quick_file_symbols

    with ThreadPoolExecutor(8) as pool:
        quick = list(pool.map(lambda f: quick_file_symbols(f, settings), files))
    todo = [f for f, q in zip(files, quick, strict=True) if q is None]
    scanned = iter(runner.file_symbols(todo) if todo else [])
    return [q if q is not None else next(scanned) for q in quick]


def _check_disjoint(summaries: list[dict]) -> None:
    seen: dict[str, int] = {}
    for index, summary in enumerate(summaries):
        for symbol in summary["symbols"]:
            if symbol in seen:
                raise DataError(
                    f"symbol {symbol!r} was prepared by two groups ({seen[symbol]}, {index})"
                )
            seen[symbol] = index
    if not seen:
        raise DataError("the source holds no symbol with rows to prepare")


def merge_metadata(
    cfg: DataConfig,
    files: list[SourceFile],
    summaries: list[dict],
    finished: list[dict],
    model: RegimeModel,
    instruments: dict[str, int],
    quotas: dict[str, int],
) -> tuple[dict, dict]:
    """The dataset's metadata and scalers from the groups' summaries, in symbol and file order
    whatever the grouping (so one process and a cluster write the same metadata)."""
    symbols = sorted(instruments)
    features = summaries[0]["features"]
    for summary in summaries[1:]:
        if summary["features"] != features:
            raise DataError(
                f"symbols {summary['symbols'][:3]} have feature columns {summary['features']} "
                f"but {summaries[0]['symbols'][:3]} have {features}: files prepared together "
                "must share one schema"
            )
    cleaning = _merge_cleaning(files, [s["cleaning"] for s in summaries], symbols)
    feature_report = _merge_feature_reports([s["feature_engineering"] for s in summaries])
    boundaries = {s: b for summary in summaries for s, b in summary["splits"].items()}
    scalers = {s: obj for f in finished for s, obj in f["scalers"].items()}
    segments = {s: n for f in finished for s, n in f["segments"].items()}
    longest = {s: n for f in finished for s, n in f["longest_run"].items()}
    calendars = {s: c for summary in summaries for s, c in summary["calendars"].items()}
    per_symbol = {s: w for f in finished for s, w in f["windows_per_symbol"].items()}
    rows: dict[str, int] = {}
    windows: dict[str, int] = {}
    for f in finished:
        for key, n in f["rows"].items():
            rows[key] = rows.get(key, 0) + n
        for key, n in f["windows"].items():
            windows[key] = windows.get(key, 0) + n
    spec = InputSpec(
        sequence_length=cfg.sequence_length,
        n_technical=len(TECHNICAL_COLUMNS),
        n_instruments=len(symbols),
        embedding_dim=features["embedding_dim"],
        mcp_dim=len(features["mcp"]),
        cot_dim=len(features["cot"]),
    )
    sampled = sum(quotas.values()) < sum(b["train"]["rows"] for b in boundaries.values())
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
        "target_horizons": cfg.target_horizons,
        "purge_bars": cfg.purge_bars,
        "gap_tolerance_bars": cfg.gap_tolerance_bars,
        "splits": {s: boundaries[s] for s in symbols},
        "segments": {s: segments[s] for s in symbols},
        "longest_run": {s: longest[s] for s in symbols},
        # Per symbol: the calendar its bars were put in trading order by, how it was chosen,
        # the match, the gaps (bars missing while open) and closures spanned.
        "calendars": {s: calendars[s] for s in symbols},
        "adjust": cfg.adjust,
        "windows_per_symbol": {s: per_symbol[s] for s in symbols},
        "scaler": {
            "kind": cfg.scaler,
            "per": "symbol",
            "fitted_on": "train",
            "features": list(TECHNICAL_COLUMNS),
        },
        "hmm": model.to_dict()
        | {
            "fitted_on": (
                "a deterministic sample of train rows (evenly spaced 1,000-bar chunks, each "
                f"symbol's share of data.hmm_fit_max_rows = {cfg.hmm_fit_max_rows})"
                if sampled
                else "train rows only"
            ),
            "fit_rows_per_symbol": {s: quotas[s] for s in symbols},
            "decoding": "causal forward filtering",
        },
        "rows": rows,
        "config": {k: v for k, v in vars(cfg).items() if k != "synthetic"}
        | {"synthetic": vars(cfg.synthetic)},
        "windows": windows,
    }
    return metadata, {s: scalers[s] for s in symbols}


def _merge_cleaning(files: list[SourceFile], reports: list[dict], symbols: list[str]) -> dict:
    """One cleaning report: file entries and file actions in file order (each file once, as
    several groups may read one file), then every symbol's actions in symbol order."""
    entries: dict[str, dict] = {}
    file_actions: dict[str, list[str]] = {}
    symbol_actions: dict[str, list[str]] = {}
    dataset_actions: list[str] = []
    per_symbol: dict[str, dict] = {}
    for report in reports:
        for entry in report.get("files", []):
            entries.setdefault(entry["path"], entry)
        for path, actions in report.get("file_actions", {}).items():
            file_actions.setdefault(path, actions)
        symbol_actions.update(report.get("symbol_actions", {}))
        dataset_actions.extend(
            a for a in report.get("dataset_actions", []) if a not in dataset_actions
        )
        per_symbol.update(report.get("symbols", {}))
    order = [f.uri for f in files]
    actions = dataset_actions + [a for u in order for a in file_actions.get(u, [])]
    actions += [a for s in symbols for a in symbol_actions.get(s, [])]
    return {
        "files": [entries[u] for u in order if u in entries],
        "symbols": {s: per_symbol[s] for s in symbols if s in per_symbol},
        "actions": actions,
    }


def _merge_feature_reports(reports: list[dict]) -> dict:
    merged = dict(reports[0])
    for key in ("warmup_rows_dropped", "nonfinite_rows_dropped"):
        combined: dict = {}
        for report in reports:
            combined.update(report.get(key, {}))
        merged[key] = dict(sorted(combined.items()))
    fallbacks: dict[str, int] = {}
    for report in reports:
        for column, n in report.get("safe_division_fallbacks", {}).items():
            fallbacks[column] = fallbacks.get(column, 0) + int(n)
    merged["safe_division_fallbacks"] = dict(sorted(fallbacks.items()))
    merged["warmup_bars"] = max((r.get("warmup_bars", 0) for r in reports), default=0)
    kinds = {r.get("indicators") for r in reports}
    if len(kinds) > 1:
        raise DataError(
            "some files hold ready-made technical columns and others do not: prepare them "
            "separately"
        )
    return merged
