"""Publishing to and pulling from a real S3 endpoint (moto's server over HTTP on 127.0.0.1).

Nothing is mocked in-process: every test talks HTTP to ``moto.server`` started by the
``s3_server`` fixture (tests/integration/s3_server.py), through boto3 exactly as production does.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from s3_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, S3Server, TcpProxy
from test_bundle import TINY  # the same tiny model config the bundle tests use

from monolith.bundle import (
    LATEST_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    REQUIRED_FILES,
    load_bundle_model,
    promote_bundle,
    publish_bundle,
    pull_bundle,
    sha256_file,
    verify_bundle,
    write_bundle,
)
from monolith.config import config_from_dict
from monolith.errors import BundleError, ConfigError, StorageError
from monolith.storage import (
    StorageSettings,
    check_access,
    download_directory,
    read_json,
    upload_directory,
)
from monolith.uri import parse_s3_uri

MONOLITH = Path(sys.executable).with_name("monolith")
MIB = 1 << 20
# Small parts so a 12-24 MiB file goes up in several (S3's minimum part is 5 MiB); two attempts
# per request and short timeouts so the fault tests fail fast.
FAST = {
    "multipart_threshold_mb": 5,
    "multipart_chunksize_mb": 5,
    "max_attempts": 2,
    "connect_timeout_s": 2,
    "read_timeout_s": 5,
}


def synthetic_bundle(folder: Path, big_mb: int = 12, seed: int = 0) -> Path:
    """A bundle whose model file is ``big_mb`` MiB of random bytes (verify_bundle accepts it)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name in REQUIRED_FILES:
        size = big_mb * MIB if name == MODEL_FILE else 2000
        (folder / name).write_bytes(rng.bytes(size))
    files = {
        p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(folder.iterdir())
    }
    manifest = {"bundle_format": 1, "files": files, "config": {}, "metrics": {"seed": seed}}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    verify_bundle(folder)
    return folder


@pytest.fixture
def bucket(s3_env: S3Server) -> str:
    """A fresh bucket name on the running server."""
    name = f"monolith-{uuid.uuid4().hex[:12]}"
    s3_env.make_bucket(name)
    return name


@pytest.fixture
def fast(s3_env: S3Server) -> StorageSettings:
    """Settings for the test server; the endpoint comes from AWS_ENDPOINT_URL (s3_env)."""
    return StorageSettings.from_mapping(FAST)


@pytest.fixture(scope="module")
def model_bundle(tmp_path_factory):
    """A bundle of the real (untrained) MonolithModel, its inputs and its outputs."""
    from monolith.data.prepare import prepare_dataset
    from monolith.data.windows import WindowSource
    from monolith.model import build_monolith

    root = tmp_path_factory.mktemp("model")
    cfg = config_from_dict(TINY)
    prepare_dataset(cfg.data, root / "data")
    source = WindowSource(
        root / "data", sequence_length=cfg.data.sequence_length, samples={"val": 32}
    )
    model = build_monolith(cfg.model, source.spec, seed=1)
    bundle = write_bundle(
        root / "bundle",
        model=model,
        model_config={
            "hyperparameters": cfg.hyperparameters(),
            "input_spec": source.spec.to_dict(),
        },
        prepared_dir=root / "data",
        history=[{"epoch": 1, "loss": 1.0, "val_loss": 1.0}],
        metrics={"val_ref_ntxent": 1.0},
    )
    feats, _ = source.arrays("val")
    inputs = {k: v for k, v in feats.items() if k in {t.name for t in model.inputs}}
    outputs = {k: np.asarray(v) for k, v in model(inputs, training=False).items()}
    return bundle, inputs, outputs


