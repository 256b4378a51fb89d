"""Checking a bundle against its manifest, and loading its model safely.

A folder without a valid manifest is not a bundle. One set of checks serves every reader:
the manifest lists every required file; each listed file is a plain name, present, of the
listed size and (unless the caller will hash it anyway, as the publisher does while it
uploads) of the listed SHA-256; nothing else is in the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from monolith.bundle.schema import MANIFEST_FILE, MODEL_FILE, REQUIRED_FILES
from monolith.errors import BundleError
from monolith.storage import sha256_file


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    path = Path(bundle) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{bundle}: no {MANIFEST_FILE}: not a complete bundle")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: unreadable manifest: {exc}") from None


def _problem(path: Path, name: str, expected: dict[str, Any], contents: bool) -> str | None:
    """What is wrong with one listed file (None: it matches its manifest entry)."""
    if "/" in name or "\\" in name or name in (".", ".."):
        return f"{name}: not a plain file name"
    if not path.is_file():
        return f"{name}: missing"
    size = path.stat().st_size
    if size != expected["bytes"]:
        return f"{name}: size {size} != manifest {expected['bytes']}"
    if contents:
        digest = sha256_file(path)
        if digest != expected["sha256"]:
            return f"{name}: sha256 {digest[:12]}… != manifest {expected['sha256'][:12]}…"
    return None


def verify_bundle(bundle: str | Path, *, contents: bool = True) -> dict[str, Any]:
    """Check every file against the manifest; returns the manifest or raises BundleError.

    ``contents=False`` checks names and sizes only, for a caller that hashes each file anyway.
    """
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    files = manifest.get("files", {})
    problems = [
        f"{name}: required but not in manifest" for name in REQUIRED_FILES if name not in files
    ]
    for name, expected in files.items():
        problem = _problem(bundle / name, name, expected, contents)
        if problem:
            problems.append(problem)
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
