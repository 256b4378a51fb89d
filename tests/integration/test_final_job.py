"""End to end on real parts: a tiny tune on a local Ray cluster with its market data
(``data.source: s3://…`` CSV files) and its experiment on an S3-protocol server (moto over
HTTP on 127.0.0.1) -> the final job over 2 workers -> publish -> ``monolith pull`` -> load
with safe_mode -> the same embeddings as the trained model.

The cluster's nodes get the S3 endpoint and credentials from their environment, as the
Kubernetes pods do from the ConfigMap and Secret; nothing secret travels in a job request.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from ray_cluster import cluster_with_s3
from s3_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from test_tune_cluster import tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "monolith-e2e"


@pytest.fixture(scope="module")
def s3_cluster(s3_server):
    with cluster_with_s3(s3_server, BUCKET) as both:
        yield both


def _upload_market(s3, tmp: Path, synthetic: dict) -> str:
    """The tiny config's market as one CSV per symbol on S3, where a desk keeps its bars."""
    from monolith.config import SyntheticConfig
    from monolith.data.synthetic import generate_synthetic

    frame = generate_synthetic(SyntheticConfig(**synthetic)).drop(columns=["true_regime"])
    client = s3.client()
    for symbol, part in frame.groupby("symbol"):
        body = part.to_csv(index=False).encode()
        client.put_object(Bucket=BUCKET, Key=f"bars/{symbol.replace('/', '')}.csv", Body=body)
    return f"s3://{BUCKET}/bars/"


