"""The SHA-256 of a file, as manifests list it and as objects are labelled with it."""

from __future__ import annotations

import hashlib
from pathlib import Path

# x-amz-meta-sha256: the file's hex SHA-256, as the manifest lists it
SHA256_METADATA = "sha256"


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of the file at ``path``, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
