"""The code's commit, as experiments and bundles record it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from monolith.lineage import COMMIT_ENV, git_commit

ROOT = Path(__file__).resolve().parents[2]


def test_commit_from_the_checkout_the_environment_or_none(tmp_path, monkeypatch):
    monkeypatch.delenv(COMMIT_ENV, raising=False)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if head:  # a git checkout (CI clones one)
        assert git_commit(ROOT).removesuffix("-dirty") == head
    assert git_commit(tmp_path) is None  # not a checkout: unknown, no error
    monkeypatch.setenv(COMMIT_ENV, "abc123")  # a job's uploaded copy, an image
    assert git_commit(tmp_path) == "abc123"
