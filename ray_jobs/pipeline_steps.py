"""What each step of the Kubeflow pipeline does, as plain functions (no kfp here).

``pipelines/monolith_pipeline.py`` wraps each in a component that runs in the project image;
this module is the code behind them, importable and testable without a Pipelines backend:

- ``validate``: the tune job's own ``plan()`` (config, search space, data source, storage)
  and the publish destination's access, before any Ray resource is asked for;
- ``tune`` / ``final``: the tune and final jobs submitted to the RayCluster through the Ray
  Jobs API (``jobs_client``), then their results read back from experiment storage;
- ``promote``: the gate's action, ``latest.json`` pointed at the verified run.

Every error a user can act on is one ``error: ...`` line and exit status 2 (the component's
log shows that line, not a traceback).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from monolith.errors import ConfigError, MonolithError


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """A MonolithError becomes ``error: ...`` on stderr and exit status 2."""
    try:
        yield
    except MonolithError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


@contextlib.contextmanager
def _inside(working_dir: str) -> Iterator[None]:
    """Relative config paths (configs/..., the search space) resolve against the repository."""
    before = os.getcwd()
    try:
        os.chdir(working_dir)
    except OSError as exc:
        raise ConfigError(f"working_dir = {working_dir!r}: {exc.strerror}") from None
    try:
        yield
    finally:
        os.chdir(before)


def _storage(config: str) -> tuple[dict[str, Any], Any]:
    from monolith.config import load_config
    from monolith.storage import StorageSettings

    section = dict(load_config(config).storage)
    return section, StorageSettings.from_mapping(section)


def experiment_name(experiment: str, run_id: str) -> str:
    """The experiment's name: the parameter, or one per pipeline run when it is empty (a
    recurring run then starts a new experiment each time instead of resuming the last)."""
    if experiment:
        return experiment
    slug = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")[:40] or "run"
    return f"monolith-{slug}"


def _tune_args(
    config: str, experiment: str, data_source: str, storage: str, num_samples: int
) -> list[str]:
    args = ["--config", config, "--name", experiment, "--auto-resume"]
    if storage:
        args += ["--storage", storage]
    if num_samples > 0:
        args += ["--num-samples", str(num_samples)]
    if data_source:
        args += ["--data-source", data_source]
    return args


def validate(
    config: str,
    working_dir: str,
    experiment: str,
    data_source: str,
    storage: str,
    output: str,
    num_samples: int,
    objective: str = "",
) -> str:
    """Check everything the tune and final jobs will need (the gate's objective and the
    publish destination included); returns the tune storage root."""
    from monolith.bundle.schema import check_segment
    from monolith.storage import check_access
    from monolith.uri import normalise
    from ray_jobs import tune as tune_job

    check_segment("experiment", experiment)  # a path segment of the published layout
    with _inside(working_dir):
        gate_objective(config, objective)
        args = tune_job.build_parser().parse_args(
            _tune_args(config, experiment, data_source, storage, num_samples)
        )
        plan = tune_job.plan(args)
        _, settings = _storage(config)
        final = _final_output(config)
        target = normalise(output or final or "", "output (final.output)")
        check_access(target, settings)
    return plan.root.rsplit("/", 1)[0]


def tune(
    ray_address: str,
    config: str,
    working_dir: str,
    experiment: str,
    data_source: str,
    storage: str,
    num_samples: int,
) -> tuple[str, dict[str, Any], dict[str, float]]:
    """Run the tune job; returns the experiment's URI, best_config and summary metrics."""
    from monolith.bundle.schema import BEST_CONFIG_FILE
    from monolith.experiment import RESULTS_DIR
    from monolith.results_files import SUMMARY_FILE
    from monolith.storage import read_json
    from monolith.uri import join
    from ray_jobs.jobs_client import run_job

    with _inside(working_dir):
        tune_storage = validate(config, ".", experiment, data_source, storage, "", num_samples)
        _, settings = _storage(config)
    entry = ["python", "-m", "ray_jobs.tune"]
    entry += _tune_args(config, experiment, data_source, storage, num_samples)
    run_job(ray_address, entry, working_dir, name="tune")
    root = join(tune_storage, experiment)
    summary = read_json(join(root, RESULTS_DIR, SUMMARY_FILE), settings)
    best = read_json(join(root, RESULTS_DIR, BEST_CONFIG_FILE), settings)
    metrics = {
        "best_objective": float(summary["best_objective"]),
        "best_trial": float(summary["best_trial"]),
        "trials": float(summary["trials"]),
    }
    for reason, count in summary.get("stop_reasons", {}).items():
        key = re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_")
        metrics[f"stopped_{key}"] = float(count)
    return root, best, metrics


