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
import dataclasses
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
from monolith.lineage import git_commit, package_versions  # noqa: E402
from monolith.search_space import SearchSpace, check_against_config, load_search_space  # noqa: E402
from monolith.tuning import (  # noqa: E402
    ALL_FINISHED,
    Lineage,
    Objective,
    TrialRecord,
    TuneSettings,
    ended_by_no_improvement,
    ended_by_time_budget,
    trials_since_improvement,
    tune_settings,
    utc_now,
    with_epochs,
)
from monolith.uri import is_s3_uri, join, normalise, parse_s3_uri  # noqa: E402

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
    objectives: list[Objective]  # primary first; the primary is cfg.eval.objective
    resume: bool = False

    @property
    def metric(self) -> str:
        return self.objectives[0].reported

    @property
    def mode(self) -> str:
        return self.objectives[0].mode

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

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
    objectives = settings.objectives_for(cfg)
    if objectives[0].metric != cfg.eval.objective:
        # The primary objective is the trials' own: their early stopping and best checkpoint
        # follow it, and their workers report its running best (what ASHA ranks).
        cfg = dataclasses.replace(
            cfg, eval=dataclasses.replace(cfg.eval, objective=objectives[0].metric)
        )
    cfg = with_epochs(cfg, settings.epochs(cfg)).validate()
    reported = cfg.eval.objectives()
    for i, objective in enumerate(objectives):
        if objective.metric not in reported:  # a probe not in eval.probes is never reported
            raise ConfigError(
                f"tune.objectives[{i}] = {objective.metric!r} is not reported by the trials: "
                f"its probe is not in eval.probes = {list(cfg.eval.probes)}"
            )
    from monolith.bundle.schema import check_segment

    check_segment("tune.name (--name)", settings.name)  # a path segment of published bundles
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
    _check_data(cfg, store, _smallest_batch(space, cfg))
    return Plan(cfg, settings, space, warm, root, storage, objectives, resume)


def _check_storage(root: str, storage: dict, resume: bool, auto_resume: bool) -> bool:
    """Storage is reachable, and the experiment exists exactly when resuming; returns
    whether to resume."""
    tune_dir = join(root, TUNE_DIR)
    if is_s3_uri(root):
        from monolith import storage as s3

        settings = s3.StorageSettings.from_mapping(storage)
        s3.check_access(root, settings)
        bucket, key = parse_s3_uri(tune_dir)
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


def _check_data(cfg: MonolithConfig, store: Any, batch: int) -> None:
    """The data source names data we can reach (bucket, credentials, matching files), and
    prepares into at least one global batch of the smallest ``batch`` per split."""
    from monolith.data.precheck import check_can_train

    check_can_train(cfg.data, batch, store)


def _smallest_batch(space: Any, cfg: MonolithConfig) -> int:
    """The smallest global batch a trial can draw (the search space's, else the config's)."""
    if "batch_size" not in space.names:
        return cfg.train.batch_size
    values = space.values("batch_size")
    return int(min(values) if values else space.distributions["batch_size"].low)


# ---- the trial driver ------------------------------------------------------------------


def _trainable(p: Plan, prepared: str, verbose: bool):
    from ray import tune

    from ray_jobs.train_adapter import (
        JobSpec,
        Resources,
        run_trial,
        start_report_relay,
        start_reservation_watch,
    )

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
# Tune's extension points are classes to subclass, so Ray is imported here at module level
# (the library never imports it; this module is the job's Ray side).
from ray.tune import Callback  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402
from ray.tune.stopper import Stopper, TimeoutStopper  # noqa: E402


class RunningBest(Callback):
    """Adds ``best_<metric>``, the running best over the trial's reports, for each objective
    its workers do not report (they report only their ``eval.objective``'s, the primary's).

    Listed before the loggers: result.json, the searcher and the console see it. Stateless:
    the previous best rides in the trial's last result, which Tune keeps across --resume.
    """

    def __init__(self, objectives: list[Objective]) -> None:
        self.objectives = list(objectives)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        previous = getattr(trial, "last_result", None) or {}
        for o in self.objectives:
            if o.reported not in result:
                result[o.reported] = _better(result.get(o.metric), previous.get(o.reported), o.mode)


def _better(a: Any, b: Any, mode: str) -> float:
    finite = [float(v) for v in (a, b) if isinstance(v, int | float) and math.isfinite(v)]
    if not finite:
        return math.nan
    return min(finite) if mode == "min" else max(finite)


class BestOverEpochsSearch(OptunaSearch):
    """OptunaSearch over several objectives, told each one's best over the trial's epochs.

    Its metrics are the per-epoch names (``val_ref_ntxent``, ...): Tune checks every report
    for a searcher's metrics before callbacks run, and only the primary's ``best_`` value
    comes from the workers (``RunningBest`` adds the others'). When a trial ends, each
    objective is read from the trial's ``best_<metric>`` instead of its last epoch.
    """

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if result:
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            best = {m: result[f"best_{m}"] for m in metrics if f"best_{m}" in result}
            result = {**result, **best}
        super().on_trial_complete(trial_id, result=result, error=error)


