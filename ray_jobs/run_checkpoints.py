"""A Train run's checkpoints, read and removed by the final job: the bundle a final run
already reported, and a run forgotten so that its next launch starts afresh."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from ray_jobs.train_adapter import BUNDLE_DIR, RunPlace


def completed_bundle(place: RunPlace, storage: Mapping[str, Any]) -> str | None:
    """The bundle a final run already reported (its last checkpoint), or None.

    A final run's last checkpoint is the bundle, not a trainer state: a re-run of the same
    run id (its publish failed, or was lost) takes it from here instead of resuming.
    """
    from monolith.bundle.schema import MANIFEST_FILE
    from monolith.filesystems import arrow_filesystem
    from monolith.storage import StorageSettings
    from monolith.uri import parse_uri

    location = parse_uri(place.storage, "run storage").join(place.name)
    fs, root = arrow_filesystem(location, StorageSettings.from_mapping(storage))
    import pyarrow.fs as pafs

    try:
        entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return None
    checkpoints = sorted(
        (e.base_name for e in entries if e.type == pafs.FileType.Directory),
        reverse=True,
    )
    for name in checkpoints:
        manifest = f"{root}/{name}/{BUNDLE_DIR}/{MANIFEST_FILE}"
        if name.startswith("checkpoint_") and fs.get_file_info(manifest).type == pafs.FileType.File:
            return str(location.join(name, BUNDLE_DIR))
    return None


def forget_run(place: RunPlace, storage: Mapping[str, Any]) -> None:
    """Remove a run's checkpoints, so its next launch starts afresh."""
    from monolith.filesystems import arrow_filesystem
    from monolith.storage import StorageSettings
    from monolith.uri import parse_uri

    location = parse_uri(place.storage, "run storage").join(place.name)
    fs, root = arrow_filesystem(location, StorageSettings.from_mapping(storage))
    with contextlib.suppress(FileNotFoundError):
        fs.delete_dir(root)
