"""Shared fixtures: where the real market data lives (outside the repository).

``unit/`` tests run library code in this process (or a fresh interpreter for TensorFlow's
logical devices); ``integration/`` tests start real parts: a Ray cluster, an S3 server over
HTTP, the jobs and the CLI as processes, a browser, kubectl and kfp. Their fixtures are in
``integration/conftest.py``. Helpers both use (``market_bars``, ``_subprocess``) sit here."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "crypto-hourly"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real hourly crypto candles; tests using them skip when the folder is absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip("shared data folder ../shared/data/crypto-hourly not present")
    return SHARED_DATA_DIR
