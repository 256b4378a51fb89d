"""Tune job: search the MonolithModel's hyperparameters with Ray Tune.

    config + search space ──validate──▶ dataset prepared once under the experiment
        │
        ▼
    Tuner(OptunaSearch(TPE, warm start = trial 1), ASHA on per-epoch reports)
        │  one trial = a driver function (small CPU share) ...
        ▼
    ray_jobs.train_adapter.launch ── a Ray Train run of W workers (MultiWorkerMirroredStrategy),
        │                            each on its shard of the prepared rows
        ▼
    results/: best_config.json, trials.csv, optuna.db, summary.txt; logs/: the workers' logs

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
from monolith.experiment import LOGS_DIR, RESULTS_DIR, TUNE_DIR  # noqa: E402
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
    parser.add_argument(
        "--data-source",
        help="market data: files, a folder, a glob or s3://bucket/prefix/ (default: data.source)",
    )
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
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="stream every worker's and Ray's logs to this console (default: the trial table "
        "here, the logs under <experiment>/logs/)",
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
    if getattr(args, "data_source", None):
        cfg.data.source = args.data_source
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


def run_trial(hyperparameters: dict[str, Any], static: dict[str, Any]) -> None:
    """One Tune trial: a Ray Train run of ``hyperparameters`` over W workers.

    The Train run is named after the trial, so a restarted trial (driver failure or
    ``--resume``) finds its earlier checkpoints and continues from the latest.
    """
    import ray.tune

    from ray_jobs.train_adapter import RunPlace, launch

    place = RunPlace(f"trial-{ray.tune.get_context().get_trial_id()}", static["train_storage"])
    launch(static["spec"], static["resources"], place, hyperparameters, report_to_tune=True)


def _trainable(p: Plan, prepared: str, verbose: bool):
    from ray import tune

    from ray_jobs.train_adapter import JobSpec, Resources

    s = p.settings
    static = {
        "spec": JobSpec(
            task="trial",
            base_config=p.cfg.to_dict(),
            prepared=prepared,
            storage=p.storage,
            logs=None if verbose else join(p.root, LOGS_DIR),
        ),
        "resources": Resources(
            num_workers=s.num_workers,
            per_worker=s.resources_per_worker(),
            use_gpu=s.use_gpu,
            max_failures=s.worker_max_failures,
            poll_interval_s=s.train_poll_interval_s,
            start_timeout_s=s.worker_start_timeout_s,
            watch_preemption=s.watch_preemption,
        ),
        "train_storage": join(p.root, "train"),
    }
    return tune.with_resources(
        tune.with_parameters(run_trial, static=static), {"CPU": s.driver_cpus}
    )


def _tuner(p: Plan, prepared: str, resume: bool, verbose: bool):
    import optuna
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from monolith.filesystems import storage_filesystem
    from monolith.storage import StorageSettings
    from ray_jobs.console import TrialTable

    fs, path = storage_filesystem(p.root, StorageSettings.from_mapping(p.storage))
    trainable = _trainable(p, prepared, verbose)
    table = TrialTable(p.metric, p.mode, p.epochs, list(p.space.names))
    if resume:
        return tune.Tuner.restore(
            join(path, TUNE_DIR) if fs is None else f"{path}/{TUNE_DIR}",
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            restart_errored=False,
            storage_filesystem=fs,
        )  # the experiment's own callbacks (the trial table among them) come back with it
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
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), TBXLoggerCallback(), table],
            verbose=1 if verbose else 0,
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
        params = dict(result.config or {})
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
    from ray_jobs.console import quiet, say

    quiet(args.verbose)
    p = plan(args)  # everything validated: only now ask Ray for resources
    from ray_jobs._ray import check_capacity, connect, release_orphaned_reservations

    need = {k: v * p.settings.num_workers for k, v in p.settings.resources_per_worker().items()}
    need["CPU"] = need.get("CPU", 0.0) + p.settings.driver_cpus
    # A local cluster gets enough logical CPUs for one trial even on a 2-core laptop.
    where = connect(
        local_cpus=max(os.cpu_count() or 1, math.ceil(need["CPU"])), log_to_driver=args.verbose
    )
    release_orphaned_reservations()
    if p.settings.check_capacity:
        check_capacity(need, f"a trial ({p.settings.num_workers} workers + driver)")
    s = p.settings
    say(
        f"experiment {p.root} ({'resumed' if p.resume else 'new'}; Ray: {where})\n"
        f"  {s.num_samples} trials of <= {p.epochs} epochs, {s.num_workers} worker(s) x "
        f"{s.cpus_per_worker:g} CPU{f' + {s.gpus_per_worker:g} GPU' if s.use_gpu else ''} "
        f"each, {s.max_concurrent_trials} at a time; objective {p.metric} ({p.mode}); "
        f"ASHA grace {s.grace_period}, reduction {s.reduction_factor:g}"
    )

    from monolith.experiment import prepare_for_experiment
    from monolith.tuning import write_results
    from ray_jobs.prepare import RayGroupRunner

    # The per-symbol preparation runs as Ray actors over the cluster, not in this driver.
    t0 = time.perf_counter()
    prepared = prepare_for_experiment(p.cfg, p.root, p.storage, runner=RayGroupRunner())
    say(f"  data: {prepared} ({time.perf_counter() - t0:.1f} s)")
    if not args.verbose:
        say(
            f"  worker logs: {join(p.root, LOGS_DIR)}/trial-<id>/; every report: {join(p.root, TUNE_DIR)}/*/result.json"
        )
    tuner = _tuner(p, prepared, p.resume, args.verbose)
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
    say()
    say((local_results / "summary.txt").read_text().rstrip())
    say(
        f"\nbest trial {summary['best_trial']} ({summary['best_trial_id']}): "
        f"{p.metric} = {summary['best_objective']:.4f}; stop reasons {summary['stop_reasons']}"
    )
    say(f"results -> {target} (best_config.json, trials.csv, optuna.db)")
    say(f"tensorboard --logdir {join(p.root, TUNE_DIR)}")
    say(f"optuna-dashboard sqlite:///{(local_results / 'optuna.db').resolve()}")
    say(f"wall time {time.perf_counter() - started:.1f} s")
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