def _latest(server: S3Server, bucket: str, root: str) -> dict | None:
    client = server.client()
    try:
        body = client.get_object(Bucket=bucket, Key=f"{root}/{LATEST_FILE}")["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return json.loads(body)


def _keys(server: S3Server, bucket: str, prefix: str) -> set[str]:
    out = server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {o["Key"].removeprefix(prefix) for o in out.get("Contents", [])}


def _assert_no_secrets(text: str | bytes, *secrets: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    for secret in (ACCESS_KEY_ID, SECRET_ACCESS_KEY, *secrets):
        assert secret.encode() not in data, f"credential {secret[:6]}… leaked"


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    full.update(env, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [str(MONOLITH), *args], cwd=cwd, capture_output=True, text=True, env=full, timeout=300
    )


def _error_line(out: subprocess.CompletedProcess) -> str:
    """The one ``error: …`` line (log lines may precede it); no traceback."""
    assert "Traceback" not in out.stderr
    (line,) = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert out.stderr.rstrip().endswith(line)
    return line


# -- settings ----------------------------------------------------------------------------------
def test_settings_are_validated_and_never_take_credentials(monkeypatch):
    cfg = config_from_dict(
        {"storage": {"endpoint_url": "http://minio:9000", "addressing_style": "path"}}
    )
    settings = StorageSettings.from_config(cfg)
    assert settings.endpoint() == "http://minio:9000" and settings.addressing_style == "path"
    with pytest.raises(ConfigError, match=r"storage.addressing_style = 'sideways' is invalid"):
        StorageSettings.from_mapping({"addressing_style": "sideways"})
    with pytest.raises(ConfigError, match=r"storage.multipart_chunksize_mb = 2 .*\[5, 5120\]"):
        StorageSettings.from_mapping({"multipart_chunksize_mb": 2})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['storage.bucket'\]"):
        StorageSettings.from_mapping({"bucket": "x"})
    for key in ("aws_secret_access_key", "access_key_id", "session_token"):
        with pytest.raises(ConfigError, match=f"storage.{key}: credentials are not accepted") as e:
            StorageSettings.from_mapping({key: "hunter2-secret"})
        assert "hunter2" not in str(e.value)
    with pytest.raises(ConfigError, match="must not embed credentials") as e:
        StorageSettings.from_mapping({"endpoint_url": "http://user:hunter2@minio:9000"})
    assert "hunter2" not in str(e.value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://from-env:9000")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    assert StorageSettings().endpoint() == "http://from-env:9000"
    assert parse_s3_uri("s3://bkt/a/b/") == ("bkt", "a/b")
    with pytest.raises(ConfigError, match="not an s3:// URI"):
        parse_s3_uri("/local/path")


# -- round trip ----------------------------------------------------------------------------------
@pytest.mark.integration
def test_publish_pull_load_gives_identical_embeddings(model_bundle, s3_env, bucket, tmp_path):
    bundle, inputs, want = model_bundle
    uri = publish_bundle(bundle, f"s3://{bucket}/models", "exp", "run-1")
    assert uri == f"s3://{bucket}/models/exp/run-1"
    latest = _latest(s3_env, bucket, "models/exp")
    assert latest["run_id"] == "run-1" and latest["uri"] == uri
    assert latest["manifest_sha256"] == sha256_file(bundle / MANIFEST_FILE)

    pulled = pull_bundle(f"s3://{bucket}/models/exp/latest", tmp_path / "pulled")
    for path in bundle.iterdir():
        assert sha256_file(pulled / path.name) == sha256_file(path)
    loaded = load_bundle_model(pulled)  # verifies, then safe_mode=True
    got = loaded(inputs, training=False)
    for key, value in want.items():
        np.testing.assert_array_equal(np.asarray(got[key]), value)


@pytest.mark.integration
def test_republish_is_idempotent_and_latest_follows_the_newest_verified_run(
    s3_env, bucket, fast, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="monolith.bundle")
    one = synthetic_bundle(tmp_path / "one", big_mb=12, seed=1)
    two = synthetic_bundle(tmp_path / "two", big_mb=6, seed=2)
    dest = f"s3://{bucket}/root"
    publish_bundle(one, dest, "exp", "run-1", fast)
    head = s3_env.client().head_object(Bucket=bucket, Key=f"root/exp/run-1/{MODEL_FILE}")
    assert head["ETag"].strip('"').endswith("-3"), "12 MiB in 5 MiB parts: a multipart object"
    assert head["Metadata"]["sha256"] == sha256_file(one / MODEL_FILE)
    latest_before = _latest(s3_env, bucket, "root/exp")

    caplog.clear()
    assert publish_bundle(one, dest, "exp", "run-1", fast) == f"{dest}/exp/run-1"
    assert "0 of 7 file(s) uploaded, 7 already present" in caplog.text
    assert _latest(s3_env, bucket, "root/exp") == latest_before  # not even re-stamped

    publish_bundle(two, dest, "exp", "run-2", fast)
    latest = _latest(s3_env, bucket, "root/exp")
    assert latest["run_id"] == "run-2"
    assert latest["manifest_sha256"] == sha256_file(two / MANIFEST_FILE)

    with pytest.raises(StorageError, match="run-1 already holds a different bundle"):
        publish_bundle(two, dest, "exp", "run-1", fast)
    assert _latest(s3_env, bucket, "root/exp")["run_id"] == "run-2"
    publish_bundle(two, dest, "exp", "run-1", fast, overwrite=True)
    assert _latest(s3_env, bucket, "root/exp")["run_id"] == "run-1"
    pulled = pull_bundle(f"{dest}/exp/run-1", tmp_path / "pulled", fast)
    assert sha256_file(pulled / MANIFEST_FILE) == sha256_file(two / MANIFEST_FILE)


@pytest.mark.integration
def test_publish_without_latest_then_promote(s3_env, bucket, fast, tmp_path):
    one = synthetic_bundle(tmp_path / "one", big_mb=1, seed=1)
    two = synthetic_bundle(tmp_path / "two", big_mb=1, seed=2)
    dest = f"s3://{bucket}/gated"
    publish_bundle(one, dest, "exp", "run-1", fast)
    uri = publish_bundle(two, dest, "exp", "run-2", fast, set_latest=False)
    assert uri == f"{dest}/exp/run-2"
    assert _latest(s3_env, bucket, "gated/exp")["run_id"] == "run-1"  # the gate has not passed
    assert promote_bundle(dest, "exp", "run-2", fast) == uri
    latest = _latest(s3_env, bucket, "gated/exp")
    assert latest["run_id"] == "run-2"
    assert latest["manifest_sha256"] == sha256_file(two / MANIFEST_FILE)
    with pytest.raises(BundleError, match="run-3: no such bundle"):
        promote_bundle(dest, "exp", "run-3", fast)  # never published: latest stays
    assert _latest(s3_env, bucket, "gated/exp")["run_id"] == "run-2"


def test_local_publish_without_latest_then_promote(tmp_path):
    bundle = synthetic_bundle(tmp_path / "b", big_mb=1)
    root = tmp_path / "published"
    uri = publish_bundle(bundle, str(root), "exp", "run-1", set_latest=False)
    assert not (root / "exp" / LATEST_FILE).exists()
    assert promote_bundle(str(root), "exp", "run-1") == uri
    assert json.loads((root / "exp" / LATEST_FILE).read_text())["run_id"] == "run-1"


def test_local_fallback_publishes_and_pulls_the_same_way(tmp_path):
    bundle = synthetic_bundle(tmp_path / "b", big_mb=1)
    root = tmp_path / "published"
    uri = publish_bundle(bundle, str(root), "exp", "run-1")
    assert Path(uri) == (root / "exp" / "run-1").resolve()
    assert json.loads((root / "exp" / LATEST_FILE).read_text())["run_id"] == "run-1"
    assert publish_bundle(bundle, str(root), "exp", "run-1") == uri  # idempotent
    other = synthetic_bundle(tmp_path / "other", big_mb=1, seed=5)
    with pytest.raises(StorageError, match="already holds a different bundle"):
        publish_bundle(other, str(root), "exp", "run-1")
    pulled = pull_bundle(str(root / "exp" / "latest"), tmp_path / "pulled")
    assert verify_bundle(pulled)["metrics"] == {"seed": 0}


@pytest.mark.integration
def test_upload_and_download_directory_round_trip(s3_env, bucket, fast, tmp_path):
    src = tmp_path / "prepared"
    (src / "dataset" / "symbol=A").mkdir(parents=True)
    (src / "dataset" / "symbol=A" / "part.parquet").write_bytes(os.urandom(7 * MIB))
    (src / "meta.json").write_text("{}")
    uri = f"s3://{bucket}/datasets/abc"
    upload_directory(src, uri, fast)
    upload_directory(src, uri, fast)  # idempotent
    out = download_directory(uri, tmp_path / "copy", fast)
    for path in src.rglob("*"):
        if path.is_file():
            assert sha256_file(out / path.relative_to(src)) == sha256_file(path)
    client = s3_env.client()
    label = client.head_object(Bucket=bucket, Key="datasets/abc/meta.json")["Metadata"]
    client.put_object(Bucket=bucket, Key="datasets/abc/meta.json", Body=b"{ }", Metadata=label)
    with pytest.raises(StorageError, match="meta.json: content does not match its sha256"):
        download_directory(uri, tmp_path / "copy2", fast)
    assert not (tmp_path / "copy2").exists()


# -- faults ------------------------------------------------------------------------------------
@pytest.mark.integration
def test_endpoint_cut_mid_upload_changes_nothing_and_a_rerun_completes(
    s3_env, s3_proxy: TcpProxy, bucket, tmp_path
):
    # Faithful outage: the proxy drops every connection mid-upload and then refuses new ones,
    # while moto (behind it) keeps its buckets, as a MinIO restart on a persistent volume or a
    # network partition would. Killing moto itself would also wipe its in-memory store, so the
    # "latest.json unchanged" and "the re-run completes on the same store" checks would be void.
    dest = f"s3://{bucket}/root"
    publish_bundle(synthetic_bundle(tmp_path / "one", big_mb=1, seed=1), dest, "exp", "run-1")
    before = _latest(s3_env, bucket, "root/exp")
    via_proxy = StorageSettings.from_mapping({**FAST, "endpoint_url": s3_proxy.endpoint_url})
    two = synthetic_bundle(tmp_path / "two", big_mb=24, seed=2)

    cut = s3_proxy.cut_after(8 * MIB)
    with pytest.raises(StorageError) as err:
        publish_bundle(two, dest, "exp", "run-2", via_proxy)
    assert cut.is_set(), "the endpoint went away during the upload"
    message = str(err.value)
    assert f"cannot reach storage endpoint {s3_proxy.endpoint_url}" in message
    assert f"bucket '{bucket}'" in message and "\n" not in message
    assert _latest(s3_env, bucket, "root/exp") == before
    assert MANIFEST_FILE not in _keys(s3_env, bucket, "root/exp/run-2/")

    s3_proxy.restore()
    assert publish_bundle(two, dest, "exp", "run-2", via_proxy) == f"{dest}/exp/run-2"
    assert _latest(s3_env, bucket, "root/exp")["run_id"] == "run-2"
    uploads = s3_env.client().list_multipart_uploads(Bucket=bucket, Prefix="root/exp/run-2/")
    assert not uploads.get("Uploads"), "the failed attempt's multipart upload was aborted"
    verify_bundle(pull_bundle(f"{dest}/exp/latest", tmp_path / "pulled", via_proxy))


@pytest.mark.integration
@pytest.mark.parametrize("fault", ["refused", "hang"])
def test_endpoint_down_is_one_clear_error(s3_env, bucket, tmp_path, fault):
    bundle = synthetic_bundle(tmp_path / "b", big_mb=1)
    if fault == "refused":
        endpoint = f"http://127.0.0.1:{S3Server().port}"  # a free port: nothing listens
    else:
        endpoint = s3_env.endpoint_url
        s3_env.pause()  # SIGSTOP: connections open, nothing answers
    settings = StorageSettings.from_mapping(
        {**FAST, "endpoint_url": endpoint, "max_attempts": 1, "read_timeout_s": 1}
    )
    try:
        with pytest.raises(StorageError) as err:
            publish_bundle(bundle, f"s3://{bucket}/root", "exp", "run-1", settings)
    finally:
        s3_env.resume()
    reason = "connection refused" if fault == "refused" else "no response within 1s"
    assert f"cannot reach storage endpoint {endpoint}, bucket '{bucket}'" in str(err.value)
    assert reason in str(err.value)
    assert _keys(s3_env, bucket, "root/") == set()


@pytest.mark.integration
@pytest.mark.parametrize("target", [MODEL_FILE, MANIFEST_FILE])
def test_corrupted_object_fails_pull_and_leaves_no_dest(s3_env, bucket, fast, tmp_path, target):
    bundle = synthetic_bundle(tmp_path / "b", big_mb=6)
    publish_bundle(bundle, f"s3://{bucket}/root", "exp", "run-1", fast)
    key = f"root/exp/run-1/{target}"
    client = s3_env.client()
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    if target == MODEL_FILE:
        data[len(data) // 2] ^= 0xFF  # same size, one flipped bit: only the checksum can tell
        needle = f"{MODEL_FILE}: sha256"
    else:
        manifest = json.loads(data)
        manifest["metrics"]["val_ref_ntxent"] = -1.0  # files still match; the manifest does not
        data = bytearray(json.dumps(manifest).encode())
        needle = "manifest.json is not the one latest.json recorded"
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))

    dest = tmp_path / "pulled"
    with pytest.raises(BundleError, match=needle) as err:
        pull_bundle(f"s3://{bucket}/root/exp/latest", dest, fast)
    assert f"s3://{bucket}/root/exp/run-1" in str(err.value)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["b"], "no temporary folder left behind"


@pytest.mark.integration
@pytest.mark.parametrize("target", [MODEL_FILE, "scalers.json"])  # multipart / single PUT
def test_a_locally_corrupt_bundle_is_never_published(s3_env, bucket, fast, tmp_path, target):
    bundle = synthetic_bundle(tmp_path / "b", big_mb=12)
    path = bundle / target
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"local file .*{target} changed or does not match"):
        publish_bundle(bundle, f"s3://{bucket}/root", "exp", "run-1", fast)
    keys = _keys(s3_env, bucket, "root/")
    assert LATEST_FILE not in {k.rpartition("/")[2] for k in keys}
    assert f"exp/run-1/{MANIFEST_FILE}" not in keys
    # checked on the bytes being sent, before the upload completes: never an object at all
    assert f"exp/run-1/{target}" not in keys
    uploads = s3_env.client().list_multipart_uploads(Bucket=bucket, Prefix="root/")
    assert not uploads.get("Uploads"), "the refused file's multipart upload was aborted"


@pytest.mark.integration
def test_bad_credentials_and_missing_bucket_are_clear_errors(
    s3_env, bucket, fast, tmp_path, monkeypatch
):
    bundle = synthetic_bundle(tmp_path / "b", big_mb=1)
    endpoint = s3_env.endpoint_url
    dest = f"s3://{bucket}/root"
    with s3_env.require_auth() as (key_id, secret):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        publish_bundle(bundle, dest, "exp", "run-1", fast)  # valid keys work
        for bad_id, bad_secret in ((key_id, "wrong-secret-0001"), ("AKIAUNKNOWN000000001", secret)):
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", bad_id)
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bad_secret)
            with pytest.raises(StorageError) as err:
                publish_bundle(bundle, dest, "exp", "run-2", fast)
            message = str(err.value)
            assert f"storage endpoint {endpoint}, bucket '{bucket}'" in message
            assert "denied access" in message or "rejected the credentials" in message
            _assert_no_secrets(message, secret, bad_secret, key_id)
        latest = s3_env.client(key_id=key_id, secret=secret).get_object(
            Bucket=bucket, Key=f"root/exp/{LATEST_FILE}"
        )
        assert json.loads(latest["Body"].read())["run_id"] == "run-1"

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match="no AWS credentials found"):
        publish_bundle(bundle, dest, "exp", "run-2", fast)
    for name, value in s3_env.env.items():
        monkeypatch.setenv(name, value)

    missing = f"monolith-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StorageError, match=f"bucket '{missing}' does not exist"):
        check_access(f"s3://{missing}/root", fast)
    with pytest.raises(StorageError) as err:
        publish_bundle(bundle, f"s3://{missing}/root", "exp", "run-1", fast)
    assert str(err.value) == (
        f"bucket '{missing}' does not exist at storage endpoint {endpoint}: create it, or pass "
        "--create-bucket (create_bucket=True)"
    )
    publish_bundle(bundle, f"s3://{missing}/root", "exp", "run-1", fast, create_bucket=True)
    assert read_json(f"s3://{missing}/root/exp/{LATEST_FILE}", fast)["run_id"] == "run-1"


