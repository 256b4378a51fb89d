"""Tune job: search the MonolithModel's hyperparameters with Ray Tune.

    config + search space ──validate──▶ dataset prepared once under the experiment
        │
        ▼
    Tuner(OptunaSearch(TPE over 1..k objectives, warm start = trial 1),
        │ ASHA on per-epoch reports (one objective, or the primary of several: optional),
        │ budgets: time and no-improvement end the whole experiment early)
        │  one trial = a driver function (small CPU share) ...
        ▼
    ray_jobs.train_adapter.launch ── a Ray Train run of W workers (MultiWorkerMirroredStrategy),
        │                            each on its shard of the prepared rows
        ▼
    results/: best_config.json, trials.csv, pareto.csv, history.csv, lineage.json, optuna.db,
              summary.json/.txt; logs/: the workers' logs

    python -m ray_jobs.tune --config configs/local.yaml [--name N] [--num-samples N]
                            [--storage PATH|s3://...] [--resume]

Everything the experiment needs is validated before Ray is asked for resources.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time

# Before Ray is imported: the V2 Train API (the one that runs inside Tune trials), and a
# frequent experiment snapshot so a killed driver loses at most a few seconds on --resume.
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")

from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from monolith.experiment import LOGS_DIR, TUNE_DIR  # noqa: E402
from monolith.tuning import utc_now  # noqa: E402
from monolith.uri import join  # noqa: E402
from ray_jobs.tune_extensions import (  # noqa: E402
    BestOverEpochsSearch,
    ExperimentBudget,
    RunningBest,
)
from ray_jobs.tune_plan import Plan, plan  # noqa: E402
from ray_jobs.tune_results import apply_budget, finish, records_of  # noqa: E402

__all__ = ["BestOverEpochsSearch", "ExperimentBudget", "Plan", "RunningBest", "plan"]

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


# ---- the trial driver ------------------------------------------------------------------


def _trainable(p: Plan, prepared: str, verbose: bool):
    from ray import tune

    from ray_jobs.report_relay import start_report_relay
    from ray_jobs.reservation_watch import start_reservation_watch
    from ray_jobs.train_adapter import JobSpec, Resources
    from ray_jobs.trial import run_trial

    s = p.settings
    static = {
        "spec": JobSpec(
            task="trial",
            base_config=p.cfg,
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
            # One watch for every trial, instead of Ray Train's cleaner actor per trial.
            reservation_watch=start_reservation_watch(),
        ),
        "train_storage": join(p.root, "train"),
        # One relay for every trial's reports, instead of Ray's queue actor per trial.
        "relay": start_report_relay(),
    }
    return tune.with_resources(
        tune.with_parameters(run_trial, static=static), {"CPU": s.driver_cpus}
    )


# ---- the search: objectives, stopping, budgets --------------------------------------------


def _searcher(p: Plan):
    import optuna

    sampler = optuna.samplers.TPESampler(
        seed=p.settings.seed,
        multivariate=p.settings.multivariate,
        n_startup_trials=p.settings.n_startup_trials,
    )
    warm = [p.warm_start] if p.warm_start else None
    if not p.multi_objective:
        return OptunaSearch(
            space=p.space.distributions,
            metric=p.metric,
            mode=p.mode,
            points_to_evaluate=warm,
            sampler=sampler,
        )
    return BestOverEpochsSearch(
        space=p.space.distributions,
        metric=[o.metric for o in p.objectives],
        mode=[o.mode for o in p.objectives],
        points_to_evaluate=warm,
        sampler=sampler,
    )


def _scheduler(p: Plan):
    """ASHA on the primary objective's running best; with several objectives only when
    ``tune.multi_objective_stopping: primary`` (ASHA ranks one metric: it would cut trials
    that are good on the others), otherwise no early stopping (FIFO)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if p.multi_objective and p.settings.multi_objective_stopping == "none":
        return FIFOScheduler()
    # No metric of its own: Tune hands it TuneConfig's (the primary's running best), and
    # refuses a scheduler that names one as well.
    return ASHAScheduler(
        time_attr="epoch",
        max_t=p.epochs,
        grace_period=min(p.settings.grace_period, p.epochs),
        reduction_factor=p.settings.reduction_factor,
    )


def _tuner(p: Plan, prepared: str, resume: bool, verbose: bool):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    from monolith.filesystems import storage_filesystem
    from monolith.storage import StorageSettings
    from ray_jobs.console import TrialTable

    fs, path = storage_filesystem(p.root, StorageSettings.from_mapping(p.storage))
    trainable = _trainable(p, prepared, verbose)
    if resume:
        return tune.Tuner.restore(
            join(path, TUNE_DIR) if fs is None else f"{path}/{TUNE_DIR}",
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            restart_errored=False,
            storage_filesystem=fs,
        )  # the experiment's own callbacks, stopper and budget come back with it
    table = TrialTable(p.objectives, p.epochs, list(p.space.names))
    budget = ExperimentBudget(
        p.objectives[0], p.settings.time_budget_s, p.settings.stop_after_no_improvement
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=p.metric,
            mode=p.mode,
            search_alg=_searcher(p),
            scheduler=_scheduler(p),
            num_samples=p.settings.num_samples,
            max_concurrent_trials=p.settings.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=path,
            storage_filesystem=fs,
            stop=budget,
            failure_config=tune.FailureConfig(max_failures=p.settings.max_failures),
            # RunningBest first: every later callback sees the objectives' best_ values.
            callbacks=[
                RunningBest(p.objectives),
                JsonLoggerCallback(),
                CSVLoggerCallback(),
                TBXLoggerCallback(),
                table,
                budget,
            ],
            verbose=1 if verbose else 0,
        ),
    )


