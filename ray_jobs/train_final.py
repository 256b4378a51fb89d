"""Final job: train the best configuration on the cluster and publish a verified bundle.

best_config.json (a file, or a tune experiment's results; local or s3://)
    │  validated with the config, storage checked: before any cluster resource
    ▼
ray_jobs.train_adapter.launch (W workers, MultiWorkerMirroredStrategy)
    │  fixed epoch budget on train+val, checkpoint every epoch (a failed worker group
    │  resumes from the last), test-split metrics at the end
    ▼
rank 0 writes the bundle (manifest last) as the run's final checkpoint
    ▼
driver verifies it and publishes  <output>/<experiment>/<run_id>/  then  latest.json

A re-run of a run id that was trained but not published (the publish failed, the bucket was
emptied, another --output) publishes the bundle it already trained, once it verifies; one that
does not verify is trained again from scratch.

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

from monolith.bundle.schema import BEST_CONFIG_FILE, MANIFEST_FILE  # noqa: E402
from monolith.config import MonolithConfig, build_section, load_config  # noqa: E402
from monolith.errors import ConfigError, MonolithError, StorageError  # noqa: E402
from monolith.experiment import PREPARED, PREPARED_KEY_FILE, RESULTS_DIR  # noqa: E402
from monolith.training import FINGERPRINT_FILE  # noqa: E402
from monolith.uri import is_s3_uri, join, normalise  # noqa: E402

log = logging.getLogger("ray_jobs.train_final")
# The one line a caller (a pipeline step, a test) reads the published bundle from.
FINAL_PREFIX = "FINAL_RESULT "


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
    # Ray Train's preemption watcher (see tune.watch_preemption).
    watch_preemption: bool = True

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
    parser.add_argument(
        "--data-source",
        help="market data when there is no experiment's prepared dataset (default: data.source)",
    )
    parser.add_argument(
        "--no-latest",
        action="store_true",
        help="publish the verified bundle but leave <experiment>/latest.json as it is (a "
        "pipeline's gate promotes it: monolith promote)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="stream the workers' and Ray's logs to this console (default: a line per epoch "
        "here, the worker logs under <experiment>/final/logs/)",
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
    best_uri: str = ""
    experiment_uri: str | None = None  # the tune experiment (--experiment)


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
    if args.data_source:
        cfg.data.source = args.data_source
    storage = dict(cfg.extra.get("storage") or {})
    settings = build_section(FinalSettings, cfg.extra.get("final"), "final").validate()
    prepared = None
    if args.experiment:
        root = normalise(args.experiment, "--experiment")
        best_uri = join(root, RESULTS_DIR, BEST_CONFIG_FILE)
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
    from monolith.data.precheck import check_can_train

    # Before Ray: the dataset (the experiment's, or the one cfg.data prepares into) must hold
    # one global batch of the best config per split.
    check_can_train(cfg.data, cfg.train.batch_size, _storage_settings(storage), prepared)
    return Plan(
        cfg,
        best,
        settings,
        storage,
        output,
        experiment,
        run_id,
        train_root,
        prepared,
        best_uri,
        root if args.experiment else None,
    )


def _read_optional(uri: str, storage: dict) -> dict | None:
    from monolith.storage import read_json

    if not is_s3_uri(uri):
        return json.loads(Path(uri).read_text()) if Path(uri).is_file() else None
    try:
        return read_json(uri, _storage_settings(storage))
    except StorageError:
        return None


def already_published(p: Plan) -> tuple[str, dict[str, Any]] | None:
    """The bundle URI and its embedding fingerprint when this run id is already published
    and verifies; else None."""
    from monolith.bundle import pull_bundle

    uri = join(p.output, p.experiment, p.run_id)
    if _read_optional(join(uri, MANIFEST_FILE), p.storage) is None:
        return None
    with tempfile.TemporaryDirectory(prefix="monolith-verify-") as tmp:
        try:
            pulled = pull_bundle(uri, Path(tmp, "b"), _storage_settings(p.storage))
        except (StorageError, MonolithError):
            return None
        return uri, _fingerprint(pulled)


def _fingerprint(bundle: Path) -> dict[str, Any]:
    record = json.loads((bundle / FINGERPRINT_FILE).read_text())
    return {k: v for k, v in record.items() if k.startswith("embedding_")}


# ---- the job ---------------------------------------------------------------------------


def _epoch_line(total: int) -> Any:
    """The console line of each report of the final run (rank 0's figures)."""
    from ray_jobs.console import say

    def show(metrics: dict[str, Any]) -> None:
        if metrics.get("final"):
            say(f"  test split scored; bundle written ({metrics.get('epoch', '?')} epochs)")
            return
        say(
            f"  epoch {int(metrics.get('epoch', 0))}/{total}: loss {metrics.get('loss', float('nan')):.4f}, "
            f"val_ref_ntxent {metrics.get('val_ref_ntxent', float('nan')):.4f} (in-sample: val "
            f"is trained on), {metrics.get('epoch_seconds', 0.0):.1f} s"
        )

    return show


def _trained_bundle(p: Plan, place: Any, tmp: Path) -> Path | None:
    """The bundle an earlier attempt of this run id trained, verified, in ``tmp``; None when
    there is none. One that fails verification is dropped with its run, to train afresh."""
    from monolith.bundle import verify_bundle
    from monolith.storage import download_directory
    from ray_jobs.console import say
    from ray_jobs.train_adapter import BUNDLE_DIR, completed_bundle, forget_run

    uri = completed_bundle(place, p.storage)
    if uri is None:
        return None
    local = tmp / "earlier" / BUNDLE_DIR
    try:
        download_directory(uri, local, _storage_settings(p.storage))
        verify_bundle(local)
    except MonolithError as exc:
        say(f"  run {p.run_id}: the bundle an earlier attempt trained does not verify ({exc}); "
            "training it again")  # fmt: skip
        forget_run(place, p.storage)
        return None
    say(f"  run {p.run_id} was trained before ({uri}) but is not at its destination: "
        "publishing that bundle")  # fmt: skip
    return local


def _lineage(p: Plan, prepared: str) -> dict[str, Any]:
    """Where the bundle comes from, for its manifest."""
    from monolith.lineage import git_commit

    key = _read_optional(join(p.experiment_uri or p.train_root, PREPARED_KEY_FILE), p.storage)
    return {
        "experiment": p.experiment,
        "experiment_uri": p.experiment_uri,
        "best_config": p.best_uri,
        "run_id": p.run_id,
        "prepared": prepared,
        # what the dataset was prepared from (a tune experiment's own source, not the config's)
        "data_source": ((key or {}).get("data") or {}).get("source", p.cfg.data.source),
        "data_fingerprint": (key or {}).get("key"),
        "git_commit": git_commit(),
    }


def _train(p: Plan, args: argparse.Namespace, place: Any, tmp: Path) -> Path:
    """Train the run over its workers; its bundle (the run's last checkpoint)."""
    from monolith.experiment import LOGS_DIR, prepare_for_experiment
    from ray_jobs.console import say
    from ray_jobs.prepare import RayGroupRunner
    from ray_jobs.train_adapter import BUNDLE_DIR, FinalSpec, JobSpec, Resources, launch

    prepared = p.prepared or prepare_for_experiment(
        p.cfg, p.train_root, p.storage, runner=RayGroupRunner()
    )
    s = p.settings
    spec = JobSpec(
        task="final",
        base_config=p.cfg.to_dict(),
        prepared=prepared,
        storage=p.storage,
        final=FinalSpec(best=dict(p.best), run_id=p.run_id, lineage=_lineage(p, prepared)),
        logs=None if args.verbose else join(p.train_root, LOGS_DIR),
    )
    resources = Resources(
        num_workers=s.num_workers,
        per_worker=s.resources_per_worker(),
        use_gpu=s.use_gpu,
        max_failures=s.worker_max_failures,
        watch_preemption=s.watch_preemption,
    )
    if not args.verbose:
        say(f"  worker logs: {join(p.train_root, LOGS_DIR, p.run_id)}/")
    result = launch(
        spec, resources, place, p.cfg.hyperparameters(), progress=_epoch_line(p.cfg.train.epochs)
    )
    if result.checkpoint is None:
        raise MonolithError("the final run ended without a bundle checkpoint")
    local = Path(result.checkpoint.to_directory(str(tmp / "trained")))
    if not (local / BUNDLE_DIR / MANIFEST_FILE).is_file():
        raise MonolithError(f"the final checkpoint {result.checkpoint.path} holds no bundle")
    return local / BUNDLE_DIR


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    from ray_jobs.console import quiet, say

    quiet(args.verbose)
    p = plan(args)
    done = already_published(p)
    if done:
        uri, fingerprint = done
        print(FINAL_PREFIX + json.dumps({"uri": uri, "run_id": p.run_id, **fingerprint}))
        say(f"run {p.run_id} is already published and verifies: {uri} (nothing to do)")
        return 0
    from monolith.bundle import publish_bundle, verify_bundle
    from ray_jobs._ray import check_capacity, connect
    from ray_jobs.train_adapter import RunPlace

    need = {k: v * p.settings.num_workers for k, v in p.settings.resources_per_worker().items()}
    connect(local_cpus=max(os.cpu_count() or 1, math.ceil(need["CPU"])), log_to_driver=args.verbose)
    check_capacity(need, f"the final job ({p.settings.num_workers} workers)")
    say(
        f"final run {p.run_id}: {p.cfg.train.epochs} epochs on train+val over "
        f"{p.settings.num_workers} worker(s), then the test split; publish to "
        f"{join(p.output, p.experiment, p.run_id)}"
    )
    place = RunPlace(p.run_id, p.train_root, keep_checkpoints=2)
    with tempfile.TemporaryDirectory(prefix="monolith-publish-") as tmp:
        bundle = _trained_bundle(p, place, Path(tmp))
        if bundle is None:
            bundle = _train(p, args, place, Path(tmp))
        verify_bundle(bundle)
        uri = publish_bundle(
            bundle,
            p.output,
            p.experiment,
            p.run_id,
            _storage_settings(p.storage),
            create_bucket=args.create_bucket,
            set_latest=not args.no_latest,
        )
        test_metrics = json.loads((bundle / "test_metrics.json").read_text())
        fingerprint = _fingerprint(bundle)
    print(FINAL_PREFIX + json.dumps({"uri": uri, "run_id": p.run_id, **fingerprint}))
    if args.no_latest:
        say(f"published {uri} (latest.json left as it was: --no-latest)")
    else:
        say(f"published {uri} (latest: {join(p.output, p.experiment, 'latest.json')})")
    for line in _test_lines(test_metrics):
        say(line)
    say(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


def _test_lines(metrics: dict[str, float]) -> list[str]:
    """The test metrics a person reads: the reference loss and geometry, then one line per
    probe (score, baselines, lift); all of them are in the bundle's test_metrics.json."""
    lines = [
        "  test "
        + ", ".join(
            f"{k.removeprefix('test_')} {metrics[k]:.4f}"
            for k in ("test_ref_ntxent", "test_alignment", "test_uniformity")
            if k in metrics
        )
    ]
    probes = sorted(
        k.removeprefix("test_probe_").removesuffix("_raw")
        for k in metrics
        if k.startswith("test_probe_") and k.endswith("_raw") and "_lift" not in k
    )
    if probes:
        lines.append(f"  {'probe':<16} {'score':>7} {'untrained':>9} {'raw':>7} {'lift':>7}")
    for p in probes:
        get = lambda suffix, p=p: metrics.get(f"test_probe_{p}{suffix}", float("nan"))  # noqa: E731
        lines.append(
            f"  {p:<16} {get(''):7.4f} {get('_random'):9.4f} {get('_raw'):7.4f} {get('_lift'):+7.4f}"
        )
    if "test_probe_mean_lift" in metrics:
        lines.append(
            f"  mean probe lift {metrics['test_probe_mean_lift']:+.4f} (test_metrics.json: all)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    from ray_jobs._ray import run_entrypoint

    return run_entrypoint(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
