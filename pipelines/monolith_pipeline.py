"""The Kubeflow pipeline ``monolith-tune-and-publish``: validate -> tune -> final -> gate.

Each component is a small function run in the project image (the one every Ray pod runs,
so the code the steps import is the code the jobs run); the work itself happens on the
RayCluster, submitted through the Ray Jobs API by ``ray_jobs/pipeline_steps.py``:

    validate  config, search space, data source, storage, publish destination: fails
              before any Ray resource is asked for
    tune      the tune job (Ray Tune + OptunaSearch over Ray Train trials); outputs
              best_config.json (Artifact) and Metrics (best objective, trials, stop reasons)
    final     the final job on the best config, published WITHOUT touching latest.json;
              outputs the test metrics and where the bundle went; an importer then makes
              it the run's Model artifact (its URI is the published bundle)
    gate      dsl.If the test objective passes `threshold`: promote the run (latest.json)

Credentials never travel as parameters: the S3 keys and the Ray token come from Kubernetes
Secrets (kfp-kubernetes), the endpoint from the ``monolith-storage`` ConfigMap.

Compile: ``make kfp-compile`` (writes pipelines/monolith-tune-and-publish.yaml). Set
MONOLITH_IMAGE to the image your cluster pulls (default: the tag ``make image`` builds).
"""

# No `from __future__ import annotations`: kfp reads the component signatures' real types.
import os
import tomllib
from pathlib import Path

from kfp import dsl, kubernetes
from kfp.dsl import Artifact, Input, Metrics, Model, Output

ROOT = Path(__file__).resolve().parent.parent
PIPELINE_NAME = "monolith-tune-and-publish"


def default_image() -> str:
    """monolith-tune:<project version>-ray<pinned Ray>: the tag ``make image`` builds."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ray = next(d for d in project["dependencies"] if d.startswith("ray["))
    return f"monolith-tune:{project['version']}-ray{ray.split('==')[1]}"


IMAGE = os.environ.get("MONOLITH_IMAGE") or default_image()
# The Secret with the S3 account (keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): README,
# "Run on Kubeflow Pipelines", creates it from the same env file as the Ray pods' Secret.
S3_SECRET = os.environ.get("MONOLITH_S3_SECRET", "monolith-s3-pipeline")
# The Secret KubeRay generates for a token-auth RayCluster: named after the cluster.
RAY_TOKEN_SECRET = os.environ.get("MONOLITH_RAY_TOKEN_SECRET", "monolith")
STORAGE_CONFIG_MAP = "monolith-storage"


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate(
    config: str,
    working_dir: str,
    experiment: str,
    run_id: str,
    data_source: str,
    storage: str,
    output: str,
    num_samples: int,
    objective: str,
) -> str:
    """Everything the jobs need, checked before Ray is asked for anything; returns the
    experiment's name."""
    from ray_jobs.pipeline_steps import experiment_name, one_line_errors
    from ray_jobs.pipeline_steps import validate as check

    with one_line_errors():
        name = experiment_name(experiment, run_id)
        check(config, working_dir, name, data_source, storage, output, num_samples, objective)
    print(f"valid: experiment {name}, config {config}")
    return name


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def tune(
    ray_address: str,
    config: str,
    working_dir: str,
    experiment: str,
    data_source: str,
    storage: str,
    num_samples: int,
    best_config: Output[Artifact],
    metrics: Output[Metrics],
) -> str:
    """The tune job on the RayCluster; returns the experiment's URI."""
    import json

    from ray_jobs.pipeline_steps import one_line_errors
    from ray_jobs.pipeline_steps import tune as run_tune

    with one_line_errors():
        root, best, summary = run_tune(
            ray_address, config, working_dir, experiment, data_source, storage, num_samples
        )
    with open(best_config.path, "w") as f:
        json.dump(best, f, indent=2, sort_keys=True)
    best_config.metadata["experiment"] = root
    for key, value in summary.items():
        metrics.log_metric(key, value)
    return root


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def final(
    ray_address: str,
    config: str,
    working_dir: str,
    experiment_uri: str,
    experiment: str,
    output: str,
    objective: str,
    threshold: float,
    metrics: Output[Metrics],
    bundle_uri: dsl.OutputPath(str),
) -> bool:
    """The final job; writes where the bundle was published (not yet latest) and returns
    whether its test objective passes ``threshold`` (the gate's condition)."""
    from ray_jobs.pipeline_steps import final as run_final
    from ray_jobs.pipeline_steps import one_line_errors

    with one_line_errors():
        done = run_final(
            ray_address,
            config,
            working_dir,
            experiment_uri,
            experiment,
            output,
            objective,
            threshold,
        )
    with open(bundle_uri, "w") as f:
        f.write(done.bundle_uri)
    import math

    for key, value in done.test_metrics.items():
        if math.isfinite(value):  # a diverged run's NaN is not JSON the backend can read
            metrics.log_metric(key, value)
    verdict = "passes" if done.passes else "does not pass"
    print(f"{done.objective} = {done.value:.4f} {verdict} the threshold {threshold}")
    return done.passes


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote(
    config: str, working_dir: str, output: str, experiment: str, model: Input[Model]
) -> str:
    """The gate's action: latest.json -> the verified run ``model`` is; returns its URI."""
    from ray_jobs.pipeline_steps import one_line_errors
    from ray_jobs.pipeline_steps import promote as run_promote

    run_id = model.uri.rstrip("/").rsplit("/", 1)[-1]  # <output>/<experiment>/<run_id>
    with one_line_errors():
        uri = run_promote(config, working_dir, output, experiment, run_id)
    print(f"promoted {uri}")
    return uri