def _describe_search(p: Plan) -> str:
    s = p.settings
    objectives = ", ".join(f"{o.metric} ({o.mode})" for o in p.objectives)
    if p.multi_objective and s.multi_objective_stopping == "none":
        stopping = "no early stopping (tune.multi_objective_stopping: none)"
    else:
        stopping = f"ASHA on {p.metric}, grace {s.grace_period}, reduction {s.reduction_factor:g}"
    budgets = []
    if s.time_budget_s:
        budgets.append(f"time budget {s.time_budget_s:g} s")
    if s.stop_after_no_improvement:
        budgets.append(f"stop after {s.stop_after_no_improvement} trials without improvement")
    what = "objectives" if p.multi_objective else "objective"
    return f"{what} {objectives}; {stopping}" + (f"; {', '.join(budgets)}" if budgets else "")


# ---- the job -----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    started_at = utc_now()
    from ray_jobs._ray import ReservationJanitor
    from ray_jobs.console import quiet
    from ray_jobs.train_adapter import experiment_stopper

    quiet(args.verbose)
    p = plan(args)  # everything validated: only now ask Ray for resources
    _start_ray(p, args.verbose)
    prepared = _prepare_data(p, args.verbose)
    tuner = _tuner(p, prepared, p.resume, args.verbose)
    with ReservationJanitor():
        results = tuner.fit()
    records = records_of(results)
    # The budget the experiment ran with: a restored Tuner runs with the one pickled with
    # the experiment, not one built here.
    budget = experiment_stopper(tuner)
    budget = budget if isinstance(budget, ExperimentBudget) else None
    ended_by = apply_budget(records, budget, p.settings.num_samples)
    return finish(p, records, ended_by, prepared, started_at, started)


def _start_ray(p: Plan, verbose: bool) -> None:
    """Join (or start) the cluster, check it fits a trial, and say what the experiment is."""
    from ray_jobs._ray import check_capacity, connect, release_orphaned_reservations
    from ray_jobs.console import say

    need = p.settings.trial_needs()
    # A local cluster gets enough logical CPUs for its concurrent trials even on a 2-core
    # laptop (their drivers mostly wait: a share of a CPU each on top of the workers').
    where = connect(
        local_cpus=max(os.cpu_count() or 1, math.ceil(p.settings.concurrent_cpus())),
        log_to_driver=verbose,
    )
    release_orphaned_reservations()
    if p.settings.check_capacity:
        check_capacity(need, f"a trial ({p.settings.num_workers} workers + driver)")
    s = p.settings
    say(
        f"experiment {p.root} ({'resumed' if p.resume else 'new'}; Ray: {where})\n"
        f"  {s.num_samples} trials of <= {p.epochs} epochs, {s.num_workers} worker(s) x "
        f"{s.cpus_per_worker:g} CPU{f' + {s.gpus_per_worker:g} GPU' if s.use_gpu else ''} "
        f"each, {s.max_concurrent_trials} at a time\n  {_describe_search(p)}"
    )


def _prepare_data(p: Plan, verbose: bool) -> str:
    """The experiment's prepared dataset (prepared once, on the cluster); says what it holds."""
    from monolith.data.prepared import read_metadata
    from monolith.data.readiness import prepare_summary
    from monolith.experiment import prepare_for_experiment
    from monolith.storage import StorageSettings
    from ray_jobs.console import say
    from ray_jobs.prepare import RayGroupRunner

    # The per-symbol preparation runs as Ray actors over the cluster, not in this driver.
    t0 = time.perf_counter()
    prepared = prepare_for_experiment(p.cfg, p.root, p.storage, runner=RayGroupRunner())
    say(f"  data: {prepared} ({time.perf_counter() - t0:.1f} s)")
    # What the preparation made of the data (its calendar, gaps, windows) before trials use it.
    meta = read_metadata(prepared, StorageSettings.from_mapping(p.storage))
    for line in prepare_summary(meta, limit=5):
        say(f"    {line}")
    if not verbose:
        say(
            f"  worker logs: {join(p.root, LOGS_DIR)}/trial-<id>/; every report: {join(p.root, TUNE_DIR)}/*/result.json"
        )
    return prepared


def main(argv: list[str] | None = None) -> int:
    from ray_jobs._ray import run_entrypoint

    return run_entrypoint(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
