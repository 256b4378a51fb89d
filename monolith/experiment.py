"""An experiment's storage layout and its dataset, prepared once and read by every trial.

    <storage>/<name>/
        prepared/          the prepared dataset (``monolith data prepare`` layout)
        prepared.json      the data config and source fingerprint it was prepared from
        tune/              Ray Tune's experiment folder (trials, checkpoints, searcher state)
        results/           best_config.json, trials.csv, pareto.csv, history.csv, lineage.json,
                           optuna.db, summary.json/.txt, report.html
        logs/              each Train run's worker logs: <run name>/worker-<rank>.log

``<storage>`` is a local folder or an ``s3://bucket/prefix`` URI. Trials never prepare data:
each Train worker reads its own shard of ``prepared/`` straight from the storage.

``prepared_for`` is the same for one run outside an experiment (``monolith train``): the
dataset a config trains on, prepared once into a cache keyed by its data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from monolith.config import MonolithConfig
from monolith.errors import ConfigError
from monolith.storage import StorageSettings
from monolith.uri import is_s3_uri, join, normalise, parse_uri

log = logging.getLogger(__name__)

PREPARED = "prepared"
PREPARED_KEY_FILE = "prepared.json"
TUNE_DIR = "tune"
RESULTS_DIR = "results"
LOGS_DIR = "logs"  # the workers' logs, one folder per Train run

__all__ = ["LOGS_DIR", "PREPARED", "PREPARED_KEY_FILE", "RESULTS_DIR", "TUNE_DIR", "join"]


def _settings(settings: StorageSettings | dict | None) -> StorageSettings:
    if isinstance(settings, StorageSettings):
        return settings
    return StorageSettings.from_mapping(settings or {})


def data_fingerprint(
    cfg: MonolithConfig, settings: StorageSettings | dict | None = None
) -> dict[str, Any]:
    """What the prepared dataset depends on: the data config and the source files, each by
    location, size and version (S3 ETag or local mtime), listed without reading them."""
    from monolith.data.prepared import FORMAT_VERSION, is_prepared_dataset
    from monolith.data.sources import resolve_sources, source_fingerprint

    store = _settings(settings)
    # The prepared layout's version too: a new format re-prepares even for the same config.
    out: dict[str, Any] = {"data": dataclasses.asdict(cfg.data), "format_version": FORMAT_VERSION}
    source = cfg.data.source
    if source != "synthetic":
        if is_prepared_dataset(source, store):
            out["files"] = _listing(source, store)
        else:
            out["files"] = source_fingerprint(resolve_sources(source, store))
    out["key"] = hashlib.sha256(json.dumps(out, sort_keys=True, default=str).encode()).hexdigest()
    return out


def _listing(uri: str, store: StorageSettings) -> list[list]:
    """Every file of a prepared dataset by location, size and version (its readers' cache
    aside: they add it, and it derives from the rest)."""
    from monolith.data.prepared import CACHE_DIR

    location = parse_uri(uri)
    cache = str(location.join(CACHE_DIR)) + "/"
    if location.is_s3:
        from monolith import storage

        listed = [[o.uri, o.size, o.etag] for o in storage.list_objects(str(location), store)]
    else:
        listed = [
            [str(p), p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(location.path.rglob("*"))
            if p.is_file()
        ]
    return [entry for entry in listed if not entry[0].startswith(cache)]


def _read_json(uri: str, store: StorageSettings) -> dict | None:
    """The JSON document at ``uri``, or None when there is none (other errors raise)."""
    from monolith import storage

    if is_s3_uri(uri):
        if storage.object_info(uri, store) is None:
            return None
        return storage.read_json(uri, store)
    path = Path(uri)
    return json.loads(path.read_text()) if path.is_file() else None


def prepare_for_experiment(
    cfg: MonolithConfig,
    root: str,
    settings: StorageSettings | dict | None = None,
    runner: Any = None,
) -> str:
    """Prepare ``cfg.data`` once under the experiment ``root``; returns where it lives.

    A dataset already there is reused when it was prepared from the same data config and
    source files; a different one is an error (an experiment compares trials on ONE dataset).
    ``runner`` spreads the per-symbol work (``monolith.data.prepare.GroupRunner``).
    """
    from monolith import storage
    from monolith.data.prepare import prepare_dataset
    from monolith.data.prepared import is_prepared_dataset

    store = _settings(settings)
    fingerprint = data_fingerprint(cfg, store)
    target = join(root, PREPARED)
    key_uri = join(root, PREPARED_KEY_FILE)
    existing = _read_json(key_uri, store)
    if existing is not None:
        if existing.get("key") != fingerprint["key"]:
            raise ConfigError(
                f"experiment {root} holds a dataset prepared from a different data config or "
                f"different source files ({key_uri}); start a new experiment (--name) instead"
            )
        log.info("reusing the experiment's prepared dataset %s", existing.get("prepared", target))
        return existing.get("prepared") or target
    if is_prepared_dataset(cfg.data.source, store):
        target = normalise(cfg.data.source)
    else:
        # No key file: whatever is at the target is an earlier attempt that did not finish.
        if is_s3_uri(target):
            storage.delete_prefix(target, store)
        elif Path(target).exists():
            shutil.rmtree(target)
        prepare_dataset(
            cfg.data, target, settings=store, runner=runner, global_batch=cfg.train.batch_size
        )
    # Written last: its presence means the dataset above is complete.
    storage.write_json(key_uri, {**fingerprint, "prepared": target}, store)
    return target


def prepared_for(
    cfg: MonolithConfig, cache_root: Path, settings: StorageSettings | None = None
) -> str:
    """The prepared dataset for ``cfg.data``: the source itself, or a cached preparation.

    The cache key covers the data config and the source files' locations, sizes and versions
    (mtime, or ETag on S3), so a changed file or setting prepares afresh and an unchanged one
    is prepared once.
    """
    from monolith.data.prepare import prepare_dataset
    from monolith.data.prepared import is_prepared_dataset

    if is_prepared_dataset(cfg.data.source, settings):
        return cfg.data.source
    key = data_fingerprint(cfg, settings)["key"]
    target = cache_root / key[:16]
    if is_prepared_dataset(target):
        log.info("using cached prepared dataset %s", target)
    else:
        prepare_dataset(cfg.data, target, settings=settings, global_batch=cfg.train.batch_size)
    return str(target)
