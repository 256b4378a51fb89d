"""The dataset's metadata, merged from the groups' summaries in symbol and file order
whatever the grouping, so that one process and a cluster write the same metadata."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from monolith.config import DataConfig, InputSpec
from monolith.data.features import TECHNICAL_COLUMNS, RegimeModel
from monolith.data.prepared import FORMAT_VERSION
from monolith.data.sources import SourceFile
from monolith.errors import DataError


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
    features = _common_features(summaries)
    cleaning = _merge_cleaning(files, [s["cleaning"] for s in summaries], symbols)
    feature_report = _merge_feature_reports([s["feature_engineering"] for s in summaries])
    boundaries = _per_symbol(summaries, "splits")
    scalers = _per_symbol(finished, "scalers")
    segments = _per_symbol(finished, "segments")
    longest = _per_symbol(finished, "longest_run")
    calendars = _per_symbol(summaries, "calendars")
    per_symbol = _per_symbol(finished, "windows_per_symbol")
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
        "hmm": _hmm_entry(cfg, model, {s: quotas[s] for s in symbols}, sampled),
        "rows": _summed(finished, "rows"),
        "config": {k: v for k, v in vars(cfg).items() if k != "synthetic"}
        | {"synthetic": vars(cfg.synthetic)},
        "windows": _summed(finished, "windows"),
    }
    return metadata, {s: scalers[s] for s in symbols}


def _common_features(summaries: list[dict]) -> dict:
    """The groups' feature columns, which must agree."""
    features = summaries[0]["features"]
    for summary in summaries[1:]:
        if summary["features"] != features:
            raise DataError(
                f"symbols {summary['symbols'][:3]} have feature columns {summary['features']} "
                f"but {summaries[0]['symbols'][:3]} have {features}: files prepared together "
                "must share one schema"
            )
    return features


def _per_symbol(parts: list[dict], key: str) -> dict[str, Any]:
    """Every group's ``key`` (a mapping of symbol to value), merged."""
    return {s: value for part in parts for s, value in part[key].items()}


def _summed(finished: list[dict], key: str) -> dict[str, int]:
    """Every group's ``key`` counts, added up (names in the order first met)."""
    total: dict[str, int] = {}
    for f in finished:
        for name, n in f[key].items():
            total[name] = total.get(name, 0) + n
    return total


def _hmm_entry(
    cfg: DataConfig, model: RegimeModel, fit_rows: dict[str, int], sampled: bool
) -> dict[str, Any]:
    """The regime HMM: its parameters, the rows it was fitted on, and how it decodes."""
    return model.to_dict() | {
        "fitted_on": (
            "a deterministic sample of train rows (evenly spaced 1,000-bar chunks, each "
            f"symbol's share of data.hmm_fit_max_rows = {cfg.hmm_fit_max_rows})"
            if sampled
            else "train rows only"
        ),
        "fit_rows_per_symbol": fit_rows,
        "decoding": "causal forward filtering",
    }


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
