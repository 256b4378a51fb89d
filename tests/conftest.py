"""Shared fixtures: where the real market data lives (outside the repository)."""

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


# A real S3 endpoint (moto's server over HTTP on 127.0.0.1): s3_server, s3_env, s3_proxy.
from s3_server import s3_env, s3_proxy, s3_server  # noqa: E402, F401
