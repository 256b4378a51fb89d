"""Writing a bundle: assembled in a temporary sibling folder and renamed into place, so a crash
never leaves a half bundle; its manifest, written last, lists every file's SHA-256 and size.
"""

from __future__ import annotations

import csv
import json
import logging
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from monolith._atomic import atomic_directory
from monolith.bundle.schema import (
    BUNDLE_FORMAT,
    HISTORY_FILE,
    MANIFEST_FILE,
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    OPTIONAL_PREPARED_FILES,
    PREPARED_FILES,
)
from monolith.errors import BundleError, StorageError
from monolith.filesystems import read_bytes
from monolith.storage import StorageSettings, sha256_file
from monolith.uri import Location, parse_uri

log = logging.getLogger(__name__)

_VERSIONED = (
    "tensorflow",
    "keras",
    "numpy",
    "pandas",
    "scikit-learn",
    "pyarrow",
    "ray",
    "optuna",
    "ta-lib",
    "hmmlearn",
    "monolith-tune",
)


def library_versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in history:
        columns.extend(k for k in row if k not in columns)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def _copy_prepared(prepared: Location, folder: Path, settings: StorageSettings | None) -> None:
    for name in PREPARED_FILES:
        (folder / name).write_bytes(read_bytes(prepared.join(name), settings))
    for name in OPTIONAL_PREPARED_FILES:
        try:
            (folder / name).write_bytes(read_bytes(prepared.join(name), settings))
        except StorageError:
            log.warning(
                "%s has no %s: the bundle's drift check will be unavailable", prepared, name
            )


def write_bundle(
    output: str | Path,
    *,
    model: Any,
    model_config: dict[str, Any],
    prepared_dir: str | Path,
    history: list[dict[str, Any]],
    metrics: dict[str, Any],
    extra_json: dict[str, Any] | None = None,
    overwrite: bool = False,
    settings: StorageSettings | None = None,
    lineage: dict[str, Any] | None = None,
) -> Path:
    """Assemble a bundle in a temporary sibling and rename it to ``output``.

    ``prepared_dir`` (a folder or s3:// prefix; ``settings`` reach S3) supplies
    ``data_processing_metadata.json`` and the scalers; ``extra_json`` maps additional file
    names to JSON-serialisable content.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise BundleError(f"bundle {output} already exists; pass --overwrite to replace it")
    prepared = parse_uri(prepared_dir, "prepared dataset")
    with atomic_directory(output) as tmp:
        model.save(tmp / MODEL_FILE)
        (tmp / MODEL_CONFIG_FILE).write_text(json.dumps(model_config, indent=2, default=str))
        _copy_prepared(prepared, tmp, settings)
        _write_history(tmp / HISTORY_FILE, history)
        for name, content in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(content, indent=2, default=str))
        files = {
            p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(tmp.iterdir())
        }
        manifest = {
            "bundle_format": BUNDLE_FORMAT,
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": files,
            "versions": library_versions(),
            "config": model_config,
            "metrics": metrics,
        }
        if lineage:  # where it came from: experiment, data fingerprint, code commit
            manifest["lineage"] = lineage
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str))
    log.info("bundle written to %s (%d files)", output, len(files) + 1)
    return output
