"""An experiment's storage layout and its dataset, prepared once and read by every trial.

    <storage>/<name>/
        prepared/          the prepared dataset (``monolith data prepare`` layout)
        prepared.json      the data config and source fingerprint it was prepared from
        tune/              Ray Tune's experiment folder (trials, checkpoints, searcher state)
        results/           best_config.json, trials.csv, optuna.db, summary.txt

``<storage>`` is a local folder or an ``s3://bucket/prefix`` URI. Trials never prepare data:
they read ``prepared/`` directly (local storage) or from a node-local copy downloaded once
per node (S3 storage).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from monolith.config import MonolithConfig
from monolith.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PREPARED = "prepared"
PREPARED_KEY_FILE = "prepared.json"
TUNE_DIR = "tune"
RESULTS_DIR = "results"


def is_remote(uri: str | Path) -> bool:
    return str(uri).startswith("s3://")


def join(root: str | Path, *parts: str) -> str:
    """Join path parts onto a local folder or an ``s3://`` URI."""
    if is_remote(root):
        return "/".join([str(root).rstrip("/"), *parts])
    return str(Path(root, *parts))


def data_fingerprint(cfg: MonolithConfig) -> dict[str, Any]:
    """What the prepared dataset depends on: the data config and the source files."""
    from monolith.data.ingest import resolve_sources
    from monolith.data.windows import is_prepared_dataset

    data = dataclasses.asdict(cfg.data)
    out: dict[str, Any] = {"data": data}
    source = cfg.data.source
    if source != "synthetic":
        files = (
            sorted(p for p in Path(source).rglob("*") if p.is_file())
            if is_prepared_dataset(source)
            else resolve_sources(source)
        )
        out["files"] = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    out["key"] = hashlib.sha256(json.dumps(out, sort_keys=True, default=str).encode()).hexdigest()
    return out


def _read_json(uri: str, settings: dict) -> dict | None:
    """The JSON document at ``uri``, or None when there is none (other errors raise)."""
    if is_remote(uri):
        from monolith import storage

        store = storage.StorageSettings.from_mapping(settings)
        bucket, key = storage.parse_s3_uri(uri)
        client = storage.s3_client(store)
        listed = client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        if not any(o["Key"] == key for o in listed.get("Contents", [])):
            return None
        return storage.read_json(uri, store)
    path = Path(uri)
    return json.loads(path.read_text()) if path.is_file() else None


def prepare_for_experiment(cfg: MonolithConfig, root: str, settings: dict | None = None) -> str:
    """Prepare ``cfg.data`` once under the experiment ``root``; returns where it lives.

    A dataset already there is reused when it was prepared from the same data config and
    source files; a different one is an error (an experiment compares trials on ONE dataset).
    """
    from monolith.data.prepare import prepare_dataset
    from monolith.data.windows import is_prepared_dataset

    settings = settings or {}
    fingerprint = data_fingerprint(cfg)
    target = join(root, PREPARED)
    key_uri = join(root, PREPARED_KEY_FILE)
    existing = _read_json(key_uri, settings)
    if existing is not None:
        if existing.get("key") != fingerprint["key"]:
            raise ConfigError(
                f"experiment {root} holds a dataset prepared from a different data config or "
                f"different source files ({key_uri}); start a new experiment (--name) instead"
            )
        log.info("reusing the experiment's prepared dataset %s", target)
        return target
    source_is_prepared = is_prepared_dataset(cfg.data.source)
    if not is_remote(root):
        if source_is_prepared:
            target = str(Path(cfg.data.source).resolve())
        else:
            prepare_dataset(cfg.data, target, overwrite=Path(target).exists())
        Path(root).mkdir(parents=True, exist_ok=True)
        tmp = Path(key_uri + ".tmp")
        tmp.write_text(json.dumps({**fingerprint, "prepared": target}, indent=1, default=str))
        tmp.replace(key_uri)
        return target
    from monolith import storage

    store = storage.StorageSettings.from_mapping(settings)
    with tempfile.TemporaryDirectory(prefix="monolith-prepare-") as tmp:
        local = Path(cfg.data.source) if source_is_prepared else Path(tmp, PREPARED)
        if not source_is_prepared:
            prepare_dataset(cfg.data, local)
        storage.upload_directory(local, target, store)
    # Written last: its presence means the upload above completed.
    storage.write_json(key_uri, {**fingerprint, "prepared": target}, store)
    return target


def local_prepared(uri: str, settings: dict | None = None, cache_root: str | None = None) -> Path:
    """A local folder holding the prepared dataset at ``uri``: itself, or a node-local copy.

    Workers on one node share the copy: the first downloads it under a file lock, the rest
    wait and reuse it.
    """
    from monolith.data.windows import is_prepared_dataset

    if not is_remote(uri):
        if not is_prepared_dataset(uri):
            raise DataError(f"{uri} is not a prepared dataset")
        return Path(uri)
    from monolith import storage

    cache = Path(
        cache_root
        or os.environ.get("MONOLITH_CACHE")
        or Path(tempfile.gettempdir()) / "monolith-cache"
    )
    target = cache / hashlib.sha256(uri.encode()).hexdigest()[:16]
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / (target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_prepared_dataset(target):
            storage.download_directory(uri, target, storage.StorageSettings.from_mapping(settings))
    return target