class ExperimentBudget(Stopper, Callback):
    """Ends the whole experiment when a budget is spent: ``tune.time_budget_s`` (Ray's
    TimeoutStopper, what ``TuneConfig(time_budget_s=...)`` builds) or
    ``tune.stop_after_no_improvement`` finished trials in a row without a better primary
    objective. Trials still running are stopped (their reports so far are kept), those not
    started never start, and the results are written from what finished.

    One object is the experiment's stopper and one of its callbacks: it sees trials finish,
    in order, and knows which trials the end cut (``was_cut``) and why (``ended_by``).
    """

    def __init__(
        self, primary: Objective, time_budget_s: float | None, no_improvement: int | None
    ) -> None:
        self.primary = primary
        self.time_budget_s = time_budget_s
        self.no_improvement = no_improvement
        self._timeout = TimeoutStopper(time_budget_s) if time_budget_s else None
        self.finished: list[float] = []  # each finished trial's primary objective, in order
        self.ended_by: str | None = None
        self.started: set[str] = set()
        self.done: set[str] = set()  # trials that ended on their own (or by ASHA) first

    # -- Stopper: per-trial stopping is ASHA's; this one stops everything or nothing --------
    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        if self.ended_by is None:
            if self._timeout is not None and self._timeout.stop_all():
                self.ended_by = ended_by_time_budget(self.time_budget_s)
            elif (
                self.no_improvement
                and trials_since_improvement(self.finished, self.primary.mode)
                >= self.no_improvement
            ):
                self.ended_by = ended_by_no_improvement(self.no_improvement)
            if self.ended_by is not None:
                log.info("ending the experiment: %s", self.ended_by)
        return self.ended_by is not None

    # -- Callback ------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started.add(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.ended_by is not None:
            return  # stopped (or never started) by the end: ``was_cut``
        self.done.add(trial.trial_id)
        last = getattr(trial, "last_result", None) or {}
        value = last.get(self.primary.reported, math.nan)
        self.finished.append(float(value) if isinstance(value, int | float) else math.nan)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.ended_by is None:
            self.done.add(trial.trial_id)
            self.finished.append(math.nan)  # a failed trial did not improve the best

    def was_cut(self, trial_id: str) -> bool:
        """Whether the end stopped this trial (or kept it from starting): every trial that
        had not ended before it. Not only those whose completion Tune reports after the end:
        it does not always report one it stops there (seen here: a trial whose first report
        arrived as the time budget ran out)."""
        return self.ended_by is not None and trial_id not in self.done

    # Kept with the experiment's snapshots: a --resume counts on from the trials before it
    # (the time budget starts afresh, as Ray's own does).
    def get_state(self) -> dict | None:
        return {"finished": list(self.finished), "done": sorted(self.done)}

    def set_state(self, state: dict) -> None:
        self.finished = list(state.get("finished", []))
        self.done = set(state.get("done", []))


def _budget_of(tuner: Any) -> ExperimentBudget | None:
    """The budget the experiment ran with: a restored Tuner runs with the one pickled with
    the experiment, not one built here."""
    local = getattr(tuner, "_local_tuner", None)
    stop = local.get_run_config().stop if local is not None else None
    return stop if isinstance(stop, ExperimentBudget) else None


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
        trial_id = (result.metrics or {}).get("trial_id") or (
            match.group(1) if match else Path(result.path).name
        )
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


# ---- lineage: what produced the results ---------------------------------------------------
def _data_fingerprint(p: Plan) -> str | None:
    """prepared.json's key (the data config and source files the dataset was prepared
    from); None when it cannot be read: lineage never fails a finished experiment."""
    from monolith import storage
    from monolith.experiment import PREPARED_KEY_FILE

    try:
        key = storage.read_json(
            join(p.root, PREPARED_KEY_FILE), storage.StorageSettings.from_mapping(p.storage)
        ).get("key")
    except Exception as exc:  # noqa: BLE001 - any failure is "not recorded"
        log.warning("lineage: cannot read the data fingerprint: %s", exc)
        return None
    return str(key) if key else None


def _search_space_document(p: Plan) -> dict[str, Any] | str:
    import yaml

    try:
        return yaml.safe_load(Path(p.settings.search_space).read_text())
    except (OSError, yaml.YAMLError):
        return p.space.to_dict()