@pytest.mark.integration
def test_no_credential_reaches_logs_or_artifacts(s3_env, bucket, fast, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # root at DEBUG: botocore's signed headers would show here
    bundle = synthetic_bundle(tmp_path / "b", big_mb=6)
    publish_bundle(bundle, f"s3://{bucket}/root", "exp", "run-1", fast)
    pulled = pull_bundle(f"s3://{bucket}/root/exp/latest", tmp_path / "pulled", fast)
    assert "7 of 7 file(s) uploaded" in caplog.text and "DEBUG" in caplog.text
    _assert_no_secrets(caplog.text)
    for path in pulled.iterdir():
        _assert_no_secrets(path.read_bytes())
    client = s3_env.client()
    for key in _keys(s3_env, bucket, ""):
        obj = client.get_object(Bucket=bucket, Key=key)
        _assert_no_secrets(obj["Body"].read() + json.dumps(obj["Metadata"]).encode())


# -- CLI ---------------------------------------------------------------------------------------
@pytest.mark.integration
def test_cli_publish_pull_inspect_and_one_line_errors(model_bundle, s3_env, tmp_path):
    bundle = model_bundle[0]
    env = s3_env.env
    bucket = f"monolith-cli-{uuid.uuid4().hex[:8]}"
    dest = f"s3://{bucket}/models"

    out = _cli("publish", str(bundle), dest, "--experiment", "exp", "--run-id", "r1", env=env,
               cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and out.stdout == ""
    assert _error_line(out) == (
        f"error: bucket '{bucket}' does not exist at storage endpoint {s3_env.endpoint_url}: "
        "create it, or pass --create-bucket (create_bucket=True)"
    )
    out = _cli("-v", "publish", str(bundle), dest, "--experiment", "exp", "--run-id", "r1",
               "--create-bucket", env=env, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"-> {dest}/exp/r1" in out.stdout
    _assert_no_secrets(out.stdout + out.stderr)

    out = _cli("-v", "pull", f"{dest}/exp/latest", "pulled", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "files verified" in out.stdout
    _assert_no_secrets(out.stdout + out.stderr)
    verify_bundle(tmp_path / "pulled")

    out = _cli("inspect", f"{dest}/exp/latest", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"bundle {dest}/exp/latest:" in out.stdout and "safe_mode=True" in out.stdout

    s3_env.client().put_object(Bucket=bucket, Key="models/exp/r1/scalers.json", Body=b"{}")
    out = _cli("pull", f"{dest}/exp/r1", "bad", env=env, cwd=tmp_path)
    assert out.returncode == 2 and not (tmp_path / "bad").exists()
    assert _error_line(out).startswith(
        f"error: bundle {dest}/exp/r1 failed verification: scalers.json"
    )

    with s3_env.require_auth() as (key_id, secret):
        bad = {**env, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": "wrong-secret-0002"}
        out = _cli("pull", f"{dest}/exp/latest", "denied", env=bad, cwd=tmp_path)
    assert out.returncode == 2 and not (tmp_path / "denied").exists()
    line = _error_line(out)
    assert s3_env.endpoint_url in line and bucket in line
    _assert_no_secrets(out.stdout + out.stderr, secret, "wrong-secret-0002")
