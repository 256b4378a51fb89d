"""Tune job: search the MonolithModel's hyperparameters with Ray Tune.

    config + search space ──validate──▶ dataset prepared once under the experiment
        │
        ▼
    Tuner(OptunaSearch(TPE, warm start = trial 1), ASHA on per-epoch reports)
        │  one trial = a driver function (small CPU share) ...
        ▼
    TensorflowTrainer(ScalingConfig(num_workers=W)) ── W workers, MultiWorkerMirroredStrategy,
        │                                             ray_jobs.worker.train_loop_per_worker
        ▼
    results/: best_config.json, trials.csv, optuna.db, summary.txt

    python -m ray_jobs.tune --config configs/local.yaml [--name N] [--num-samples N]
                            [--storage PATH|s3://...] [--resume]

Everything the experiment needs is validated before Ray is asked for resources.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before Ray is imported: the V2 Train API (the one that runs inside Tune trials), and a
# frequent experiment snapshot so a killed driver loses at most a few seconds on --resume.
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")

from monolith.config import MonolithConfig, load_config  # noqa: E402
from monolith.errors import ConfigError  # noqa: E402
from monolith.experiment import RESULTS_DIR, TUNE_DIR  # noqa: E402
from monolith.search_space import SearchSpace, check_against_config, load_search_space  # noqa: E402
from monolith.tuning import TrialRecord, TuneSettings, tune_settings, with_epochs  # noqa: E402
from monolith.uri import is_s3_uri, join, normalise  # noqa: E402

log = logging.getLogger("ray_jobs.tune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.tune",
        description="Tune the MonolithModel with Ray Tune (OptunaSearch + ASHA); each trial "
        "is a multi-worker Ray Train TensorflowTrainer run.",
    )
    parser.add_argument("--config", required=True, help="config YAML (with a tune: section)")
    parser.add_argument("--name", help="experiment name (default: tune.name)")
    parser.add_argument("--num-samples", type=int, help="trials to run (default: tune.num_samples)")
    parser.add_argument(
        "--storage",
        help="experiment storage: a folder or s3://bucket/prefix (default: tune.storage)",
    )
    parser.add_argument("--search-space", help="search space YAML (default: tune.search_space)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted experiment: finished trials are kept, not re-run",
    )
    resume.add_argument(
        "--auto-resume",
        action="store_true",
        help="resume the experiment if it exists, start it otherwise (for job retries)",
    )
    return parser


@dataclass
class Plan:
    """Everything validated before any cluster resource is requested."""

    cfg: MonolithConfig
    settings: TuneSettings
    space: SearchSpace
    warm_start: dict[str, Any] | None
    root: str  # <storage>/<name>
    storage: dict[str, Any]  # the config's storage: section (endpoint, region, ...)
    resume: bool = False

    @property
    def metric(self) -> str:
        return f"best_{self.cfg.eval.objective}"

    @property
    def mode(self) -> str:
        return self.cfg.eval.mode

    @property
    def epochs(self) -> int:
        return self.cfg.train.epochs


def _warm_start(settings: TuneSettings, cfg: MonolithConfig, space: SearchSpace):
    choice = settings.warm_start
    if choice == "none":
        return None
    if choice == "base":
        point, what = cfg.hyperparameters(), "the base config (tune.warm_start: base)"
    else:
        path = Path(choice)
        if not path.is_file():
            raise ConfigError(f"tune.warm_start = {choice!r}: file not found")
        if path.suffix == ".json":
            flat = json.loads(path.read_text())
            point = cfg.with_hyperparameters(flat).hyperparameters()
        else:
            point = load_config(path).hyperparameters()
        what = f"warm start {path}"
    return space.check_point(point, what)


def plan(args: argparse.Namespace) -> Plan:
    cfg = load_config(args.config)
    settings = tune_settings(
        cfg,
        name=args.name,
        num_samples=args.num_samples,
        storage=args.storage,
        search_space=args.search_space,
    )
    cfg = with_epochs(cfg, settings.epochs(cfg)).validate()
    space = load_search_space(settings.search_space)
    check_against_config(space, cfg, settings.num_workers)
    if "sequence_length" in space.names:
        longest = max(space.values("sequence_length") or [cfg.data.sequence_length])
        cfg.data.sequence_length = max(cfg.data.sequence_length, int(longest))
    warm = _warm_start(settings, cfg, space)
    storage = dict(cfg.extra.get("storage") or {})
    from monolith.storage import StorageSettings

    store = StorageSettings.from_mapping(storage)
    # One parse of the storage URI (local storage made absolute: trial workers run in their
    # own working directories); a bad one is an error here, before Ray starts.
    storage_root = normalise(settings.storage, "tune.storage (--storage)")
    root = join(storage_root, settings.name)
    resume = _check_storage(root, storage, args.resume, args.auto_resume)
    _check_data(cfg, store)
    return Plan(cfg, settings, space, warm, root, storage, resume)


def _check_storage(root: str, storage: dict, resume: bool, auto_resume: bool) -> bool:
    """Storage is reachable, and the experiment exists exactly when resuming; returns
    whether to resume."""
    tune_dir = join(root, TUNE_DIR)
    if is_s3_uri(root):
        from monolith import storage as s3

        settings = s3.StorageSettings.from_mapping(storage)
        s3.check_access(root, settings)
        bucket, key = s3.parse_s3_uri(tune_dir)
        listed = s3.s3_client(settings).list_objects_v2(
            Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1
        )
        exists = bool(listed.get("KeyCount"))
    else:
        exists = Path(tune_dir).exists()
    if auto_resume:
        return exists
    if resume and not exists:
        raise ConfigError(f"--resume: no experiment to resume at {tune_dir}")
    if exists and not resume:
        raise ConfigError(
            f"experiment {root} already exists: pass --resume to continue it, or choose a new "
            "--name"
        )
    return resume


def _check_data(cfg: MonolithConfig, store: Any) -> None:
    """The data source names data we can reach (bucket, credentials, matching files)."""
    from monolith.data.prepared import is_prepared_dataset
    from monolith.data.sources import resolve_sources

    if cfg.data.source != "synthetic" and not is_prepared_dataset(cfg.data.source, store):
        resolve_sources(cfg.data.source, store)  # one clear error naming what is missing


# ---- the trial driver ------------------------------------------------------------------


def run_trial(config: dict[str, Any], static: dict[str, Any]) -> None:
    """One Tune trial: launch and watch a Ray Train run of ``config`` over W workers.

    The Train run is named after the trial, so a restarted trial (driver failure or
    ``--resume``) finds its earlier checkpoints and continues from the latest.
    """
    import ray.train
    import ray.tune
    from ray.train.tensorflow import TensorflowTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from monolith.filesystems import storage_filesystem
    from monolith.storage import StorageSettings
    from ray_jobs import worker

    settings = TuneSettings(**static["settings"])
    # Ray Train hands these from this driver to its controller (and workers).
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(settings.train_poll_interval_s)
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(settings.worker_start_timeout_s)
    fs, path = storage_filesystem(
        static["train_storage"], StorageSettings.from_mapping(static["storage"])
    )
    trial_id = ray.tune.get_context().get_trial_id()
    trainer = TensorflowTrainer(
        worker.train_loop_per_worker,
        train_loop_config={
            **config,
            worker.BASE_CONFIG_KEY: static["base_config"],
            worker.PREPARED_KEY: static["prepared"],
            worker.STORAGE_KEY: static["storage"],
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=settings.num_workers,
            use_gpu=settings.use_gpu,
            resources_per_worker=settings.resources_per_worker(),
        ),
        run_config=ray.train.RunConfig(
            name=f"trial-{trial_id}",
            storage_path=path,
            storage_filesystem=fs,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=settings.worker_max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )
    trainer.fit()


# ---- the experiment --------------------------------------------------------------------


def _trainable(p: Plan, prepared: str):
    import dataclasses

    from ray import tune

    static = {
        "settings": dataclasses.asdict(p.settings),
        "base_config": p.cfg.to_dict(),
        "prepared": prepared,
        "storage": p.storage,
        "train_storage": join(p.root, "train"),
    }
    return tune.with_resources(
        tune.with_parameters(run_trial, static=static), {"CPU": p.settings.driver_cpus}
    )


def _tuner(p: Plan, prepared: str, resume: bool):
    import optuna
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from monolith.filesystems import storage_filesystem
    from monolith.storage import StorageSettings

    fs, path = storage_filesystem(p.root, StorageSettings.from_mapping(p.storage))
    trainable = _trainable(p, prepared)
    if resume:
        return tune.Tuner.restore(
            join(path, TUNE_DIR) if fs is None else f"{path}/{TUNE_DIR}",
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            restart_errored=False,
            storage_filesystem=fs,
        )
    sampler = optuna.samplers.TPESampler(
        seed=p.settings.seed,
        multivariate=p.settings.multivariate,
        n_startup_trials=p.settings.n_startup_trials,
    )
    searcher = OptunaSearch(
        space=p.space.distributions,
        metric=p.metric,
        mode=p.mode,
        points_to_evaluate=[p.warm_start] if p.warm_start else None,
        sampler=sampler,
    )
    scheduler = ASHAScheduler(
        time_attr="epoch",
        max_t=p.epochs,
        grace_period=min(p.settings.grace_period, p.epochs),
        reduction_factor=p.settings.reduction_factor,
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=p.metric,
            mode=p.mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=p.settings.num_samples,
            max_concurrent_trials=p.settings.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=path,
            storage_filesystem=fs,
            failure_config=tune.FailureConfig(max_failures=p.settings.max_failures),
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), TBXLoggerCallback()],
            verbose=1,
        ),
    )


def _records(results) -> list[TrialRecord]:
    """Plain per-trial rows from Tune's ResultGrid (trial 1 = the first created)."""
    records = []
    order = {}
    for result in results:
        # Trial folders are named run_trial_<id>_<creation counter>_<params>_<date>.
        match = re.match(r"^\w+?_([0-9a-f]{8})_(\d+)_", Path(result.path).name)
        if match:
            order[match.group(1)] = int(match.group(2))
        frame = result.metrics_dataframe
        history = [] if frame is None else frame.to_dict("records")
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        params = {k: v for k, v in (result.config or {}).items() if not k.startswith("_")}
        status = "ERROR" if result.error else ("TERMINATED" if history else "PENDING")
        wall = history[-1].get("time_total_s") if history else None
        records.append(
            TrialRecord(
                trial_id=str(trial_id),
                number=0,
                params=params,
                history=history,
                status=status,
                error=None if result.error is None else str(result.error).splitlines()[0][:300],
                wall_seconds=wall,
            )
        )
    for record in records:
        record.number = order.get(record.trial_id, 0)
    records.sort(key=lambda r: (r.number, r.trial_id))
    return records


