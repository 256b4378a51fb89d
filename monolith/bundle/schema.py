"""The bundle's names and formats, defined once: its files, its manifest, the ``latest.json``
pointer, and the names a run id or experiment may take.

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

Published, under a root that is ``s3://bucket/prefix`` or a local folder::

    <root>/<experiment>/<run_id>/...   one bundle; manifest.json goes up last
    <root>/<experiment>/latest.json    {"run_id", "uri", "manifest_sha256", "published_at"},
                                       rewritten only after the whole bundle is verified
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from monolith.data.prepared import DRIFT_REFERENCE, METADATA_FILE, SCALERS_JSON, SCALERS_PKL
from monolith.errors import ConfigError

MODEL_FILE = "contrastive_encoder_model.keras"
MODEL_CONFIG_FILE = "model_config.json"
HISTORY_FILE = "training_history.csv"
MANIFEST_FILE = "manifest.json"
# The tuning experiment's best trial, as the final job and the pipeline read it and as the
# final bundle carries it.
BEST_CONFIG_FILE = "best_config.json"
# The files the bundle copies from the prepared dataset it was trained on.
PREPARED_FILES = (METADATA_FILE, SCALERS_PKL, SCALERS_JSON)
# Optional: datasets prepared before drift references existed have none.
OPTIONAL_PREPARED_FILES = (DRIFT_REFERENCE,)
REQUIRED_FILES = (
    MODEL_FILE,
    MODEL_CONFIG_FILE,
    METADATA_FILE,
    SCALERS_PKL,
    SCALERS_JSON,
    HISTORY_FILE,
)
BUNDLE_FORMAT = 1
LATEST_FILE = "latest.json"

SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,127}")
_RESERVED = ("latest", LATEST_FILE)  # names that mean the pointer, never a run


def check_segment(what: str, value: str) -> None:
    """An experiment name or run id is one plain path segment, and not the pointer's name."""
    if not isinstance(value, str) or not SEGMENT.fullmatch(value) or value in _RESERVED:
        raise ConfigError(
            f"{what} = {value!r} is invalid: 1-128 letters, digits, '.', '_', '=', '-', starting "
            f"with a letter or digit, and not {list(_RESERVED)}"
        )


def latest_document(experiment: str, run_id: str, uri: str, manifest_sha256: str) -> dict:
    """The content of ``latest.json`` pointing at ``run_id``, stamped now."""
    return {
        "run_id": run_id,
        "uri": uri,
        "manifest_sha256": manifest_sha256,
        "experiment": experiment,
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def is_latest_for(latest: object, run_id: str, uri: str, manifest_sha256: str) -> bool:
    """Whether a read ``latest.json`` already points at this run, this manifest."""
    want = {"run_id": run_id, "uri": uri, "manifest_sha256": manifest_sha256}
    return isinstance(latest, dict) and all(latest.get(k) == v for k, v in want.items())
