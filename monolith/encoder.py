"""Using a trained encoder: embeddings of new bars, and how far new data drifts from training.

    enc = Encoder.load("runs/bundles/exp/latest")        # or a folder, s3://…/<run_id>, …/latest
    latents = enc.embed("s3://desk-data/bars/")           # any layout `monolith data prepare` reads
    latents = enc.embed(frame)                            # a DataFrame of bars (timestamp, symbol,
                                                          # open high low close volume)
    drift = enc.drift()                                   # the last data embedded vs training

``embed`` runs the bundle's own recorded pipeline, nothing re-implemented: the same ingest and
cleaning (``data.bad_tick_range_multiple``), the same causal TA-Lib features with their warm-up
dropped, the bundle's train-fitted per-symbol scalers (``scalers.json``), its instrument map,
its gap tolerance and window length, and its regime HMM (decoded causally, reported as
``hmm_regime``). The result has one row per window end: ``timestamp`` (the window's last bar),
``symbol``, ``latent_000`` … and ``hmm_regime``. Rows that cannot end a full window (the first
L - 1 bars of a series or after a gap) are counted per symbol in ``last_report``, never
silently dropped.

A symbol the bundle was not trained on has no instrument embedding and no scaler: by default
that is an error naming it; ``unknown="skip"`` leaves such symbols out and reports them.

The drift check compares the new rows' scaled features with the bundle's drift reference (a
fixed, evenly spaced sample of scaled train rows, ``drift_reference.npz``): per feature the
population stability index over the reference's deciles, the Kolmogorov-Smirnov statistic, and
the share of values outside the reference's range. ``drift_score`` is the largest PSI (> 0.25
is the usual "significant shift").
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monolith.errors import BundleError, DataError
from monolith.storage import StorageSettings

log = logging.getLogger(__name__)

UNKNOWN_POLICIES = ("error", "skip")
PSI_BINS = 10
# The drift check compares at most this many new rows per symbol (evenly spaced): however
# the symbols are spread over processes, the same rows.
DRIFT_ROWS_PER_SYMBOL = 5000
_EPS = 1e-6


@dataclass
class EmbedReport:
    """What ``embed`` read and made of it, per symbol."""

    symbols: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped_symbols: list[str] = field(default_factory=list)
    cleaning: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbols": self.symbols,
            "skipped_symbols": self.skipped_symbols,
            "windows": sum(s["windows"] for s in self.symbols.values()),
            "rows_without_window": sum(s["rows_without_window"] for s in self.symbols.values()),
            "bars_outside_calendar": {
                name: s["bars_outside_calendar"]
                for name, s in self.symbols.items()
                if s.get("bars_outside_calendar")
            },
            "cleaning": self.cleaning,
        }


class Encoder:
    """A verified bundle's encoder and the pipeline that feeds it."""

    def __init__(self, folder: Path, label: str, keep: Any = None) -> None:
        from monolith.bundle import MODEL_CONFIG_FILE, load_bundle_model, verify_bundle
        from monolith.data.prepared import DRIFT_REFERENCE, METADATA_FILE, SCALERS_JSON

        self.folder, self.label = folder, label
        self._keep = keep  # the temporary folder of a pulled bundle lives as long as we do
        self.manifest = verify_bundle(folder)
        self.metadata = json.loads((folder / METADATA_FILE).read_text())
        self.scalers = json.loads((folder / SCALERS_JSON).read_text())
        self.model_config = json.loads((folder / MODEL_CONFIG_FILE).read_text())
        self.model = load_bundle_model(folder, verify=False)  # safe_mode=True
        reference = folder / DRIFT_REFERENCE
        self.reference: np.ndarray | None = None
        if reference.is_file():
            with np.load(reference, allow_pickle=False) as data:
                self.reference = data["values"].astype(np.float64)
        spec = self.model_config["input_spec"]
        self.sequence_length = int(spec["sequence_length"])
        self.instruments: dict[str, int] = dict(self.metadata["instruments"])
        self.latent_dim = int(self.model.get_layer("latent").output.shape[-1])
        self.last_report = EmbedReport()
        # Per symbol: its new rows' scaled features (a sample of DRIFT_ROWS_PER_SYMBOL).
        self.last_scaled: dict[str, np.ndarray] = {}

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, where: str | Path, settings: StorageSettings | None = None) -> Encoder:
        """A bundle folder, a published ``s3://…/<experiment>/<run_id>``, or a ``…/latest``
        pointer (local or S3): verified file by file, the model loaded with safe_mode=True."""
        from monolith.bundle import LATEST_FILE, MANIFEST_FILE, pull_bundle
        from monolith.uri import is_s3_uri

        text = str(where)
        path = Path(text)
        if not is_s3_uri(text) and path.is_dir() and (path / MANIFEST_FILE).is_file():
            return cls(path, text)
        if not is_s3_uri(text) and path.name not in ("latest", LATEST_FILE):
            raise BundleError(f"{text}: no bundle there (expected a folder with manifest.json)")
        keep = tempfile.TemporaryDirectory(prefix="monolith-encoder-")
        local = pull_bundle(text, Path(keep.name) / "bundle", settings)
        return cls(local, text, keep)

    @property
    def window_columns(self) -> list[str]:
        return [f"latent_{i:03d}" for i in range(self.latent_dim)]

    # -- embedding ------------------------------------------------------------------------------
    def embed(
        self,
        source: str | Path | pd.DataFrame,
        *,
        settings: StorageSettings | None = None,
        unknown: str = "error",
        batch_size: int = 1024,
        symbols: frozenset[str] | None = None,
    ) -> pd.DataFrame:
        """One row per window end of ``source`` (a DataFrame of bars, a file/folder/glob/s3://
        source in any layout ``monolith data prepare`` reads, or a prepared dataset).

        ``symbols`` keeps only these (how a cluster gives each worker its own).
        """
        if unknown not in UNKNOWN_POLICIES:
            raise DataError(f"unknown = {unknown!r}: one of {list(UNKNOWN_POLICIES)}")
        if batch_size < 1:
            raise DataError(f"batch size {batch_size}: expected at least 1")
        frame, cleaning = self._featured(source, settings, symbols)
        return self._embed_featured(frame, cleaning, unknown, batch_size)

    def _featured(
        self,
        source: str | Path | pd.DataFrame,
        settings: StorageSettings | None,
        symbols: frozenset[str] | None = None,
    ) -> tuple[pd.DataFrame, dict]:
        """Rows with the technical columns (computed here unless the source has them)."""
        from monolith.data.features import add_technical_indicators
        from monolith.data.prepared import is_prepared_dataset

        if not isinstance(source, pd.DataFrame) and is_prepared_dataset(source, settings):
            return _prepared_rows(source, settings, symbols), {"source": "prepared dataset"}
        raw, cleaning = self._read(source, settings, symbols)
        if "hmm_regime" in raw.columns:
            raw = raw.drop(columns=["hmm_regime"])  # recomputed with the bundle's HMM
        frame, features = add_technical_indicators(raw)
        cleaning["warmup_rows_dropped"] = features["warmup_rows_dropped"]
        return frame, cleaning

    def _read(
        self,
        source: str | Path | pd.DataFrame,
        settings: StorageSettings | None,
        symbols: frozenset[str] | None = None,
    ) -> tuple[pd.DataFrame, dict]:
        from monolith.data.ingest import read_market_data

        data = self.metadata["config"]
        options = {
            "min_rows": 1,
            "bad_tick_range_multiple": float(data.get("bad_tick_range_multiple", 50.0)),
            "settings": settings,
            "symbols": symbols,
            # A bundle from before adjustment existed was trained on raw prices.
            "adjust": data.get("adjust", "none"),
            "wall_clock_gaps": False,  # counted in trading time by the bundle's calendars
        }
        if isinstance(source, list | tuple):  # files named one by one (a cluster's share)
            from monolith.data.sources import resolve_sources

            files = [f for uri in source for f in resolve_sources(uri, settings)]
            return read_market_data(files=files, **options)
        if not isinstance(source, pd.DataFrame):
            return read_market_data(source, **options)
        # A frame goes through the same reader as a file would (layout, cleaning, report).
        with tempfile.TemporaryDirectory(prefix="monolith-embed-") as tmp:
            path = Path(tmp) / "frame.parquet"
            source.to_parquet(path, index=False)
            return read_market_data(path, **options)

    def _embed_featured(
        self, frame: pd.DataFrame, cleaning: dict, unknown: str, batch_size: int
    ) -> pd.DataFrame:
        from monolith.data.calendars import ALWAYS_OPEN, trading_segments
        from monolith.data.features import RegimeModel, predict_regimes
        from monolith.data.splits import symbol_blocks

        report = EmbedReport(cleaning=cleaning)
        frame = self._known_symbols(frame, unknown, report)
        blocks = symbol_blocks(frame)
        tolerance = int(self.metadata.get("gap_tolerance_bars", 0))
        # Each symbol's calendar as recorded at training (a bundle from before calendars:
        # every market 24/7, as it was trained), with its bar length and learned breaks.
        recorded = self.metadata.get("calendars", {})
        segment, calendars = trading_segments(
            frame,
            tolerance,
            blocks,
            lambda s: (recorded.get(s, {}).get("calendar", ALWAYS_OPEN), "bundle"),
            recorded,
        )
        if "hmm_regime" not in frame.columns:
            frame["hmm_regime"] = predict_regimes(
                RegimeModel.from_dict(self.metadata["hmm"]), frame
            ).astype(np.int32)
        columns = self.metadata["features"]["technical"]
        L = self.sequence_length
        parts, scaled_rows = [], {}
        for symbol, start, stop in blocks:
            rows = frame.iloc[start:stop]
            scaled = self._scaled(symbol, rows[columns].to_numpy(dtype=np.float64))
            pick = np.unique(
                np.linspace(0, len(scaled) - 1, min(len(scaled), DRIFT_ROWS_PER_SYMBOL))
                .round()
                .astype(int)
            )
            scaled_rows[symbol] = scaled[pick]
            seg = segment[start:stop]
            change = np.r_[True, seg[1:] != seg[:-1]]
            idx = np.arange(stop - start)
            ends = idx[idx - np.maximum.accumulate(np.where(change, idx, 0)) + 1 >= L]
            report.symbols[symbol] = _symbol_report(symbol, seg, len(ends), calendars[symbol])
            if len(ends) == 0:
                continue
            parts.append(self._windows(symbol, rows, scaled, ends, batch_size))
        self.last_report = report
        self.last_scaled = scaled_rows
        if not parts:
            too_short = {s: r["rows"] for s, r in report.symbols.items()}
            raise DataError(
                f"no window of {L} consecutive bars in the input (rows per symbol after "
                f"cleaning and indicator warm-up: {too_short}); the encoder needs at least {L} "
                "gap-free bars of a symbol after its warm-up"
            )
        return pd.concat(parts, ignore_index=True)

    def _known_symbols(
        self, frame: pd.DataFrame, unknown: str, report: EmbedReport
    ) -> pd.DataFrame:
        """The bars of the symbols the encoder was trained on; others refused or skipped."""
        known = [s for s in frame["symbol"].unique() if str(s) in self.instruments]
        strangers = sorted(
            str(s) for s in frame["symbol"].unique() if str(s) not in self.instruments
        )
        if strangers and unknown == "error":
            raise DataError(
                f"symbol(s) {strangers} are not among the {len(self.instruments)} the encoder "
                f"{self.label} was trained on ({sorted(self.instruments)[:8]}"
                f"{' ...' if len(self.instruments) > 8 else ''}): it has no instrument embedding "
                "or scaler for them; leave them out, or pass unknown='skip' (--skip-unknown)"
            )
        if strangers:
            report.skipped_symbols = strangers
            frame = frame[frame["symbol"].isin(known)].reset_index(drop=True)
        if frame.empty:
            raise DataError("no bars of a symbol the encoder knows: nothing to embed")
        return frame

    def _scaled(self, symbol: str, values: np.ndarray) -> np.ndarray:
        params = self.scalers["symbols"][symbol]
        offset = np.asarray(params["offset"], dtype=np.float64)
        scale = np.asarray(params["scale"], dtype=np.float64)
        return ((values - offset) / scale).astype(np.float32)

    def _windows(
        self,
        symbol: str,
        rows: pd.DataFrame,
        scaled: np.ndarray,
        ends: np.ndarray,
        batch_size: int,
    ) -> pd.DataFrame:
        from monolith.evaluate import forward

        L = self.sequence_length
        window = ends[:, None] + np.arange(-L + 1, 1)[None, :]
        features: dict[str, np.ndarray] = {
            "technical_input": scaled[window],
            "instrument_input": np.full(len(ends), self.instruments[symbol], dtype=np.int32),
        }
        feats = self.metadata["features"]
        if feats.get("embedding_dim"):
            values = rows[feats["embedding"]].to_numpy()[ends]
            features["embeddings_input"] = np.asarray(
                [np.asarray(v, dtype=np.float32) for v in values]
            ).reshape(len(ends), -1)
        if feats.get("mcp"):
            features["mcp_input"] = rows[feats["mcp"]].to_numpy(dtype=np.float32)[ends]
        if feats.get("cot"):
            features["cot_input"] = rows[feats["cot"]].to_numpy(dtype=np.float32)[ends]
        latent = _forward_batches(forward, self.model, features, batch_size)
        out = pd.DataFrame(latent, columns=self.window_columns)
        out.insert(0, "symbol", symbol)
        out.insert(0, "timestamp", rows["timestamp"].to_numpy()[ends])
        out["hmm_regime"] = rows["hmm_regime"].to_numpy()[ends].astype(np.int32)
        return out

    # -- drift ----------------------------------------------------------------------------------
    def drift(self, scaled: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """How far new rows' scaled features (per symbol; default: those of the last
        ``embed``, up to DRIFT_ROWS_PER_SYMBOL each) are from the bundle's train rows, per
        feature and overall (``drift_score``: the largest PSI)."""
        if self.reference is None:
            raise BundleError(
                f"bundle {self.label} has no drift reference (drift_reference.npz): it was "
                "trained on a dataset prepared before drift references were recorded"
            )
        per_symbol = self.last_scaled if scaled is None else scaled
        if not per_symbol:
            raise DataError("no rows to compare: embed some data first")
        scaled = np.concatenate([per_symbol[s] for s in sorted(per_symbol)])
        return drift_report(
            self.reference,
            np.asarray(scaled, dtype=np.float64),
            self.metadata["features"]["technical"],
        )


def _forward_batches(forward: Any, model: Any, features: dict, batch_size: int) -> np.ndarray:
    n = len(features["technical_input"])
    parts = []
    for start in range(0, n, batch_size):
        chunk = {k: v[start : start + batch_size] for k, v in features.items()}
        parts.append(forward(model, chunk, ("latent",))["latent"])
    return np.concatenate(parts)


def _prepared_rows(
    source: str | Path, settings: StorageSettings | None, symbols: frozenset[str] | None
) -> pd.DataFrame:
    """A prepared dataset's rows (its features, splits and regimes), sorted by symbol and time;
    with ``symbols``, only their partitions are read."""
    import pyarrow.parquet as pq

    from monolith.data.prepared import partition_path, read_metadata
    from monolith.filesystems import arrow_filesystem
    from monolith.uri import parse_uri

    location = parse_uri(source)
    names = sorted(read_metadata(location, settings)["instruments"])
    fs, root = arrow_filesystem(location, settings)
    frames = [
        pq.read_table(f"{root}/{partition_path(s)}", filesystem=fs).to_pandas()
        for s in names
        if symbols is None or s in symbols
    ]
    if not frames:
        raise DataError(f"{source}: holds none of the symbols {sorted(symbols or [])}")
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)


