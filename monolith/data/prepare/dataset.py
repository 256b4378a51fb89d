"""``prepare_dataset``: the groups run by a runner, and the central steps on their summaries.

Central, on small summaries only: the instrument map (every symbol, sorted), the regime HMM
fitted on the pooled sample (``monolith.data.features.regime_fit_quotas``), the merged
metadata, scalers and drift reference, and the commit. Rows never pass through here.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from monolith.config import DataConfig
from monolith.data.features import RegimeModel, fit_regime_hmm_sequences, regime_fit_quotas
from monolith.data.prepare.group import GroupPlan
from monolith.data.prepare.metadata import merge_metadata
from monolith.data.prepare.output import Output
from monolith.data.prepare.process import cpu_seconds, peak_rss_mb
from monolith.data.prepare.runner import GroupRunner, InProcessRunner, plan_groups, scan_files
from monolith.data.prepared import DRIFT_REFERENCE, METADATA_FILE, SCALERS_JSON, SCALERS_PKL
from monolith.data.readiness import check_trainable
from monolith.data.sources import SourceFile, resolve_sources
from monolith.data.splits import scalers_to_json, sklearn_scalers
from monolith.errors import DataError
from monolith.storage import StorageSettings
from monolith.uri import parse_uri

log = logging.getLogger(__name__)

DRIFT_REFERENCE_ROWS = 20_000


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
    out = Output(parse_uri(output, "output"), settings, overwrite)
    out.check()
    runner = runner or InProcessRunner()
    try:
        runner.open(cfg, settings)  # group processes start while the sources are listed
        files, plans = _plan(cfg, runner, settings)
        timings: dict[str, Any] = {
            "groups": len(plans),
            "planned": round(time.perf_counter() - started, 3),
        }
        rss = {"planned": peak_rss_mb()}
        with out.staged():
            if runner.slots > 1:
                # This process only waits while the groups load: import what the central HMM
                # fit and scalers.pkl need (hmmlearn, scikit-learn: ~2 s) now rather than on
                # the critical path.
                threading.Thread(target=_import_central_libraries, daemon=True).start()
            metadata, scalers, finished = _run_groups(cfg, files, plans, runner, out, timings, rss)
            check_trainable(metadata, global_batch)
            timings["elapsed_seconds"] = round(time.perf_counter() - started, 3)
            timings["group_stages"] = [f["timings"] for f in finished]
            timings["driver_peak_rss_mb"] = rss | {"finished": peak_rss_mb()}
            timings["driver_cpu_seconds"] = cpu_seconds()
            metadata["timings"] = timings
            _write_central(out, cfg, metadata, scalers, finished)
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


def _plan(
    cfg: DataConfig, runner: GroupRunner, settings: StorageSettings | None
) -> tuple[list[SourceFile], list[GroupPlan]]:
    """The source's files, and the groups of symbols to prepare them in."""
    files: list[SourceFile] = []
    if cfg.source != "synthetic":
        files = resolve_sources(cfg.source, settings)
    if cfg.source == "synthetic" or runner.slots <= 1:
        return files, [GroupPlan(files=tuple(files))]
    return files, plan_groups(files, scan_files(files, runner, settings), runner.slots)


def _run_groups(
    cfg: DataConfig,
    files: list[SourceFile],
    plans: list[GroupPlan],
    runner: GroupRunner,
    out: Output,
    timings: dict[str, Any],
    rss: dict[str, float],
) -> tuple[dict, dict, list[dict]]:
    """Load, sample, derive and finish the groups, fitting the regime HMM between; the merged
    metadata, the scalers, and what each group finished with."""
    t = time.perf_counter()
    runner.start(plans)  # waits for the group processes to be up
    timings["groups started"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    summaries = runner.call("load")
    timings["load (groups)"] = round(time.perf_counter() - t, 3)
    rss["loaded"] = peak_rss_mb()
    _check_disjoint(summaries)
    train_rows = {s: n for summary in summaries for s, n in summary["train_rows"].items()}
    quotas = regime_fit_quotas(train_rows, cfg.hmm_fit_max_rows)
    instruments = {s: i for i, s in enumerate(sorted(train_rows))}
    t = time.perf_counter()
    samples = runner.call("regime_sample", quotas)
    # The groups derive targets and scalers while the HMM is fitted here.
    runner.submit("derive", instruments, drift_reference_quotas(train_rows))
    model = _fit_regimes(cfg, samples)
    timings["regime HMM fit (central)"] = round(time.perf_counter() - t, 3)
    rss["fitted"] = peak_rss_mb()
    t = time.perf_counter()
    finished = runner.call("finish", model, out.target)
    timings["finish and write (groups)"] = round(time.perf_counter() - t, 3)
    metadata, scalers = merge_metadata(cfg, files, summaries, finished, model, instruments, quotas)
    return metadata, scalers, finished


def _fit_regimes(cfg: DataConfig, samples: list[dict[str, list[np.ndarray]]]) -> RegimeModel:
    """The regime HMM fitted on the groups' samples, pooled in symbol order."""
    pooled = {s: seqs for sample in samples for s, seqs in sample.items()}
    return fit_regime_hmm_sequences(
        [seq for s in sorted(pooled) for seq in pooled[s]], cfg.hmm_states, cfg.hmm_seed
    )


def _write_central(
    out: Output, cfg: DataConfig, metadata: dict, scalers: dict, finished: list[dict]
) -> None:
    """The scalers, drift reference and, last, the metadata that makes the output complete."""
    out.write(SCALERS_PKL, pickle.dumps(sklearn_scalers(scalers)))
    reference = {s: ref for f in finished for s, ref in f["drift_reference"].items()}
    out.write(DRIFT_REFERENCE, drift_reference_bytes(reference, metadata["scaler"]["features"]))
    columns = metadata["scaler"]["features"]
    out.write(
        SCALERS_JSON,
        json.dumps(scalers_to_json(scalers, columns, cfg.scaler), indent=1).encode(),
    )
    out.write(METADATA_FILE, json.dumps(metadata, indent=2, default=str).encode())


def drift_reference_quotas(train_rows: dict[str, int]) -> dict[str, int]:
    """Train rows per symbol in the drift reference: ``DRIFT_REFERENCE_ROWS`` shared in
    proportion to the symbols' train rows (all of them below it)."""
    return regime_fit_quotas(train_rows, DRIFT_REFERENCE_ROWS)


def drift_reference_bytes(reference: dict[str, np.ndarray], features: list[str]) -> bytes:
    """The drift reference file: scaled train rows (symbols in order) and their columns."""
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
