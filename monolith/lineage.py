"""Where a result came from: the code's commit, recorded with experiments and bundles.

A job submitted to Ray runs from an uploaded copy of the repository without ``.git``, and an
image has none either, so the commit travels as ``MONOLITH_GIT_COMMIT`` (set by the Makefile's
job submission, the Ray Jobs client and the image build); a plain checkout is asked directly.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

COMMIT_ENV = "MONOLITH_GIT_COMMIT"
# Distribution -> key in the versions record. By metadata: a driver never imports TensorFlow
# just to say which one it has.
VERSIONED = {
    "monolith-tune": "monolith",
    "ray": "ray",
    "tensorflow": "tensorflow",
    "keras": "keras",
    "optuna": "optuna",
    "numpy": "numpy",
    "pandas": "pandas",
}


def git_commit(where: str | Path | None = None) -> str | None:
    """The commit of the code (``<sha>-dirty`` with uncommitted changes); None when unknown."""
    recorded = os.environ.get(COMMIT_ENV, "").strip()
    if recorded:
        return recorded
    folder = Path(where) if where else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):  # no git, a slow disk: lineage is optional
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def package_versions() -> dict[str, str | None]:
    """Python's and the main libraries' versions (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for distribution, key in VERSIONED.items():
        try:
            out[key] = version(distribution)
        except PackageNotFoundError:
            out[key] = None
    return out