def drift_report(reference: np.ndarray, new: np.ndarray, features: list[str]) -> dict[str, Any]:
    """Per feature: PSI over the reference's deciles, KS statistic, share outside the
    reference's range; overall: the largest PSI (``drift_score``) and its feature."""
    from scipy.stats import ks_2samp

    per_feature = {}
    for j, name in enumerate(features):
        ref, cur = reference[:, j], new[:, j]
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
        ref_share = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
        cur_share = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1)
        p = np.maximum(ref_share / len(ref), _EPS)
        q = np.maximum(cur_share / len(cur), _EPS)
        per_feature[name] = {
            "psi": float(np.sum((q - p) * np.log(q / p))),
            "ks": float(ks_2samp(ref, cur).statistic),
            "outside_train_range": float(np.mean((cur < ref.min()) | (cur > ref.max()))),
        }
    worst = max(per_feature, key=lambda k: per_feature[k]["psi"])
    return {
        "drift_score": per_feature[worst]["psi"],
        "worst_feature": worst,
        "mean_psi": float(np.mean([v["psi"] for v in per_feature.values()])),
        "max_ks": float(max(v["ks"] for v in per_feature.values())),
        "outside_train_range": float(
            np.mean([v["outside_train_range"] for v in per_feature.values()])
        ),
        "rows": {"reference": int(len(reference)), "new": int(len(new))},
        "method": f"PSI over the reference's {PSI_BINS} quantile bins; Kolmogorov-Smirnov",
        "features": per_feature,
    }


def _symbol_report(symbol: str, segment: np.ndarray, windows: int, calendar: Any) -> dict:
    """One symbol's line of the embed report; bars outside its recorded calendar warned of."""
    if calendar.bars_outside_sessions:
        log.warning(
            "%s: %d new bar(s) fall outside its recorded calendar %s (a session or hours it "
            "did not trade at training): embedded, but check the data or the calendar",
            symbol,
            calendar.bars_outside_sessions,
            calendar.calendar,
        )
    return {
        "rows": len(segment),
        "windows": windows,
        "rows_without_window": len(segment) - windows,
        "segments": int(segment[-1]) + 1 if len(segment) else 0,
        "gaps": calendar.gaps,
        "closures_spanned": calendar.closures,
        "bars_outside_calendar": calendar.bars_outside_sessions,
    }
