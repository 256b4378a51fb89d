"""Market data on an S3-protocol server (moto over HTTP on 127.0.0.1): the same files on S3 and
on local disk prepare to the same dataset, in every layout (CSV per symbol, Parquet, hive
partitions, globs), to a local folder or an s3:// prefix; bad S3 sources and bad URIs are one
clear line, exit 2, with nothing written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from monolith.config import DataConfig, SyntheticConfig
from monolith.data.prepare import prepare_dataset
from monolith.data.sources import resolve_sources
from monolith.data.synthetic import generate_synthetic
from monolith.data.windows import load_prepared_frame
from monolith.errors import ConfigError, DataError, StorageError
from monolith.storage import StorageSettings, download_directory, upload_directory

pytestmark = pytest.mark.integration

BUCKET = "market-data"
REPO = Path(__file__).resolve().parents[2]
MONOLITH = str(Path(sys.executable).parent / "monolith")
PATH_STYLE = StorageSettings(addressing_style="path")


def _cfg(source: str) -> DataConfig:
    cfg = DataConfig(source=source, sequence_length=8, label_horizon=3)
    cfg.validate()
    return cfg


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> Path:
    """The same three symbols in four layouts, as a desk would keep them."""
    root = tmp_path_factory.mktemp("layouts")
    raw = generate_synthetic(SyntheticConfig(symbols=3, rows_per_symbol=700, seed=21))
    raw = raw.drop(columns=["true_regime"])
    (root / "csv").mkdir()
    (root / "parquet").mkdir()
    for symbol, part in raw.groupby("symbol"):
        name = symbol.replace("/", "")
        part.to_csv(root / "csv" / f"{name}.csv", index=False)
        part.to_parquet(root / "parquet" / f"{name}.parquet", index=False)
    # hive: the symbol lives in the folder name only, files split by year as well
    hive = raw.assign(year=raw["timestamp"].dt.year)
    for (symbol, year), part in hive.groupby(["symbol", "year"]):
        folder = root / "hive" / f"symbol={symbol.replace('/', '%2F')}" / f"year={year}"
        folder.mkdir(parents=True)
        part.drop(columns=["symbol", "year"]).to_parquet(folder / "part-0.parquet", index=False)
    (root / "hive" / "_SUCCESS").write_text("")
    return root


@pytest.fixture
def on_s3(s3_env, layouts) -> str:
    s3_env.make_bucket(BUCKET)
    for name in ("csv", "parquet", "hive"):
        upload_directory(layouts / name, f"s3://{BUCKET}/{name}", PATH_STYLE)
    return f"s3://{BUCKET}"


def _comparable(meta: dict) -> dict:
    """Metadata minus what names where the files were, and timings."""
    out = json.loads(json.dumps(meta, default=str))
    for key in ("created_utc", "timings", "source", "source_files"):
        out.pop(key, None)
    out["config"].pop("source", None)
    out["cleaning"]["files"] = [
        {k: v for k, v in f.items() if k != "path"} for f in out["cleaning"]["files"]
    ]
    return out


def _same_dataset(a: Path, b: Path, meta_a: dict, meta_b: dict) -> None:
    fa, fb = load_prepared_frame(a), load_prepared_frame(b)
    pd.testing.assert_frame_equal(fa, fb)
    assert _comparable(meta_a) == _comparable(meta_b)


@pytest.mark.parametrize(
    ("layout", "suffix"),
    [("csv", "/"), ("parquet", ""), ("hive", "/"), ("csv", "/*.csv"), ("hive", "/**/*.parquet")],
)
def test_s3_source_prepares_like_the_same_files_on_disk(
    on_s3, layouts, tmp_path, layout, suffix
) -> None:
    local = str(layouts / layout) + ("" if suffix in ("", "/") else suffix)
    meta_local = prepare_dataset(_cfg(local), tmp_path / "local")
    meta_s3 = prepare_dataset(
        _cfg(f"{on_s3}/{layout}{suffix}"), tmp_path / "from-s3", settings=PATH_STYLE
    )
    _same_dataset(tmp_path / "local", tmp_path / "from-s3", meta_local, meta_s3)
    assert sorted(meta_s3["instruments"]) == ["SYN0/USD", "SYN1/USD", "SYN2/USD"]
    assert all(f["path"].startswith("s3://") for f in meta_s3["source_files"])
    assert all(len(f["sha256"]) == 64 for f in meta_s3["source_files"])


def test_s3_source_to_s3_output_and_back(on_s3, layouts, tmp_path) -> None:
    out = f"{on_s3}/prepared/from-hive"
    meta = prepare_dataset(_cfg(f"{on_s3}/hive"), out, settings=PATH_STYLE)
    pulled = download_directory(out, tmp_path / "pulled", PATH_STYLE)
    meta_local = prepare_dataset(_cfg(str(layouts / "hive")), tmp_path / "local")
    _same_dataset(tmp_path / "local", pulled, meta_local, meta)
    # an existing output needs --overwrite; with it, the prefix is replaced, not mixed
    with pytest.raises(DataError, match="already exists"):
        prepare_dataset(_cfg(f"{on_s3}/hive"), out, settings=PATH_STYLE)
    prepare_dataset(_cfg(f"{on_s3}/parquet"), out, settings=PATH_STYLE, overwrite=True)


def test_hive_partitions_name_the_symbols_and_split_files_join(on_s3) -> None:
    files = resolve_sources(f"{on_s3}/hive", PATH_STYLE)
    assert {f.symbol_hint for f in files} == {"SYN0/USD", "SYN1/USD", "SYN2/USD"}
    assert all(f.name == "part-0.parquet" for f in files)  # _SUCCESS is not data
    assert len(files) == 3 * 1  # 700 hourly bars from 2020-01-01 stay within one year


def test_fingerprint_comes_from_the_listing(on_s3, s3_env) -> None:
    """'Prepare once' keys on each object's ETag and size, known without downloading it."""
    from monolith.config import MonolithConfig
    from monolith.experiment import data_fingerprint

    cfg = MonolithConfig(data=_cfg(f"{on_s3}/csv/"))
    before = data_fingerprint(cfg, PATH_STYLE)
    listed = s3_env.client().list_objects_v2(Bucket=BUCKET, Prefix="csv/")["Contents"]
    assert sorted(before["files"]) == sorted(
        [f"s3://{BUCKET}/{o['Key']}", o["Size"], o["ETag"].strip('"')] for o in listed
    )
    assert data_fingerprint(cfg, PATH_STYLE)["key"] == before["key"]
    body = s3_env.client().get_object(Bucket=BUCKET, Key=listed[0]["Key"])["Body"].read()
    s3_env.client().put_object(Bucket=BUCKET, Key=listed[0]["Key"], Body=body + b"\n")
    assert data_fingerprint(cfg, PATH_STYLE)["key"] != before["key"]


