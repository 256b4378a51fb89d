"""The Kubeflow pipeline: its compiled IR, and a real run with kfp's local runner.

There is no Pipelines backend or Kubernetes API server here, so the compiled YAML is checked
as data (components, parameters, images, Secrets, no credential values), and the pipeline
itself runs with ``kfp.local`` (SubprocessRunner): every component executes for real, in
this venv, against a local two-node Ray cluster with token auth and the moto S3 server:
validate -> tune (2 trials) -> final -> gate -> a published bundle ``monolith pull`` verifies.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from ray_cluster import cluster_with_s3
from s3_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from test_tune_cluster import tiny_config

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "monolith-kfp"
PARAMETERS = {
    "threshold",
    "ray_address",
    "config",
    "data_source",
    "experiment",
    "storage",
    "output",
    "num_samples",
    "objective",
    "working_dir",
}


def _compile(tmp_path: Path, env: dict[str, str] | None = None) -> tuple[dict, dict, str]:
    out = tmp_path / "pipeline.yaml"
    done = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "monolith_pipeline.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    spec, platform = list(yaml.safe_load_all(text))
    return spec, platform, text


def test_compiled_pipeline_names_its_components_parameters_and_image(tmp_path, monkeypatch):
    # A credential in the compiling shell must not reach the spec.
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "RAY_AUTH_TOKEN": "tok-4f1c9a0b7e",
    }
    spec, platform, text = _compile(tmp_path, env)
    assert spec["pipelineInfo"]["name"] == "monolith-tune-and-publish"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == PARAMETERS
    assert not params["threshold"].get("isOptional")  # the gate is a decision, not a default
    tasks = spec["root"]["dag"]["tasks"]
    assert {"validate", "tune", "final", "condition-1"} <= set(tasks)
    assert tasks["tune"]["dependentTasks"] == ["validate"]
    assert tasks["final"]["dependentTasks"] == ["tune", "validate"]
    condition = tasks["condition-1"]["triggerPolicy"]["condition"]
    assert "final-Output" in condition and "true" in condition
    inner = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert list(inner) == ["promote"]
    # outputs: the best config and the bundle as artifacts, metrics from both jobs
    tune_out = spec["components"]["comp-tune"]["outputDefinitions"]["artifacts"]
    assert tune_out["best_config"]["artifactType"]["schemaTitle"] == "system.Artifact"
    assert tune_out["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    final_out = spec["components"]["comp-final"]["outputDefinitions"]
    assert final_out["parameters"]["Output"]["parameterType"] == "BOOLEAN"  # passes the gate
    assert final_out["parameters"]["bundle_uri"]["parameterType"] == "STRING"
    # the published bundle becomes the run's Model artifact through an importer (its URI is
    # the bundle's), which the gate's promote step takes
    importer = tasks["importer"]
    assert importer["inputs"]["parameters"]["uri"]["taskOutputParameter"] == {
        "outputParameterKey": "bundle_uri",
        "producerTask": "final",
    }
    importers = [
        e["importer"] for e in spec["deploymentSpec"]["executors"].values() if "importer" in e
    ]
    assert [i["typeSchema"]["schemaTitle"] for i in importers] == ["system.Model"]
    promote_in = spec["components"]["comp-promote"]["inputDefinitions"]["artifacts"]
    assert promote_in["model"]["artifactType"]["schemaTitle"] == "system.Model"

    # every image is the project's image, whose tag carries the pinned Ray
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ray_pin = next(d for d in project["dependencies"] if d.startswith("ray[")).split("==")[1]
    images = {
        e["container"]["image"]
        for e in spec["deploymentSpec"]["executors"].values()
        if "container" in e
    }
    assert images == {f"monolith-tune:{project['version']}-ray{ray_pin}"}
    overlay = yaml.safe_load((ROOT / "k8s/overlays/kubeflow/kustomization.yaml").read_text())
    assert overlay["images"][0]["newTag"] == f"{project['version']}-ray{ray_pin}"
    for executor in spec["deploymentSpec"]["executors"].values():
        if "importer" in executor:
            continue
        command = " ".join(executor["container"]["command"])
        assert "pip install" not in command  # the image has everything: nothing at run time

    # credentials only through Secrets, never values
    for secret in (ACCESS_KEY_ID, SECRET_ACCESS_KEY, "tok-4f1c9a0b7e"):
        assert secret not in text
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == {"exec-validate", "exec-tune", "exec-final", "exec-promote"}
    for name, conf in executors.items():
        secrets = {s["secretName"]: s for s in conf["secretAsEnv"]}
        assert {k["envVar"] for k in secrets["monolith-s3-pipeline"]["keyToEnv"]} == {
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        }
        if name in ("exec-tune", "exec-final"):
            assert secrets["monolith"]["keyToEnv"] == [
                {"envVar": "RAY_AUTH_TOKEN", "secretKey": "auth_token"}
            ]
        assert conf["configMapAsEnv"][0]["configMapName"] == "monolith-storage"
        assert conf["podMetadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    for executor in spec["deploymentSpec"]["executors"].values():
        for var in executor.get("container", {}).get("env", []):
            assert "KEY" not in var["name"] and "TOKEN" not in var["name"], var


def test_a_bad_config_fails_validation_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tune": {"num_samples": 0}}))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ray_jobs.pipeline_steps import one_line_errors, validate\n"
            "with one_line_errors():\n"
            f"    validate({str(bad)!r}, {str(ROOT)!r}, 'x', '', '', {str(tmp_path)!r}, 0)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        line for line in done.stderr.strip().splitlines() if line.startswith("error: ")
    ]
    assert "num_samples" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def kfp_cluster(s3_server):
    with cluster_with_s3(s3_server, BUCKET) as both:
        yield both


@pytest.mark.integration
@pytest.mark.slow
def test_local_runner_runs_validate_tune_final_gate_and_publishes(
    kfp_cluster, tmp_path: Path, monkeypatch
) -> None:
    from kfp import local

    from pipelines.monolith_pipeline import monolith_pipeline

    cluster, s3 = kfp_cluster
    config = tiny_config(tmp_path, samples=2, epochs=1, seed=5)
    cfg = yaml.safe_load(config.read_text())
    cfg["storage"] = {"addressing_style": "path", "region": "us-east-1"}
    cfg["final"] = {"epochs": 1, "num_workers": 2, "output": f"s3://{BUCKET}/bundles"}
    config.write_text(yaml.safe_dump(cfg))
    # The components' environment, as the Secrets and the ConfigMap give it on Kubernetes.
    for key, value in cluster.env().items():
        if key.startswith("RAY_AUTH"):
            monkeypatch.setenv(key, value)
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "kfp-root"),
        raise_on_error=True,
    )
    client = s3.client()

    run_pipeline = functools.partial(
        monolith_pipeline,
        ray_address=cluster.address,
        config=str(config),
        experiment="kfp",
        storage=f"s3://{BUCKET}/experiments",
        output=f"s3://{BUCKET}/bundles",
        num_samples=2,
        working_dir=str(ROOT),
    )
    run_pipeline(threshold=1e9)  # test_ref_ntxent (min): any trained encoder passes
    latest = json.loads(
        client.get_object(Bucket=BUCKET, Key="bundles/kfp/latest.json")["Body"].read()
    )
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert "experiments/kfp/results/best_config.json" in keys
    trials = {k.split("/")[3] for k in keys if k.startswith("experiments/kfp/tune/run_trial_")}
    assert len(trials) == 2

    # the local runner's outputs: the best config, the metrics, the model's URI
    root = tmp_path / "kfp-root"
    best = next(root.rglob("best_config"))
    published_best = client.get_object(
        Bucket=BUCKET, Key="experiments/kfp/results/best_config.json"
    )["Body"].read()
    assert json.loads(best.read_text()) == json.loads(published_best)

    def step_output(step: str) -> dict:
        return json.loads(next(root.rglob(f"{step}/executor_output.json")).read_text())

    tune_metrics = step_output("tune")["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert tune_metrics["trials"] == 2 and "best_objective" in tune_metrics
    final_metrics = step_output("final")["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert "test_ref_ntxent" in final_metrics

    env = {**s3.env, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    pulled = subprocess.run(
        [str(Path(sys.executable).parent / "monolith"), "pull",
         f"s3://{BUCKET}/bundles/kfp/latest", str(tmp_path / "pulled")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    assert latest["run_id"] in latest["uri"]
    from monolith.lineage import git_commit

    lineage = json.loads((tmp_path / "pulled" / "manifest.json").read_text())["lineage"]
    assert lineage["experiment"] == "kfp"
    assert lineage["git_commit"] == git_commit(ROOT)  # travelled with the Ray job
    # the final step says where the bundle went: the Model artifact the importer records
    # (and the gate promoted) is that published bundle
    bundle_uri = next(root.rglob("final/bundle_uri")).read_text()
    assert bundle_uri == f"s3://{BUCKET}/bundles/kfp/{latest['run_id']}" == latest["uri"]
    assert step_output("promote")["parameterValues"]["Output"] == bundle_uri

    # A threshold no encoder reaches: the same run (already published: nothing retrained)
    # is not promoted; latest.json stays as it was.
    client.delete_object(Bucket=BUCKET, Key="bundles/kfp/latest.json")
    run_pipeline(threshold=-1e9)
    left = {
        o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="bundles/kfp/")["Contents"]
    }
    assert "bundles/kfp/latest.json" not in left
    assert any(k.endswith(f"{latest['run_id']}/manifest.json") for k in left)


@pytest.mark.parametrize(
    ("experiment", "objective", "message"),
    [
        ("Q3 retune", "", "experiment = 'Q3 retune' is invalid"),
        ("ok", "test_ref_ntxnet", "gate objective = 'test_ref_ntxnet' is not reported"),
        ("ok", "test_probe_knn_views_lift", "gate objective = 'test_probe_knn_views_lift'"),
    ],
)
def test_validate_refuses_what_would_fail_after_training(tmp_path, experiment, objective, message):
    from monolith.errors import ConfigError
    from ray_jobs.pipeline_steps import validate

    config = tiny_config(tmp_path, samples=1, epochs=1, seed=1)
    with pytest.raises(ConfigError, match=message):
        validate(str(config), str(ROOT), experiment, "", str(tmp_path / "exp"),
                 str(tmp_path / "out"), 0, objective)  # fmt: skip