def _publish_results(p: Plan, local_dir: Path) -> str:
    target = join(p.root, RESULTS_DIR)
    if is_s3_uri(target):
        from monolith import storage as s3

        s3.upload_directory(local_dir, target, s3.StorageSettings.from_mapping(p.storage))
    return target


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    p = plan(args)  # everything validated: only now ask Ray for resources
    from ray_jobs._ray import check_capacity, connect, release_orphaned_reservations

    need = {k: v * p.settings.num_workers for k, v in p.settings.resources_per_worker().items()}
    need["CPU"] = need.get("CPU", 0.0) + p.settings.driver_cpus
    # A local cluster gets enough logical CPUs for one trial even on a 2-core laptop.
    where = connect(local_cpus=max(os.cpu_count() or 1, math.ceil(need["CPU"])))
    release_orphaned_reservations()
    if p.settings.check_capacity:
        check_capacity(need, f"a trial ({p.settings.num_workers} workers + driver)")
    log.info("ray: %s; experiment %s", where, p.root)

    from monolith.experiment import prepare_for_experiment
    from monolith.tuning import write_results
    from ray_jobs.prepare import RayGroupRunner

    # The per-symbol preparation runs as Ray actors over the cluster, not in this driver.
    prepared = prepare_for_experiment(p.cfg, p.root, p.storage, runner=RayGroupRunner())
    tuner = _tuner(p, prepared, p.resume)
    results = tuner.fit()
    records = _records(results)
    local_results = (
        Path(join(p.root, RESULTS_DIR))
        if not is_s3_uri(p.root)
        else Path("runs") / "experiments-results" / p.settings.name
    )
    summary = write_results(
        local_results,
        records,
        p.cfg,
        p.space.distributions,
        p.metric,
        p.mode,
        p.epochs,
        study_name=p.settings.name,
    )
    target = _publish_results(p, local_results)
    print((local_results / "summary.txt").read_text())
    print(
        f"best trial {summary['best_trial']} ({summary['best_trial_id']}): "
        f"{p.metric} = {summary['best_objective']:.4f}; stop reasons {summary['stop_reasons']}"
    )
    print(f"results -> {target} (best_config.json, trials.csv, optuna.db)")
    print(f"tensorboard --logdir {join(p.root, TUNE_DIR)}")
    print(f"optuna-dashboard sqlite:///{(local_results / 'optuna.db').resolve()}")
    print(f"wall time {time.perf_counter() - started:.1f} s")
    errors = [r for r in records if r.status == "ERROR"]
    if errors and len(errors) == len(records):
        print(f"error: every trial failed; first: {errors[0].error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    from ray_jobs._ray import run_entrypoint

    return run_entrypoint(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
