"""Final job: train the best configuration on the cluster and publish a verified bundle.

best_config.json (a file, or a tune experiment's results; local or s3://)
    │  validated with the config, storage checked: before any cluster resource
    ▼
TensorflowTrainer(W workers, MultiWorkerMirroredStrategy, ray_jobs.worker loop)
    │  fixed epoch budget on train+val, checkpoint every epoch (a failed worker group
    │  resumes from the last), test-split metrics at the end
    ▼
rank 0 writes the bundle (manifest last) as the run's final checkpoint
    ▼
driver verifies it and publishes  <output>/<experiment>/<run_id>/  then  latest.json

python -m ray_jobs.train_final --config configs/local.yaml
    (--best-config PATH|s3://... | --experiment PATH|s3://...)
    [--output PATH|s3://bucket/prefix] [--run-id ID] [--create-bucket]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# Ray Train hands it from this driver to its controller: poll the workers every 0.25 s, not 2 s.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")

from monolith.config import MonolithConfig, _build, load_config  # noqa: E402
from monolith.errors import ConfigError, MonolithError, StorageError  # noqa: E402
from monolith.experiment import PREPARED, PREPARED_KEY_FILE, RESULTS_DIR  # noqa: E402
from monolith.uri import is_s3_uri, join, normalise  # noqa: E402

log = logging.getLogger("ray_jobs.train_final")

BUNDLE_DIR = "bundle"


@dataclass
class FinalSettings:
    """The config's ``final:`` section."""

    # Where bundles are published: a folder or s3://bucket/prefix.
    output: str = "runs/bundles"
    # Fixed epoch budget on train+val (no validation left to stop on); None = train.epochs.
    epochs: int | None = None
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    worker_max_failures: int = 3
    # Where the Train run keeps its checkpoints when no experiment is given.
    storage: str = "runs/final"

    def validate(self, where: str = "final") -> FinalSettings:
        for key, lo in (("num_workers", 1), ("worker_max_failures", 0)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                raise ConfigError(
                    f"{where}.{key} = {value!r} is invalid: expected an integer >= {lo}"
                )
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise ConfigError(f"{where}.epochs = {self.epochs!r} is invalid: expected >= 1 or null")
        if self.use_gpu and not self.gpus_per_worker:
            self.gpus_per_worker = 1.0
        if not self.use_gpu and self.gpus_per_worker:
            raise ConfigError(f"{where}.gpus_per_worker: set use_gpu: true to request GPUs")
        return self

    def resources_per_worker(self) -> dict[str, float]:
        out = {"CPU": float(self.cpus_per_worker)}
        if self.gpus_per_worker:
            out["GPU"] = float(self.gpus_per_worker)
        return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.train_final",
        description="Train the best config over W Ray Train workers on train+val, evaluate on "
        "the held-out test split, and publish the verified bundle.",
    )
    parser.add_argument("--config", required=True, help="config YAML (data, eval, final:)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--best-config", help="a best_config.json: a path or s3:// URI")
    source.add_argument(
        "--experiment", help="a tune experiment folder or s3:// URI (uses results/best_config.json)"
    )
    parser.add_argument("--output", help="publish under PATH or s3://bucket/prefix (final.output)")
    parser.add_argument("--run-id", help="run id (default: derived from the best config)")
    parser.add_argument("--name", help="experiment name in the published layout")
    parser.add_argument(
        "--create-bucket", action="store_true", help="create the output bucket if it is missing"
    )
    return parser


@dataclass
class Plan:
    cfg: MonolithConfig
    best: dict[str, Any]
    settings: FinalSettings
    storage: dict[str, Any]
    output: str
    experiment: str
    run_id: str
    train_root: str  # where the Train run checkpoints (and the prepared data, when new)
    prepared: str | None  # the experiment's prepared dataset, when there is one


def _storage_settings(storage: dict):
    from monolith.storage import StorageSettings

    return StorageSettings.from_mapping(storage)


def _read_best(uri: str, storage: dict) -> dict[str, Any]:
    from monolith.storage import read_json

    best = read_json(uri, _storage_settings(storage))
    if not isinstance(best, dict) or not best:
        raise ConfigError(f"{uri}: expected a JSON object of flat hyperparameters")
    return best