def _storage_env(task: dsl.PipelineTask) -> dsl.PipelineTask:
    kubernetes.use_secret_as_env(
        task,
        secret_name=S3_SECRET,
        secret_key_to_env={
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        },
    )
    kubernetes.use_config_map_as_env(
        task,
        config_map_name=STORAGE_CONFIG_MAP,
        config_map_key_to_env={
            "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
            "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION",
        },
    )
    # MinIO's NetworkPolicy admits pods of this application; like the Ray pods, the steps
    # stay out of the Istio mesh (MinIO and the Ray head are outside it).
    kubernetes.add_pod_label(task, "app.kubernetes.io/part-of", "monolith")
    kubernetes.add_pod_annotation(task, "sidecar.istio.io/inject", "false")
    # A retune on new data must run again, not come back from KFP's cache.
    task.set_caching_options(False)
    return task


def _ray_env(task: dsl.PipelineTask) -> dsl.PipelineTask:
    _storage_env(task)
    kubernetes.use_secret_as_env(
        task, secret_name=RAY_TOKEN_SECRET, secret_key_to_env={"auth_token": "RAY_AUTH_TOKEN"}
    )
    task.set_env_variable("RAY_AUTH_MODE", "token")
    # The step only submits and follows a Ray job: the work runs on the RayCluster.
    task.set_cpu_request("250m").set_cpu_limit("1").set_memory_request("1G")
    task.set_memory_limit("2G")
    return task


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Tune the MonolithModel on a RayCluster (Ray Tune + OptunaSearch over Ray "
    "Train trials), train the best config, publish the verified bundle, and mark it latest "
    "only when its test objective passes the threshold.",
)
def monolith_pipeline(
    threshold: float,
    ray_address: str = "http://monolith-head-svc:8265",
    config: str = "configs/cluster.yaml",
    data_source: str = "",
    experiment: str = "",
    storage: str = "",
    output: str = "",
    num_samples: int = 0,
    objective: str = "",
    working_dir: str = "/home/ray/monolith",
) -> None:
    """Parameters (empty or 0 = the config's own value):

    threshold    the gate: the test objective must be <= (a loss) or >= (a lift) this
    ray_address  the RayCluster's dashboard URL (the Ray Jobs API)
    config       a config YAML inside the image's repository (working_dir)
    data_source  market data: s3://bucket/prefix/, a glob, hive-partitioned Parquet
    experiment   the experiment's name; empty: one per pipeline run (recurring runs)
    storage      experiment storage, s3://bucket/prefix (tune.storage)
    output       where bundles are published, s3://bucket/prefix (final.output)
    num_samples  trials (tune.num_samples)
    objective    the gate's test metric (default: the tuning objective's test_ twin)
    working_dir  the repository in the image, uploaded with each Ray job
    """
    checked = _storage_env(
        validate(
            config=config,
            working_dir=working_dir,
            experiment=experiment,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            data_source=data_source,
            storage=storage,
            output=output,
            num_samples=num_samples,
            objective=objective,
        )
    ).set_display_name("validate")
    tuned = _ray_env(
        tune(
            ray_address=ray_address,
            config=config,
            working_dir=working_dir,
            experiment=checked.output,
            data_source=data_source,
            storage=storage,
            num_samples=num_samples,
        )
    ).set_display_name("tune")
    trained = _ray_env(
        final(
            ray_address=ray_address,
            config=config,
            working_dir=working_dir,
            experiment_uri=tuned.outputs["Output"],
            experiment=checked.output,
            output=output,
            objective=objective,
            threshold=threshold,
        )
    ).set_display_name("final")
    # The published bundle as the run's Model artifact: its URI is the bundle itself (an
    # importer records an existing object; an output artifact would be uploaded under the
    # pipeline root instead).
    bundle = dsl.importer(
        artifact_uri=trained.outputs["bundle_uri"],
        artifact_class=Model,
        reimport=True,
        metadata={"framework": "keras", "format": "monolith bundle (manifest.json)"},
    ).set_display_name("model")
    with dsl.If(trained.outputs["Output"] == True, name="passes-threshold"):  # noqa: E712
        _storage_env(
            promote(
                config=config,
                working_dir=working_dir,
                output=output,
                experiment=checked.output,
                model=bundle.output,
            )
        ).set_display_name("gate: promote")


def compile_pipeline(path: str | Path) -> Path:
    """Write the compiled pipeline (KFP v2 IR YAML, platform spec included)."""
    from kfp import compiler

    path = Path(path)
    compiler.Compiler().compile(monolith_pipeline, str(path))
    return path


if __name__ == "__main__":
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "pipelines" / f"{PIPELINE_NAME}.yaml")
    print(f"compiled {compile_pipeline(target)} (image {IMAGE})")