def _lineage(p: Plan, prepared: str, started_at: str) -> Lineage:
    return Lineage(
        experiment=p.settings.name,
        config=p.cfg.to_dict(),
        search_space=_search_space_document(p),
        git_commit=git_commit(),
        data_fingerprint=_data_fingerprint(p),
        prepared=prepared,
        versions=package_versions(),
        started_at=started_at,
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


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    started_at = utc_now()
    from ray_jobs.console import quiet, say

    quiet(args.verbose)
    p = plan(args)  # everything validated: only now ask Ray for resources
    from ray_jobs._ray import (
        ReservationJanitor,
        check_capacity,
        connect,
        release_orphaned_reservations,
    )

    need = p.settings.trial_needs()
    # A local cluster gets enough logical CPUs for its concurrent trials even on a 2-core
    # laptop (their drivers mostly wait: a share of a CPU each on top of the workers').
    where = connect(
        local_cpus=max(os.cpu_count() or 1, math.ceil(p.settings.concurrent_cpus())),
        log_to_driver=args.verbose,
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

    from monolith.data.prepared import read_metadata
    from monolith.data.readiness import prepare_summary
    from monolith.experiment import prepare_for_experiment
    from monolith.storage import StorageSettings
    from monolith.tuning import write_results
    from ray_jobs.prepare import RayGroupRunner

    # The per-symbol preparation runs as Ray actors over the cluster, not in this driver.
    t0 = time.perf_counter()
    prepared = prepare_for_experiment(p.cfg, p.root, p.storage, runner=RayGroupRunner())
    say(f"  data: {prepared} ({time.perf_counter() - t0:.1f} s)")
    # What the preparation made of the data (its calendar, gaps, windows) before trials use it.
    meta = read_metadata(prepared, StorageSettings.from_mapping(p.storage))
    for line in prepare_summary(meta, limit=5):
        say(f"    {line}")
    if not args.verbose:
        say(
            f"  worker logs: {join(p.root, LOGS_DIR)}/trial-<id>/; every report: {join(p.root, TUNE_DIR)}/*/result.json"
        )
    tuner = _tuner(p, prepared, p.resume, args.verbose)
    with ReservationJanitor():
        results = tuner.fit()
    records = _records(results)
    budget = _budget_of(tuner)
    ended_by = (budget.ended_by if budget else None) or ALL_FINISHED
    cut = {r.trial_id for r in records if budget is not None and budget.was_cut(r.trial_id)}
    if budget and not cut and len(records) >= s.num_samples:
        ended_by = ALL_FINISHED  # the budget ran out with the last trial: it cut nothing
    for record in records:
        record.stopped_by_budget = record.trial_id in cut
        if record.stopped_by_budget and record.trial_id in budget.started and not record.history:
            record.status = "TERMINATED"  # started, cut before its first report
    lineage = _lineage(p, prepared, started_at)
    lineage.finished_at = utc_now()
    local_results = (
        Path(join(p.root, RESULTS_DIR))
        if not is_s3_uri(p.root)
        else Path("runs") / "experiments-results" / p.settings.name
    )
    try:
        summary = write_results(
            local_results,
            records,
            p.cfg,
            p.space.distributions,
            p.objectives,
            p.epochs,
            study_name=p.settings.name,
            ended_by=ended_by,
            planned=s.num_samples,
            lineage=lineage,
        )
        report = _report(local_results)
    finally:
        # Whatever was written (trials.csv, history.csv, ...) is published, even when no
        # trial had a finite objective to choose from.
        target = _publish_results(p, local_results)
    say()
    say((local_results / "summary.txt").read_text().rstrip())
    values = ", ".join(f"{m} = {v:.4f}" for m, v in summary["best_values"].items())
    if p.multi_objective:
        say(
            f"\nPareto front: trials {summary['pareto_front']}; chosen trial "
            f"{summary['best_trial']} ({summary['best_trial_id']}), the closest to the ideal "
            f"point after min-max normalising each objective over the front: {values}"
        )
    else:
        say(
            f"\nbest trial {summary['best_trial']} ({summary['best_trial_id']}): {p.metric} = {summary['best_objective']:.4f}"
        )
    say(f"stop reasons {summary['stop_reasons']}; the experiment ended: {ended_by}")
    say(
        f"results -> {target} (best_config.json, trials.csv, pareto.csv, history.csv, "
        "lineage.json, optuna.db, summary.json)"
    )
    if report is not None:
        say(f"report: {report.resolve()} (open it in a browser; offline)")
    say(f"tensorboard --logdir {join(p.root, TUNE_DIR)}")
    say(f"optuna-dashboard sqlite:///{(local_results / 'optuna.db').resolve()}")
    say(f"wall time {time.perf_counter() - started:.1f} s")
    errors = [r for r in records if r.status == "ERROR"]
    if errors and len(errors) == len(records):
        print(f"error: every trial failed; first: {errors[0].error}", file=sys.stderr)
        return 1
    return 0


def _report(results: Path) -> Path | None:
    """results/report.html; a report that cannot be built costs a warning, not the results."""
    from monolith.report import build_report

    try:
        return build_report(results)
    except Exception as exc:  # noqa: BLE001 - the experiment's results stand without it
        log.warning("the experiment report was not built: %s", exc)
        print(f"warning: the experiment report was not built: {exc}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    from ray_jobs._ray import run_entrypoint

    return run_entrypoint(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
