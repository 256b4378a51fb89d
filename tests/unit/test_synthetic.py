"""Synthetic: seeded, realistic bars, optional embedding and MCP columns."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monolith.config import SyntheticConfig
from monolith.data.ingest import read_market_data
from monolith.data.synthetic import generate_synthetic
from monolith.errors import ConfigError


def test_deterministic_per_seed() -> None:
    cfg = SyntheticConfig(symbols=3, rows_per_symbol=500, seed=11, embedding_dim=4, mcp_features=2)
    pd.testing.assert_frame_equal(generate_synthetic(cfg), generate_synthetic(cfg))
    other = generate_synthetic(SyntheticConfig(symbols=3, rows_per_symbol=500, seed=12))
    assert not np.allclose(generate_synthetic(cfg)["close"], other["close"])


def test_canonical_schema_and_bar_consistency() -> None:
    frame = generate_synthetic(SyntheticConfig(symbols=4, rows_per_symbol=3000, seed=7))
    assert list(frame.columns) == [
        "timestamp", "symbol", "open", "high", "low", "close", "volume", "true_regime",
    ]  # fmt: skip
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert frame["symbol"].unique().tolist() == ["SYN0/USD", "SYN1/USD", "SYN2/USD", "SYN3/USD"]
    assert isinstance(frame.index, pd.RangeIndex)
    for _, part in frame.groupby("symbol"):
        steps = part["timestamp"].diff().dropna().unique()
        assert list(steps) == [pd.Timedelta("1h")]
        # The open follows the previous close closely.
        gap = np.abs(np.log(part["open"].to_numpy()[1:] / part["close"].to_numpy()[:-1]))
        assert gap.max() < 0.01
    o, h, lo, c, v = (frame[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all()
    assert (lo > 0).all() and (v > 0).all()
    assert set(frame["true_regime"].unique()) == {0, 1, 2}


def test_volume_follows_the_size_of_moves() -> None:
    frame = generate_synthetic(SyntheticConfig(symbols=2, rows_per_symbol=3000, seed=5))
    part = frame[frame["symbol"] == "SYN0/USD"]
    move = np.abs(np.log(part["close"]).diff()).iloc[1:]
    assert move.corr(np.log(part["volume"].iloc[1:]), method="spearman") > 0.2


def test_optional_columns() -> None:
    cfg = SyntheticConfig(symbols=2, rows_per_symbol=300, seed=1, embedding_dim=8, mcp_features=3)
    frame = generate_synthetic(cfg)
    assert {len(e) for e in frame["llm_embedding"]} == {8}
    assert isinstance(frame["llm_embedding"].iloc[0], list)
    assert [c for c in frame.columns if c.startswith("mcp_")] == [
        "mcp_feature_000", "mcp_feature_001", "mcp_feature_002",
    ]  # fmt: skip
    # Weakly informative: the regime shifts their means, noise dominates.
    means = frame.groupby("true_regime")["mcp_feature_000"].mean()
    assert means.max() - means.min() < 3.0
    plain = generate_synthetic(SyntheticConfig(symbols=2, rows_per_symbol=300, seed=1))
    assert "llm_embedding" not in plain.columns and not any(c.startswith("mcp_") for c in plain)


def test_round_trip_through_ingest(tmp_path: Path) -> None:
    cfg = SyntheticConfig(symbols=2, rows_per_symbol=300, seed=2, embedding_dim=4, mcp_features=1)
    frame = generate_synthetic(cfg)
    frame.to_parquet(tmp_path / "synthetic.parquet")
    back, report = read_market_data(tmp_path / "synthetic.parquet")
    assert report["files"][0]["layout"] == "seed"
    assert all(v["rows_out"] == 300 for v in report["symbols"].values())
    pd.testing.assert_frame_equal(
        back[frame.columns.drop("llm_embedding")], frame.drop(columns="llm_embedding")
    )
    assert back["llm_embedding"].iloc[0] == pytest.approx(frame["llm_embedding"].iloc[0])


def test_fast() -> None:
    start = time.perf_counter()
    generate_synthetic(SyntheticConfig(symbols=4, rows_per_symbol=3000, seed=3, embedding_dim=16))
    assert time.perf_counter() - start < 1.0


def test_invalid_config() -> None:
    with pytest.raises(ConfigError, match="rows_per_symbol"):
        generate_synthetic(SyntheticConfig(rows_per_symbol=10))
    with pytest.raises(ConfigError, match="interval"):
        generate_synthetic(SyntheticConfig(interval="soon"))
