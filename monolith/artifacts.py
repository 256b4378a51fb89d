"""The artifact bundle: write it atomically, verify it, load its model safely.

A bundle is a folder with the original project's five files plus our additions::

    contrastive_encoder_model.keras   the trained MonolithModel (loads with safe_mode=True)
    model_config.json                 the full config and the flat hyperparameters
    data_processing_metadata.json     what data it was trained on, and how it was prepared
    scalers.pkl / scalers.json        the train-fitted scalers (pickle and plain parameters)
    drift_reference.npz               scaled train rows new data is compared with (drift)
    training_history.csv              loss, val_loss and every metric, per epoch
    <extra files>                     e.g. best_config.json, test_metrics.json
    manifest.json                     written last: SHA-256 and size of every file above,
                                      library versions, config, final metrics

It is assembled in a temporary sibling folder and renamed into place, so a crash never
leaves a half bundle; a folder without a valid manifest is not a bundle.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from monolith._atomic import atomic_directory
from monolith.data.prepared import DRIFT_REFERENCE, METADATA_FILE, SCALERS_JSON, SCALERS_PKL
from monolith.errors import BundleError, StorageError

log = logging.getLogger(__name__)

MODEL_FILE = "contrastive_encoder_model.keras"
MODEL_CONFIG_FILE = "model_config.json"
HISTORY_FILE = "training_history.csv"
MANIFEST_FILE = "manifest.json"
REQUIRED_FILES = (
    MODEL_FILE,
    MODEL_CONFIG_FILE,
    METADATA_FILE,
    SCALERS_PKL,
    SCALERS_JSON,
    HISTORY_FILE,
)
BUNDLE_FORMAT = 1
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


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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
    settings: Any = None,
    lineage: dict[str, Any] | None = None,
) -> Path:
    """Assemble a bundle in a temporary sibling and rename it to ``output``.

    ``prepared_dir`` (a folder or s3:// prefix; ``settings`` reach S3) supplies
    ``data_processing_metadata.json`` and the scalers; ``extra_json`` maps additional file
    names to JSON-serialisable content.
    """
    from monolith.filesystems import read_bytes
    from monolith.uri import parse_uri

    output = Path(output)
    if output.exists() and not overwrite:
        raise BundleError(f"bundle {output} already exists; pass --overwrite to replace it")
    prepared = parse_uri(prepared_dir, "prepared dataset")
    with atomic_directory(output) as tmp:
        model.save(tmp / MODEL_FILE)
        (tmp / MODEL_CONFIG_FILE).write_text(json.dumps(model_config, indent=2, default=str))
        for name in (METADATA_FILE, SCALERS_PKL, SCALERS_JSON):
            (tmp / name).write_bytes(read_bytes(prepared.join(name), settings))
        try:  # datasets prepared before drift references existed have none
            (tmp / DRIFT_REFERENCE).write_bytes(
                read_bytes(prepared.join(DRIFT_REFERENCE), settings)
            )
        except StorageError:
            log.warning(
                "%s has no %s: the bundle's drift check will be unavailable",
                prepared,
                DRIFT_REFERENCE,
            )
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


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    path = Path(bundle) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{bundle}: no {MANIFEST_FILE}: not a complete bundle")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: unreadable manifest: {exc}") from None


def verify_bundle(bundle: str | Path) -> dict[str, Any]:
    """Check every file against the manifest; returns the manifest or raises BundleError."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    files = manifest.get("files", {})
    problems = [
        f"{name}: listed as required but not in manifest"
        for name in REQUIRED_FILES
        if name not in files
    ]
    for name, expected in files.items():
        path = bundle / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        size = path.stat().st_size
        if size != expected["bytes"]:
            problems.append(f"{name}: size {size} != manifest {expected['bytes']}")
            continue
        digest = sha256_file(path)
        if digest != expected["sha256"]:
            problems.append(f"{name}: sha256 {digest[:12]}… != manifest {expected['sha256'][:12]}…")
    unlisted = sorted(
        p.name for p in bundle.iterdir() if p.name not in files and p.name != MANIFEST_FILE
    )
    problems.extend(f"{name}: present but not in manifest" for name in unlisted)
    if problems:
        raise BundleError(f"bundle {bundle} failed verification: " + "; ".join(problems))
    return manifest


def load_bundle_model(bundle: str | Path, *, verify: bool = True):
    """The bundle's Keras model, loaded with ``safe_mode=True`` (after verification)."""
    import keras

    import monolith.model  # noqa: F401  registers the custom layers

    if verify:
        verify_bundle(bundle)
    return keras.saving.load_model(Path(bundle) / MODEL_FILE, safe_mode=True)
