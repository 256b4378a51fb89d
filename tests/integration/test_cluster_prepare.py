"""Preparation spread over a real local two-node Ray cluster (head + worker node, token auth)
equals single-process preparation: same rows, same features, same regimes, same metadata
apart from timings; and the groups' work really ran in the cluster's processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monolith.config import DataConfig, SyntheticConfig
from monolith.data.prepare import prepare_dataset
from monolith.data.synthetic import generate_synthetic
from monolith.data.windows import load_prepared_frame

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MONOLITH = str(Path(sys.executable).parent / "monolith")


def _market(folder: Path) -> Path:
    """Five symbols of different lengths in the ways desks keep them: one CSV per symbol, one
    CSV holding two symbols, a symbol split over two files; some bars to clean."""
    folder.mkdir()
    frames = [
        generate_synthetic(SyntheticConfig(symbols=1, rows_per_symbol=n, seed=s)).assign(
            symbol=name
        )
        for name, n, s in (
            ("AAA", 900, 1),
            ("BBB", 1400, 2),
            ("CCC", 700, 3),
            ("DDD", 1100, 4),
            ("EEE", 800, 5),
        )
    ]
    frames = [f.drop(columns=["true_regime"]) for f in frames]
    aaa, bbb, ccc, ddd, eee = frames
    aaa.loc[10, "high"] = aaa.loc[10, "low"] * 0.5  # impossible bar
    aaa = pd.concat([aaa, aaa.iloc[[100, 101]]])  # duplicated timestamps
    aaa.to_csv(folder / "AAA.csv", index=False)
    pd.concat([bbb, ccc]).to_csv(folder / "two-symbols.csv", index=False)
    ddd.iloc[:600].to_parquet(folder / "DDD-2020a.parquet", index=False)
    ddd.iloc[600:].to_parquet(folder / "DDD-2020b.parquet", index=False)
    eee.loc[5:7, "volume"] = 0.0  # zero-volume bars (kept, counted)
    eee.to_csv(folder / "EEE.csv", index=False)
    return folder


def _comparable(meta: dict) -> dict:
    out = json.loads(json.dumps(meta, default=str))
    out.pop("timings")
    out.pop("created_utc")
    return out


def test_cluster_preparation_equals_single_process(cluster, tmp_path: Path) -> None:
    source = _market(tmp_path / "bars")
    cfg = DataConfig(source=str(source), sequence_length=8)  # as the CLI below
    cfg.validate()
    single = prepare_dataset(cfg, tmp_path / "single")

    out = tmp_path / "cluster"
    done = subprocess.run(
        [MONOLITH, "data", "prepare", "--input", str(source), "--output", str(out),
         "--sequence-length", "8", "--ray-address", f"127.0.0.1:{cluster.port}"],
        capture_output=True, text=True, env=cluster.env(), timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-5000:]
    on_cluster = json.loads((out / "data_processing_metadata.json").read_text())
    # the work was spread: several groups, each an actor on the cluster
    assert on_cluster["timings"]["groups"] == 3
    assert single["timings"]["groups"] == 1
    assert "preparing on the cluster: 3 group(s)" in done.stderr

    assert _comparable(on_cluster) == _comparable(single)
    a, b = load_prepared_frame(tmp_path / "single"), load_prepared_frame(out)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
    np.testing.assert_array_equal(a["hmm_regime"], b["hmm_regime"])
    assert (out / "scalers.json").read_text() == (tmp_path / "single" / "scalers.json").read_text()
    cleaning = single["cleaning"]
    assert cleaning["symbols"]["AAA"]["duplicates_removed"] == 2
    assert cleaning["symbols"]["AAA"]["impossible_bars"] == 1
    assert [f["name"] for f in cleaning["files"]] == sorted(p.name for p in source.iterdir())
    assert any(a.startswith("AAA: dropped 1 bar(s) impossible") for a in cleaning["actions"])


def test_embedding_with_ray_data_equals_a_local_embed(cluster, tmp_path: Path) -> None:
    """``monolith embed --ray-address``: Ray Data blocks of one symbol, an actor pool that
    loads the encoder once per actor; row for row what a local embed writes."""
    from test_encoder import TINY

    from monolith.config import config_from_dict
    from monolith.training import train_on_prepared, write_final_bundle

    source = _market(tmp_path / "bars")
    cfg = config_from_dict({**TINY, "data": {**TINY["data"], "source": str(source)}})
    prepare_dataset(cfg.data, tmp_path / "prepared")
    result = train_on_prepared(cfg, tmp_path / "prepared", train_split="train+val")
    bundle = tmp_path / "bundle"
    write_final_bundle(result, cfg, tmp_path / "prepared", bundle, cfg.hyperparameters())

    def embed(output: Path, *extra: str) -> pd.DataFrame:
        done = subprocess.run(
            [MONOLITH, "embed", str(bundle), "--input", str(source), "--output", str(output),
             *extra],
            capture_output=True, text=True, env=cluster.env(), timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-5000:]
        return pd.read_parquet(output)

    local = embed(tmp_path / "local.parquet")
    remote = embed(tmp_path / "ray.parquet", "--ray-address", f"127.0.0.1:{cluster.port}")
    pd.testing.assert_frame_equal(remote, local)
    assert set(local["symbol"]) == {"AAA", "BBB", "CCC", "DDD", "EEE"}
    reports = [json.loads(Path(f"{p}.drift.json").read_text()) for p in (
        tmp_path / "local.parquet", tmp_path / "ray.parquet")]  # fmt: skip
    assert reports[0]["embed"]["symbols"] == reports[1]["embed"]["symbols"]
    assert reports[0]["drift"] == reports[1]["drift"]