@dataclass(frozen=True)
class FinalOutcome:
    bundle_uri: str
    run_id: str
    manifest_sha256: str
    test_metrics: dict[str, float]
    objective: str
    value: float
    passes: bool


def gate_objective(config: str, objective: str) -> tuple[str, str]:
    """The test metric the gate compares and its mode (``min``/``max``); by default the
    tuning objective's test counterpart (``val_ref_ntxent`` -> ``test_ref_ntxent``)."""
    from monolith.config import OBJECTIVES, load_config

    evaluation = load_config(config).eval
    name = objective or "test_" + evaluation.objective.removeprefix("val_")
    val_name = "val_" + name.removeprefix("test_")
    allowed = evaluation.objectives()  # what this config's probes report
    if not name.startswith("test_") or val_name not in allowed:
        tests = sorted("test_" + k.removeprefix("val_") for k in allowed)
        raise ConfigError(f"gate objective = {name!r} is not reported: allowed values {tests}")
    return name, OBJECTIVES[val_name]


def final(
    ray_address: str,
    config: str,
    working_dir: str,
    experiment_uri: str,
    experiment: str,
    output: str,
    objective: str,
    threshold: float,
) -> FinalOutcome:
    """Run the final job (published without touching latest.json); returns where the
    bundle went, its test metrics, and whether the gate's objective passes ``threshold``."""
    from monolith.bundle.schema import MANIFEST_FILE
    from monolith.filesystems import read_bytes
    from monolith.storage import read_json
    from monolith.uri import join
    from ray_jobs.jobs_client import JobFailed, run_job
    from ray_jobs.train_final import FINAL_PREFIX

    with _inside(working_dir):
        name, mode = gate_objective(config, objective)
        _, settings = _storage(config)
    entry = ["python", "-m", "ray_jobs.train_final", "--config", config]
    entry += ["--experiment", experiment_uri, "--name", experiment, "--no-latest"]
    if output:
        entry += ["--output", output]
    outcome = run_job(ray_address, entry, working_dir, name="final")
    line = outcome.result_line(FINAL_PREFIX)
    if line is None:
        raise JobFailed(f"final: Ray job {outcome.job_id} printed no {FINAL_PREFIX.strip()} line")
    result = json.loads(line)
    uri = result["uri"]
    metrics = {k: float(v) for k, v in read_json(join(uri, "test_metrics.json"), settings).items()}
    manifest = read_bytes(join(uri, MANIFEST_FILE), settings)
    if name not in metrics:
        raise ConfigError(
            f"gate objective {name!r} is not among the test metrics {sorted(metrics)}"
        )
    value = metrics[name]
    passes = value <= threshold if mode == "min" else value >= threshold
    sha = hashlib.sha256(manifest).hexdigest()
    return FinalOutcome(uri, result["run_id"], sha, metrics, name, value, passes)


def promote(config: str, working_dir: str, output: str, experiment: str, run_id: str) -> str:
    """Point ``<output>/<experiment>/latest.json`` at the verified run; returns its URI."""
    from monolith.bundle import promote_bundle
    from monolith.uri import normalise

    with _inside(working_dir):
        _, settings = _storage(config)
        final_output = _final_output(config)
    dest = normalise(output or final_output or "", "output (final.output)")
    return promote_bundle(dest, experiment, run_id, settings)


def _final_output(config: str) -> str:
    from monolith.config import load_config

    return load_config(config).final.output