def plan(args: argparse.Namespace) -> Plan:
    from monolith.storage import check_access

    cfg = load_config(args.config)
    storage = dict(cfg.extra.get("storage") or {})
    settings = _build(FinalSettings, cfg.extra.get("final"), "final").validate()
    prepared = None
    if args.experiment:
        root = normalise(args.experiment, "--experiment")
        best_uri = join(root, RESULTS_DIR, "best_config.json")
        experiment = args.name or root.rsplit("/", 1)[-1]
        key = _read_optional(join(root, PREPARED_KEY_FILE), storage)
        if key is not None:
            prepared = key.get("prepared") or join(root, PREPARED)
        train_root = join(root, "final")
    else:
        best_uri = normalise(args.best_config, "--best-config")
        experiment = args.name or (cfg.extra.get("tune") or {}).get("name", "monolith-tune")
        train_root = join(normalise(settings.storage, "final.storage"), experiment)
    best = _read_best(best_uri, storage)
    try:
        cfg = cfg.with_hyperparameters(best)
    except ConfigError as exc:
        raise ConfigError(f"{best_uri}: {exc}") from None
    epochs = settings.epochs or cfg.train.epochs
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs)).validate()
    if cfg.train.batch_size % settings.num_workers:
        raise ConfigError(
            f"{best_uri}: batch_size = {cfg.train.batch_size} (global) does not split over "
            f"final.num_workers = {settings.num_workers}"
        )
    output = normalise(args.output or settings.output, "--output (final.output)")
    check_access(output, _storage_settings(storage), create_bucket=args.create_bucket)
    if is_s3_uri(train_root):
        check_access(train_root, _storage_settings(storage))
    digest = hashlib.sha256(
        json.dumps({"best": cfg.hyperparameters(), "epochs": epochs}, sort_keys=True).encode()
    ).hexdigest()[:12]
    run_id = args.run_id or f"final-{digest}"
    if prepared is None:
        from monolith.data.prepared import is_prepared_dataset
        from monolith.data.sources import resolve_sources

        store = _storage_settings(storage)
        if cfg.data.source != "synthetic" and not is_prepared_dataset(cfg.data.source, store):
            resolve_sources(cfg.data.source, store)
    return Plan(cfg, best, settings, storage, output, experiment, run_id, train_root, prepared)


def _read_optional(uri: str, storage: dict) -> dict | None:
    from monolith.storage import read_json

    if not is_s3_uri(uri):
        return json.loads(Path(uri).read_text()) if Path(uri).is_file() else None
    try:
        return read_json(uri, _storage_settings(storage))
    except StorageError:
        return None


def already_published(p: Plan) -> str | None:
    """The bundle URI when this run id is already published and verifies; else None."""
    from monolith.storage import StorageError as _SE
    from monolith.storage import pull_bundle

    uri = join(p.output, p.experiment, p.run_id)
    if _read_optional(join(uri, "manifest.json"), p.storage) is None:
        return None
    with tempfile.TemporaryDirectory(prefix="monolith-verify-") as tmp:
        try:
            pull_bundle(uri, Path(tmp, "b"), _storage_settings(p.storage))
        except (_SE, MonolithError):
            return None
    return uri


# ---- rank 0's last step, called by ray_jobs.worker ------------------------------------


def write_final_bundle(
    result: Any, cfg: MonolithConfig, prepared: str, final: dict, settings: Any = None
) -> None:
    """Rank 0: write the bundle and report it as the run's last checkpoint.

    Every worker reports once more (Ray Train's report is collective); rank 0's report
    carries the bundle, which the driver then verifies and publishes.
    """
    import ray.train

    from monolith.training import bundle_result

    with tempfile.TemporaryDirectory(prefix="monolith-final-") as tmp:
        bundle = Path(tmp, BUNDLE_DIR)
        bundle_result(
            result,
            cfg,
            prepared,
            bundle,
            extra_json={"best_config.json": final["best"]},
            settings=settings,
        )
        metrics = {k: float(v) for k, v in result.test_metrics.items()}
        metrics.update(epoch=len(result.rows), final=1, **embedding_fingerprint(result))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