def _config(tmp: Path, s3) -> Path:
    path = tiny_config(tmp, samples=2, epochs=2, seed=3)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["source"] = _upload_market(s3, tmp, cfg["data"]["synthetic"])
    cfg["storage"] = {"addressing_style": "path", "region": "us-east-1"}
    cfg["final"] = {"epochs": 2, "num_workers": 2, "output": f"s3://{BUCKET}/bundles"}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _monolith(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "monolith"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_tune_then_final_job_then_pull_gives_the_trained_embeddings(
    s3_cluster, tmp_path: Path
) -> None:
    cluster, s3 = s3_cluster
    config = _config(tmp_path, s3)
    experiment = f"s3://{BUCKET}/experiments/e2e"

    tune = cluster.submit(
        ["python", "-m", "ray_jobs.tune", "--config", str(config), "--name", "e2e",
         "--storage", f"s3://{BUCKET}/experiments"],
        timeout=900,
    )  # fmt: skip
    assert tune.returncode == 0, (tune.stdout + tune.stderr)[-5000:]
    client = s3.client()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]}
    for name in ("best_config.json", "trials.csv", "optuna.db"):
        assert f"experiments/e2e/results/{name}" in keys
    assert "experiments/e2e/prepared.json" in keys
    prepared_key = json.loads(
        client.get_object(Bucket=BUCKET, Key="experiments/e2e/prepared.json")["Body"].read()
    )
    # prepared once from the S3 objects, fingerprinted by their ETags
    assert all(f[0].startswith(f"s3://{BUCKET}/bars/") for f in prepared_key["files"])
    assert len(prepared_key["files"]) == 3
    assert any(k.startswith("experiments/e2e/tune/") for k in keys)

    final_cmd = ["python", "-m", "ray_jobs.train_final", "--config", str(config)]
    final_cmd += ["--experiment", experiment, "--output", f"s3://{BUCKET}/bundles"]
    final = cluster.submit(final_cmd, timeout=900)
    out = final.stdout + final.stderr
    assert final.returncode == 0, out[-5000:]
    line = next(x for x in final.stdout.splitlines() if x.startswith("FINAL_RESULT "))
    result = json.loads(line.removeprefix("FINAL_RESULT "))
    latest = json.loads(
        client.get_object(Bucket=BUCKET, Key="bundles/e2e/latest.json")["Body"].read()
    )
    assert latest["run_id"] == result["run_id"]

    env = {**s3.env, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    dest = tmp_path / "pulled"
    pulled = _monolith("pull", f"s3://{BUCKET}/bundles/e2e/latest", str(dest), env=env)
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    from monolith.bundle import REQUIRED_FILES

    for name in (*REQUIRED_FILES, "best_config.json", "test_metrics.json", "manifest.json"):
        assert (dest / name).is_file(), name
    best = json.loads((dest / "best_config.json").read_text())
    published_best = json.loads(
        client.get_object(Bucket=BUCKET, Key="experiments/e2e/results/best_config.json")[
            "Body"
        ].read()
    )
    assert best == published_best
    # its lineage: the experiment, the data it was prepared from, the code's commit slot
    lineage = json.loads((dest / "manifest.json").read_text())["lineage"]
    assert lineage["experiment"] == "e2e"
    assert lineage["experiment_uri"] == experiment
    assert lineage["data_fingerprint"] == prepared_key["key"]
    assert lineage["best_config"] == f"{experiment}/results/best_config.json"
    assert "git_commit" in lineage

    # The pulled model embeds the first test windows exactly as the trained one did.
    import os

    from monolith.bundle import load_bundle_model
    from monolith.config import load_config
    from monolith.data.windows import WindowSource
    from monolith.model.build import encoder_from
    from monolith.storage import StorageSettings
    from monolith.training import FINGERPRINT_WINDOWS

    os.environ.update(s3.env)
    # the test windows the final job scored, read straight from the experiment on S3
    source = WindowSource(
        f"{experiment}/prepared",
        settings=StorageSettings(addressing_style="path"),
        fit_split=None,
        samples={"test": load_config(config).eval.max_windows},
    )
    features, _ = source.arrays("test", FINGERPRINT_WINDOWS)
    latent = np.asarray(encoder_from(load_bundle_model(dest))(features, training=False))
    assert latent.astype(np.float64).sum() == pytest.approx(result["embedding_sum"], rel=1e-5)
    assert np.abs(latent.astype(np.float64)).sum() == pytest.approx(
        result["embedding_abs_sum"], rel=1e-5
    )

    # Using it: the published encoder, pulled from S3 through latest, embeds the raw bars on
    # S3 with the bundle's own pipeline exactly as the final run embedded its test windows.
    from monolith import Encoder
    from monolith.training import FINGERPRINT_FILE

    path_style = StorageSettings(addressing_style="path")
    encoder = Encoder.load(f"s3://{BUCKET}/bundles/e2e/latest", path_style)
    embedded = encoder.embed(f"s3://{BUCKET}/bars/", settings=path_style).set_index(
        ["symbol", "timestamp"]
    )
    columns = [c for c in embedded.columns if c.startswith("latent_")]
    windows = json.loads((dest / FINGERPRINT_FILE).read_text())["windows"]
    assert len(windows) == FINGERPRINT_WINDOWS
    for w in windows:
        row = embedded.loc[(w["symbol"], pd.Timestamp(w["end"]))]
        np.testing.assert_allclose(row[columns].to_numpy(np.float64), w["latent"], atol=2e-5)

    # Re-running the same final job is idempotent: nothing retrained, latest unchanged.
    again = cluster.submit(final_cmd, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "already published" in again.stdout
    latest_again = json.loads(
        client.get_object(Bucket=BUCKET, Key="bundles/e2e/latest.json")["Body"].read()
    )
    assert latest_again == latest

    # The published bundle is lost (bucket emptied by hand): a re-run of the same run id
    # publishes the bundle it trained, verified, instead of crashing on its own checkpoint.
    lost = client.list_objects_v2(Bucket=BUCKET, Prefix="bundles/")["Contents"]
    client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": o["Key"]} for o in lost]})
    rerun = cluster.submit(final_cmd, timeout=600)
    rerun_out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, rerun_out[-3000:]
    assert "was trained before" in rerun.stdout and "Traceback" not in rerun_out
    assert "epoch 1/" not in rerun.stdout  # nothing retrained
    line = next(x for x in rerun.stdout.splitlines() if x.startswith("FINAL_RESULT "))
    assert json.loads(line.removeprefix("FINAL_RESULT ")) == result
    relatest = json.loads(
        client.get_object(Bucket=BUCKET, Key="bundles/e2e/latest.json")["Body"].read()
    )
    assert relatest["run_id"] == result["run_id"]
    assert relatest["manifest_sha256"] == latest["manifest_sha256"]
    repulled = _monolith(
        "pull", f"s3://{BUCKET}/bundles/e2e/latest", str(tmp_path / "again"), env=env
    )
    assert repulled.returncode == 0, repulled.stderr[-3000:]

    # The console is a line per epoch, not the workers' logs; those are under the experiment.
    ours = [ln for ln in final.stdout.splitlines() if " cli.py:" not in ln and " sdk.py:" not in ln]
    assert len(ours) < 30, final.stdout
    assert not any("RayTrainWorker" in ln or "tensorflow" in ln.lower() for ln in ours), ours
    worker_logs = [
        o["Key"]
        for o in client.list_objects_v2(Bucket=BUCKET, Prefix="experiments/e2e/final/logs/")[
            "Contents"
        ]
    ]
    assert any(k.endswith("/worker-0.log") for k in worker_logs), worker_logs

    # No credential string in job logs, published objects or the pulled bundle.
    logs = out + tune.stdout + tune.stderr + again.stdout + again.stderr + rerun_out
    for secret in (ACCESS_KEY_ID, SECRET_ACCESS_KEY):
        assert secret not in logs
        for path in dest.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
        assert secret not in json.dumps(latest)
