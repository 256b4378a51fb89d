"""The artifact bundle: its schema, writing it, verifying it, and publishing it.

- ``schema``: the bundle's file names, manifest format, ``latest.json`` and run names;
- ``write``: assemble a bundle atomically, its manifest last;
- ``verify``: check a bundle against its manifest, load its model safely;
- ``publish``: publish, promote, resolve ``latest``, pull (bytes move through
  ``monolith.storage``, which knows nothing of bundles).
"""

from monolith.bundle.publish import (
    point_latest,
    promote_bundle,
    publish_bundle,
    pull_bundle,
    resolve_bundle_uri,
)
from monolith.bundle.schema import (
    BEST_CONFIG_FILE,
    BUNDLE_FORMAT,
    HISTORY_FILE,
    LATEST_FILE,
    MANIFEST_FILE,
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    REQUIRED_FILES,
    check_segment,
)
from monolith.bundle.verify import load_bundle_model, read_manifest, verify_bundle
from monolith.bundle.write import library_versions, write_bundle
from monolith.storage import sha256_file

__all__ = [
    "BEST_CONFIG_FILE",
    "BUNDLE_FORMAT",
    "HISTORY_FILE",
    "LATEST_FILE",
    "MANIFEST_FILE",
    "MODEL_CONFIG_FILE",
    "MODEL_FILE",
    "REQUIRED_FILES",
    "check_segment",
    "library_versions",
    "load_bundle_model",
    "point_latest",
    "promote_bundle",
    "publish_bundle",
    "pull_bundle",
    "read_manifest",
    "resolve_bundle_uri",
    "sha256_file",
    "verify_bundle",
    "write_bundle",
]
