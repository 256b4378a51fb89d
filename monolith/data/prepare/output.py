"""Where a preparation writes, and how its output appears whole or not at all.

The output is complete only when its metadata file exists, which is written last: a local
folder is built in a temporary sibling and renamed into place (``monolith._atomic``); on S3
the partitions go straight to the prefix and a failure removes what was written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from monolith import storage
from monolith._atomic import atomic_directory
from monolith.data.prepared import is_prepared_dataset
from monolith.errors import DataError, MonolithError
from monolith.storage import StorageSettings
from monolith.uri import Location

log = logging.getLogger(__name__)


@dataclass
class Output:
    """Where a preparation writes: the final location, and where the groups write now."""

    location: Location
    settings: StorageSettings | None
    overwrite: bool
    staging: Path | None = None  # while ``staged``: the local output is built here

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
        storage.check_access(str(self.location), self.settings)
        return bool(storage.list_objects(str(self.location), self.settings))

    @contextmanager
    def staged(self) -> Iterator[None]:
        """Write under ``target`` inside the block: the output is in place when the block
        ends, and on an error nothing is left of it (a replaced local output is untouched)."""
        if self.location.is_s3:
            with self._s3_prefix():
                yield
            return
        with atomic_directory(self.location.path) as staging:
            self.staging = staging
            try:
                yield
            finally:
                self.staging = None

    @contextmanager
    def _s3_prefix(self) -> Iterator[None]:
        if self.overwrite and self._exists():
            storage.delete_prefix(str(self.location), self.settings)
        try:
            yield
        except BaseException:
            try:
                storage.delete_prefix(str(self.location), self.settings)
            except MonolithError as exc:
                log.warning("could not remove the partial output %s: %s", self.location, exc)
            raise

    def write(self, name: str, body: bytes) -> None:
        if self.staging is not None:
            (self.staging / name).write_bytes(body)
        else:
            storage.write_bytes(str(self.location.join(name)), body, self.settings)