FINGERPRINT_WINDOWS = 128


def embedding_fingerprint(result: Any) -> dict[str, float]:
    """Summary of the trained model's latent embeddings of the first test windows, so a
    consumer can check that a pulled bundle embeds exactly as the model that was trained."""
    import numpy as np

    from monolith.model.build import encoder_from

    features, _ = result.source.arrays("test", FINGERPRINT_WINDOWS)
    latent = np.asarray(encoder_from(result.trainer.model)(features, training=False))
    return {
        "embedding_sum": float(latent.astype(np.float64).sum()),
        "embedding_abs_sum": float(np.abs(latent.astype(np.float64)).sum()),
    }


def final_report_others(result: Any) -> None:
    import ray.train

    metrics = {k: float(v) for k, v in result.test_metrics.items()}
    ray.train.report({**metrics, "epoch": len(result.rows), "final": 1}, checkpoint=None)


# ---- the job ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    p = plan(args)
    done = already_published(p)
    if done:
        print(f"run {p.run_id} is already published and verifies: {done} (nothing to do)")
        return 0
    import ray.train
    from ray.train.tensorflow import TensorflowTrainer

    from monolith.experiment import prepare_for_experiment
    from monolith.filesystems import storage_filesystem
    from monolith.storage import publish_bundle
    from ray_jobs import worker
    from ray_jobs._ray import check_capacity, connect
    from ray_jobs.prepare import RayGroupRunner

    need = {k: v * p.settings.num_workers for k, v in p.settings.resources_per_worker().items()}
    connect(local_cpus=max(os.cpu_count() or 1, math.ceil(need["CPU"])))
    check_capacity(need, f"the final job ({p.settings.num_workers} workers)")
    prepared = p.prepared or prepare_for_experiment(
        p.cfg, p.train_root, p.storage, runner=RayGroupRunner()
    )
    fs, path = storage_filesystem(p.train_root, _storage_settings(p.storage))
    trainer = TensorflowTrainer(
        worker.train_loop_per_worker,
        train_loop_config={
            **p.cfg.hyperparameters(),
            worker.BASE_CONFIG_KEY: p.cfg.to_dict(),
            worker.PREPARED_KEY: prepared,
            worker.STORAGE_KEY: p.storage,
            worker.FINAL_KEY: {"best": p.best, "run_id": p.run_id},
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=p.settings.num_workers,
            use_gpu=p.settings.use_gpu,
            resources_per_worker=p.settings.resources_per_worker(),
        ),
        run_config=ray.train.RunConfig(
            name=p.run_id,
            storage_path=path,
            storage_filesystem=fs,
            failure_config=ray.train.FailureConfig(max_failures=p.settings.worker_max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise MonolithError("the final run ended without a bundle checkpoint")
    with tempfile.TemporaryDirectory(prefix="monolith-publish-") as tmp:
        local = Path(result.checkpoint.to_directory(tmp))
        bundle = local / BUNDLE_DIR
        if not (bundle / "manifest.json").is_file():
            raise MonolithError(f"the final checkpoint {result.checkpoint.path} holds no bundle")
        from monolith.artifacts import verify_bundle

        verify_bundle(bundle)
        uri = publish_bundle(
            bundle,
            p.output,
            p.experiment,
            p.run_id,
            _storage_settings(p.storage),
            create_bucket=args.create_bucket,
        )
        test_metrics = json.loads((bundle / "test_metrics.json").read_text())
    fingerprint = {k: v for k, v in result.metrics.items() if k.startswith("embedding_")}
    print("FINAL_RESULT " + json.dumps({"uri": uri, "run_id": p.run_id, **fingerprint}))
    print(f"published {uri} (latest: {join(p.output, p.experiment, 'latest.json')})")
    for key in sorted(test_metrics):
        print(f"  {key:<36} {test_metrics[key]:+.4f}")
    print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    from ray_jobs._ray import run_entrypoint

    return run_entrypoint(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