# -- bad sources and URIs ------------------------------------------------------------------


def _prepare_cli(source: str, out: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MONOLITH, "data", "prepare", "--input", source, "--output", str(out), *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=out.parent,
        timeout=120,
    )


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and " INFO " not in ln]
    assert "Traceback" not in done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_bad_s3_sources_are_one_line_and_leave_nothing(on_s3, s3_env, tmp_path) -> None:
    env = {**os.environ, **s3_env.env}
    work = tmp_path / "work"
    work.mkdir()
    cases = {
        "s3://no-such-bucket-here/bars/": ["no-such-bucket-here", "does not exist"],
        f"{on_s3}/nothing-here/": [f"{on_s3}/nothing-here/", "no market data"],
        f"{on_s3}/csv/*.parquet": [f"{on_s3}/csv/*.parquet", "no market data"],
        "s3://": ["s3://", "no bucket"],
        "s3:/market-data/csv": ["s3:/market-data/csv", "two slashes"],
        "gs://market-data/csv": ["gs://", "unsupported scheme"],
        "s3://Bad_Bucket/x": ["Bad_Bucket", "invalid"],
    }
    for source, expected in cases.items():
        line = _one_error_line(_prepare_cli(source, work / "out", env))
        for text in expected:
            assert text in line, (source, line)
        assert sorted(p.name for p in work.iterdir()) == [], source

    dead = {**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    line = _one_error_line(
        _prepare_cli(f"{on_s3}/csv/", work / "out", dead, "--config", str(_fast_fail(tmp_path)))
    )
    assert "cannot reach" in line and "127.0.0.1:9" in line
    with s3_env.require_auth() as (key_id, _):
        wrong = {**env, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": "wrong-0003"}
        line = _one_error_line(_prepare_cli(f"{on_s3}/csv/", work / "out", wrong))
    assert ("rejected the credentials" in line or "denied access" in line) and BUCKET in line
    assert "wrong-0003" not in line
    assert sorted(p.name for p in work.iterdir()) == []


def _fast_fail(tmp_path: Path) -> Path:
    """A config whose storage gives up at once on a dead endpoint."""
    path = tmp_path / "fast.yaml"
    path.write_text(
        yaml.safe_dump(
            {"storage": {"max_attempts": 1, "connect_timeout_s": 2, "addressing_style": "path"}}
        )
    )
    return path


def test_uris_are_parsed_once_at_the_edge() -> None:
    from monolith.uri import join, normalise, parse_uri

    assert str(parse_uri("s3://bkt/a/b/")) == "s3://bkt/a/b"
    assert parse_uri("s3://bkt").key == ""
    assert join("s3://bkt/a/", "b", "c.json") == "s3://bkt/a/b/c.json"
    assert normalise("file:///tmp/x") == "/tmp/x"
    assert normalise("rel/dir") == str(Path("rel/dir").resolve())
    for bad, text in (
        ("s3://", "no bucket"),
        ("s3:///key", "no bucket"),
        ("s3:bkt/x", "two slashes"),
        ("S3:/bkt", "two slashes"),
        ("https://host/x", "unsupported scheme"),
        ("s3a://bkt/x", "unsupported scheme"),
        ("", "invalid"),
    ):
        with pytest.raises(ConfigError, match=text):
            parse_uri(bad, "tune.storage")
    with pytest.raises(ConfigError, match="data.source"):
        _cfg("s3://")


def test_tune_job_refuses_a_storage_uri_without_bucket_before_ray(tmp_path) -> None:
    """`tune.storage: s3://` once made a folder 's3:' here, started Ray, then hung."""
    config = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    config["tune"]["storage"] = "s3://"
    config["tune"]["search_space"] = str(REPO / "configs" / "search_space.yaml")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    work.mkdir()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ray_jobs.tune", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert time.monotonic() - started < 60
    line = _one_error_line(done)
    assert "tune.storage" in line and "no bucket" in line
    assert list(work.iterdir()) == []
    assert "Started a local Ray instance" not in done.stdout + done.stderr


def test_storage_errors_name_the_uri(on_s3) -> None:
    with pytest.raises(StorageError, match="no-such-bucket-here"):
        resolve_sources("s3://no-such-bucket-here/x/", PATH_STYLE)
    with pytest.raises(DataError, match=f"{on_s3}/csv/nope"):
        resolve_sources(f"{on_s3}/csv/nope", PATH_STYLE)
    assert np.all([f.format == "csv" for f in resolve_sources(f"{on_s3}/csv/", PATH_STYLE)])
