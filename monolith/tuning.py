"""What a tuning experiment is asked to do, and what it leaves behind.

``TuneSettings`` is the config's ``tune:`` section (validated at the edge, before any
cluster resource is requested): the objectives (one, or several for a Pareto search), the
schedulers' settings and the experiment's budgets. The result writers turn the per-trial
report histories into ``results/``:

    best_config.json  the chosen trial's flat hyperparameters (ready for the final job)
    trials.csv        one row per trial: params, best/last of every metric, stop reason
    pareto.csv        the non-dominated trials, one column per objective, the chosen one
    history.csv       one row per report: trial, trial_id, epoch, val_*/loss*/best_* values
    lineage.json      what produced the results: config, search space, code, data, versions
    optuna.db         an Optuna study (``optuna-dashboard sqlite:///optuna.db``)
    summary.json/.txt the objectives, the chosen trial, the front, how the experiment ended

No Ray here: ``ray_jobs/tune.py`` hands plain rows and values in.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from monolith.bundle.schema import BEST_CONFIG_FILE
from monolith.config import OBJECTIVES, MonolithConfig, build_section
from monolith.errors import ConfigError

# summary.json's ``ended_by`` when no budget cut the experiment short.
ALL_FINISHED = "all trials finished"
# How several objectives become the one best_config.json (summary.json's ``pareto_rule``).
PARETO_RULE = (
    "among the Pareto front (trials no other trial beats on every objective), each objective "
    "is min-max normalised over the front so that 1 is the front's best and 0 its worst "
    "(1 for all when the front agrees); the chosen trial is the one closest (Euclidean) to "
    "the ideal point (1, ..., 1); ties go to the better primary (first) objective, then to "
    "the lower trial number"
)
# Trials stopped by ASHA rank on one metric only: with several objectives, "none" (no
# early stopping; each trial runs its epochs or its patience) keeps the front unbiased,
# "primary" buys the compute back by letting ASHA rank the first objective.
MULTI_OBJECTIVE_STOPPING = ("none", "primary")


@dataclass(frozen=True)
class Objective:
    """One metric the search optimises, in its direction (``min`` or ``max``).

    ``metric`` is the per-epoch name (``val_ref_ntxent``); trials also report its running
    best over their epochs as ``best_<metric>``, which is what the search ranks.
    """

    metric: str
    mode: str

    @property
    def reported(self) -> str:
        return f"best_{self.metric}"

    @property
    def label(self) -> str:
        return f"{self.metric} ({self.mode})"

    def to_dict(self) -> dict[str, str]:
        return {"metric": self.metric, "mode": self.mode}


def parse_objectives(raw: Any, where: str = "tune.objectives") -> list[Objective]:
    """``raw`` as objectives: a list of ``"metric"``, ``"metric:mode"`` or ``{metric, mode}``.

    Each metric must be one of ``monolith.config.OBJECTIVES`` and keep its own direction
    (minimising a lift or maximising a loss is a typo, not a wish).
    """
    allowed = ", ".join(f"{m}:{d}" for m, d in OBJECTIVES.items())

    def bad(key: str, value: Any, why: str) -> ConfigError:
        return ConfigError(f"{key} = {value!r} is invalid: {why}; allowed: {allowed}")

    usage = "expected a non-empty list of 'metric', 'metric:mode' or {metric, mode}"
    if not isinstance(raw, list) or not raw:
        raise bad(where, raw, usage)
    out: list[Objective] = []
    for i, entry in enumerate(raw):
        key = f"{where}[{i}]"
        if isinstance(entry, str):
            metric, _, mode = entry.partition(":")
        elif isinstance(entry, dict) and set(entry) <= {"metric", "mode"} and "metric" in entry:
            metric, mode = entry["metric"], entry.get("mode") or ""
        else:
            raise bad(key, entry, usage)
        metric, mode = str(metric).strip(), str(mode).strip()
        if metric not in OBJECTIVES:
            raise bad(key, entry, f"unknown metric {metric!r}")
        if mode and mode != OBJECTIVES[metric]:
            raise bad(
                key, entry, f"{metric} is optimised in mode {OBJECTIVES[metric]!r}, not {mode!r}"
            )
        if any(o.metric == metric for o in out):
            raise bad(key, entry, f"{metric} is listed twice")
        out.append(Objective(metric, OBJECTIVES[metric]))
    return out


@dataclass
class TuneSettings:
    """The ``tune:`` section of a config."""

    name: str = "monolith-tune"
    # Experiment storage: a local folder, or s3://bucket/prefix (needed on multi-node clusters).
    storage: str = "runs/experiments"
    search_space: str = "configs/search_space.yaml"
    num_samples: int = 8
    max_concurrent_trials: int = 1
    # Ray Train workers per trial (each a MultiWorkerMirroredStrategy worker).
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    # The per-trial driver only launches and watches its Train run: a small CPU share.
    driver_cpus: float = 0.1
    # ASHA on per-epoch reports; max_epochs None = train.epochs.
    max_epochs: int | None = None
    grace_period: int = 1
    reduction_factor: float = 2.0
    # OptunaSearch (TPE).
    seed: int = 0
    multivariate: bool = True
    n_startup_trials: int = 4
    # "base": the base config's own hyperparameters are trial 1; "none": no warm start;
    # or a path to a best_config.json / config YAML.
    warm_start: str = "base"
    # Retries: a failed trial driver (Tune) and a failed Train worker group (Train).
    max_failures: int = 2
    worker_max_failures: int = 3
    extra_resources: dict[str, float] = field(default_factory=dict)
    # Refuse at once when the running cluster cannot fit one trial; off for autoscaling
    # clusters, whose worker groups grow on demand.
    check_capacity: bool = True
    # How often each trial's Train controller polls its workers (reports, health). Ray's
    # default (2 s) adds up to a poll to each trial's start, to every report and to its end.
    train_poll_interval_s: float = 0.25
    # Ray Train's preemption watcher (an actor per Train run): drains runs on nodes being
    # reclaimed, as spot GPU pools are; off where nodes are not preempted (a laptop).
    watch_preemption: bool = True
    # How long a trial's Train run waits for its worker group: with more concurrent trials
    # than the cluster fits at once (pipelining: the next trial's driver and controller start
    # while one trains) or an autoscaling cluster, a trial legitimately waits a trial's length.
    worker_start_timeout_s: float = 1800.0
    # What the search optimises: null = eval.objective alone; or a list of "metric",
    # "metric:mode" or {metric, mode} (monolith.config.OBJECTIVES) for a Pareto search. The
    # first is the primary: the trials' eval.objective (their early stopping and best
    # checkpoint), ASHA's metric and the tie-breaker of the Pareto choice.
    objectives: list[Any] | None = None
    # With several objectives: "none" (no ASHA) or "primary" (ASHA on the first objective).
    multi_objective_stopping: str = "none"
    # Budgets that end the whole experiment early, results written from the trials so far:
    # wall-clock seconds of the search (data preparation excluded; a --resume starts a new
    # budget, as Ray's time_budget_s does), and finished trials in a row without a better
    # primary objective.
    time_budget_s: float | None = None
    stop_after_no_improvement: int | None = None

    def validate(self, where: str = "tune") -> TuneSettings:
        def bad(key: str, allowed: str) -> ConfigError:
            return ConfigError(f"{where}.{key} = {getattr(self, key)!r} is invalid: {allowed}")

        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise bad("name", "expected a non-empty name without '/'")
        for key, lo in (
            ("num_samples", 1),
            ("max_concurrent_trials", 1),
            ("num_workers", 1),
            ("grace_period", 1),
            ("n_startup_trials", 1),
            ("max_failures", 0),
            ("worker_max_failures", 0),
            ("seed", 0),
        ):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                raise bad(key, f"expected an integer >= {lo}")
        if self.max_epochs is not None and (
            not isinstance(self.max_epochs, int) or self.max_epochs < 1
        ):
            raise bad("max_epochs", "expected an integer >= 1 or null")
        for key in ("use_gpu", "multivariate", "check_capacity", "watch_preemption"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, "expected true or false")
        for key, lo_open in (
            ("cpus_per_worker", False),
            ("gpus_per_worker", False),
            ("driver_cpus", True),
            ("reduction_factor", True),
            ("train_poll_interval_s", True),
            ("worker_start_timeout_s", True),
        ):
            value = getattr(self, key)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise bad(key, "expected a number >= 0")
            if lo_open and value == 0:
                why = (
                    " (Ray rejects a zero CPU share for the driver)" if key == "driver_cpus" else ""
                )
                raise bad(key, f"must be > 0{why}")
        if self.reduction_factor <= 1:
            raise bad("reduction_factor", "expected a number > 1")
        if self.cpus_per_worker == 0 and self.gpus_per_worker == 0:
            raise bad("cpus_per_worker", "a worker needs CPUs or GPUs")
        if self.use_gpu and self.gpus_per_worker == 0:
            self.gpus_per_worker = 1.0
        if not self.use_gpu and self.gpus_per_worker > 0:
            raise bad("gpus_per_worker", "set use_gpu: true to request GPUs")
        if not isinstance(self.extra_resources, dict):
            raise bad("extra_resources", "expected a mapping of resource name -> amount")
        if self.objectives is not None:
            parse_objectives(self.objectives, f"{where}.objectives")
        if self.multi_objective_stopping not in MULTI_OBJECTIVE_STOPPING:
            raise bad(
                "multi_objective_stopping", f"allowed values {list(MULTI_OBJECTIVE_STOPPING)}"
            )
        if self.time_budget_s is not None and (
            not isinstance(self.time_budget_s, int | float)
            or isinstance(self.time_budget_s, bool)
            or not math.isfinite(self.time_budget_s)
            or self.time_budget_s <= 0
        ):
            raise bad("time_budget_s", "expected a number of seconds > 0, or null for no budget")
        if self.stop_after_no_improvement is not None and (
            not isinstance(self.stop_after_no_improvement, int)
            or isinstance(self.stop_after_no_improvement, bool)
            or self.stop_after_no_improvement < 1
        ):
            raise bad(
                "stop_after_no_improvement",
                "expected an integer >= 1 (finished trials without a better primary objective), "
                "or null",
            )
        return self

    def objectives_for(self, cfg: MonolithConfig) -> list[Objective]:
        """The objectives, primary first (the default: ``eval.objective`` alone)."""
        if self.objectives is None:
            return [Objective(cfg.eval.objective, cfg.eval.mode)]
        return parse_objectives(self.objectives)

    def resources_per_worker(self) -> dict[str, float]:
        out = {"CPU": float(self.cpus_per_worker)}
        if self.gpus_per_worker:
            out["GPU"] = float(self.gpus_per_worker)
        return {**out, **{k: float(v) for k, v in self.extra_resources.items()}}

    def trial_needs(self) -> dict[str, float]:
        """What one trial holds while it trains: its workers' resources and its driver's CPU."""
        need = {k: v * self.num_workers for k, v in self.resources_per_worker().items()}
        need["CPU"] = need.get("CPU", 0.0) + self.driver_cpus
        return need

    def concurrent_trials(self) -> int:
        """How many trials can run at once: ``max_concurrent_trials``, at most the trial count."""
        return max(1, min(self.max_concurrent_trials, self.num_samples))

    def concurrent_cpus(self) -> float:
        """CPUs for every trial that may run at once: what a local cluster is given, so
        concurrent trials never queue behind each other's drivers."""
        return self.trial_needs()["CPU"] * self.concurrent_trials()

    def epochs(self, cfg: MonolithConfig) -> int:
        return self.max_epochs or cfg.train.epochs


def tune_settings(cfg: MonolithConfig, **overrides: Any) -> TuneSettings:
    """The validated ``tune:`` section of ``cfg`` with command-line overrides applied."""
    settings = build_section(TuneSettings, cfg.extra.get("tune"), "tune")
    for key, value in overrides.items():
        if value is not None:
            setattr(settings, key, value)
    return settings.validate()


def with_epochs(cfg: MonolithConfig, epochs: int) -> MonolithConfig:
    train = dataclasses.replace(cfg.train, epochs=epochs)
    return dataclasses.replace(cfg, train=train)


# ---- the experiment's budgets -------------------------------------------------------------


def trials_since_improvement(values: Sequence[float], mode: str) -> int:
    """How many of the latest finished trials did not beat the best before them.

    ``values`` are the finished trials' primary objective (their best over epochs), in the
    order they finished; a non-finite value (a failed trial) never improves. The first
    finite value is an improvement over nothing.
    """
    best, since = math.nan, 0
    for value in values:
        better = math.isfinite(value) and (
            not math.isfinite(best) or (value < best if mode == "min" else value > best)
        )
        if better:
            best, since = value, 0
        else:
            since += 1
    return since


def ended_by_time_budget(seconds: float) -> str:
    return f"time budget {seconds:g} s"


def ended_by_no_improvement(trials: int) -> str:
    return f"no improvement in {trials} trials"


def utc_now() -> str:
    """Now, as ISO 8601 UTC (lineage.json's timestamps)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---- results ----------------------------------------------------------------------------


@dataclass
class TrialRecord:
    """One trial as the tune job saw it: its config, every report, its end."""

    trial_id: str
    number: int  # 1-based, in the order trials were created (trial 1 = the warm start)
    params: dict[str, Any]
    history: list[dict[str, Any]]
    status: str  # TERMINATED / ERROR / RUNNING / PENDING
    error: str | None = None
    wall_seconds: float | None = None
    # Still running (or waiting to start) when a budget ended the experiment.
    stopped_by_budget: bool = False


@dataclass
class Lineage:
    """What produced an experiment's results (lineage.json), as plain values."""

    experiment: str
    config: dict[str, Any]  # the base config, as a dict
    search_space: dict[str, Any] | str  # the search space YAML, as a mapping (or its text)
    git_commit: str | None  # the checkout's HEAD; None when not run from a git checkout
    data_fingerprint: str | None  # prepared.json's key: data config + source files
    prepared: str | None  # the prepared dataset's URI
    versions: dict[str, str | None]  # python, monolith, ray, tensorflow, keras, ...
    started_at: str  # ISO 8601 UTC
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def stop_reason(record: TrialRecord, max_epochs: int) -> str:
    if record.status == "ERROR":
        return f"error: {record.error or 'unknown'}"
    if not record.history:
        if record.status == "PENDING":
            return "not started"
        return "stopped by budget" if record.stopped_by_budget else "no report"
    last = record.history[-1]
    epochs = int(last.get("epoch", len(record.history)))
    if record.status not in ("TERMINATED",):
        return record.status.lower()
    if last.get("early_stopped"):
        return "early stopping (patience)"
    if epochs >= max_epochs:
        return "completed (max epochs)"
    if record.stopped_by_budget:
        return "stopped by budget"
    return "stopped by ASHA"


def _best(values: list[float], mode: str) -> float:
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not finite:
        return math.nan
    return min(finite) if mode == "min" else max(finite)


def objective_value(record: TrialRecord, objective: Objective) -> float:
    """The trial's best ``objective`` over its reports (its running best and raw values)."""
    values = [
        h.get(key, math.nan)
        for h in record.history
        for key in (objective.reported, objective.metric)
    ]
    return _best(values, objective.mode)


def _primary_key(objective: Objective, value: float) -> float:
    """Smaller is better, for sorting."""
    return value if objective.mode == "min" else -value


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """``a`` is no worse than ``b`` on every objective and better on at least one."""
    signed = [(x, y) if m == "min" else (-x, -y) for x, y, m in zip(a, b, modes, strict=True)]
    return all(x <= y for x, y in signed) and any(x < y for x, y in signed)


def pareto_front(points: dict[int, Sequence[float]], modes: Sequence[str]) -> list[int]:
    """The keys of ``points`` (trial number -> objective values) no other point dominates;
    equal points are all kept."""
    return sorted(
        k
        for k, p in points.items()
        if not any(dominates(q, p, modes) for j, q in points.items() if j != k)
    )


def choose_from_front(
    points: dict[int, Sequence[float]], front: list[int], objectives: list[Objective]
) -> int:
    """The trial of ``front`` that ``PARETO_RULE`` chooses."""
    if not front:
        raise ValueError("an empty Pareto front")
    scores: dict[int, float] = {k: 0.0 for k in front}
    for j, objective in enumerate(objectives):
        column = [points[k][j] for k in front]
        best = _best(column, objective.mode)
        worst = max(column) if objective.mode == "min" else min(column)
        for k in front:
            score = 1.0 if best == worst else (points[k][j] - worst) / (best - worst)
            scores[k] += (1.0 - score) ** 2
    return min(
        front,
        key=lambda k: (
            round(math.sqrt(scores[k]), 12),  # equal up to float noise = a tie
            _primary_key(objectives[0], points[k][0]),
            k,
        ),
    )


@dataclass
class Choice:
    """The Pareto front over the finished trials and the one trial chosen from it."""

    values: dict[int, list[float]]  # trial number -> its value of every objective
    front: list[int]
    chosen: TrialRecord


def choose(records: list[TrialRecord], objectives: list[Objective]) -> Choice:
    """The front over trials with a finite value of every objective, and the chosen trial
    (with one objective: the best value, ties to the lowest trial number)."""
    by_number = {r.number: r for r in records if r.status != "ERROR"}
    values = {n: [objective_value(r, o) for o in objectives] for n, r in by_number.items()}
    values = {n: v for n, v in values.items() if all(math.isfinite(x) for x in v)}
    if not values:
        names = ", ".join(o.metric for o in objectives)
        raise ConfigError(f"no trial reported a finite {names}: nothing to choose from")
    front = pareto_front(values, [o.mode for o in objectives])
    return Choice(values, front, by_number[choose_from_front(values, front, objectives)])


def best_trial(records: list[TrialRecord], objectives: list[Objective]) -> TrialRecord:
    return choose(records, objectives).chosen


def trials_table(
    records: list[TrialRecord], objectives: list[Objective], max_epochs: int
) -> pd.DataFrame:
    """One row per trial: params, per-metric best and last, every objective's value (the
    primary's also as ``objective``), epochs run, status, stop reason."""
    rows = []
    for rec in sorted(records, key=lambda r: r.number):
        row: dict[str, Any] = {"trial": rec.number, "trial_id": rec.trial_id}
        row.update({f"config/{k}": v for k, v in rec.params.items()})
        metric_names = sorted(
            {k for h in rec.history for k, v in h.items() if k.startswith(("val_", "loss"))}
        )
        for name in metric_names:
            series = [h.get(name, math.nan) for h in rec.history]
            row[f"last/{name}"] = series[-1]
            # Probe accuracies and lifts: higher is better; losses and geometry: lower.
            row[f"best/{name}"] = _best(series, "max" if "_probe_" in name else "min")
        row["objective"] = objective_value(rec, objectives[0])
        for objective in objectives:
            row[f"objective/{objective.metric}"] = objective_value(rec, objective)
        row["epochs_run"] = int(rec.history[-1].get("epoch", 0)) if rec.history else 0
        row["status"] = rec.status
        row["stop_reason"] = stop_reason(rec, max_epochs)
        row["wall_seconds"] = rec.wall_seconds
        rows.append(row)
    if not rows:  # a budget spent before any trial was created: the columns still say what
        objective_columns = ["objective", *(f"objective/{o.metric}" for o in objectives)]
        fixed = ["epochs_run", "status", "stop_reason", "wall_seconds"]
        return pd.DataFrame(columns=["trial", "trial_id", *objective_columns, *fixed])
    return pd.DataFrame(rows)


def history_table(records: list[TrialRecord]) -> pd.DataFrame:
    """One row per report: trial, trial_id, epoch, then every ``val_*``/``loss*`` metric and
    every ``best_*`` value (a metric a report lacks is empty)."""
    reported = {k for r in records for h in r.history for k in h}
    metrics = sorted(k for k in reported if k.startswith(("val_", "loss")))
    bests = sorted(k for k in reported if k.startswith("best_"))
    rows = [
        {
            "trial": rec.number,
            "trial_id": rec.trial_id,
            "epoch": int(h.get("epoch", i)),
            **{k: h.get(k, math.nan) for k in metrics + bests},
        }
        for rec in sorted(records, key=lambda r: r.number)
        for i, h in enumerate(rec.history, start=1)
    ]
    return pd.DataFrame(rows, columns=["trial", "trial_id", "epoch", *metrics, *bests])


def pareto_table(
    records: list[TrialRecord], objectives: list[Objective], choice: Choice
) -> pd.DataFrame:
    """pareto.csv: trial, trial_id, one column per objective metric (the trial's best
    value), chosen, then the trial's ``config/<param>`` values."""
    by_number = {r.number: r for r in records}
    rows = []
    for number in choice.front:
        rec = by_number[number]
        row: dict[str, Any] = {"trial": number, "trial_id": rec.trial_id}
        row.update({o.metric: v for o, v in zip(objectives, choice.values[number], strict=True)})
        row["chosen"] = number == choice.chosen.number
        row.update({f"config/{k}": v for k, v in rec.params.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def best_config(base: MonolithConfig, record: TrialRecord) -> dict[str, Any]:
    """The flat hyperparameters of the best trial (all of them, not only the searched)."""
    return base.with_hyperparameters(record.params).hyperparameters()


def export_optuna(
    records: list[TrialRecord],
    distributions: dict[str, Any],
    objectives: list[Objective],
    path: str | Path,
    study_name: str,
) -> Path:
    """Write the study to a SQLite file: params, state, the objectives' values (a
    multi-objective study with several) and, with one objective, per-epoch intermediate
    values (Optuna records those for single-objective studies only)."""
    import optuna

    path = Path(path)
    if path.exists():
        path.unlink()
    study = optuna.create_study(
        study_name=study_name,
        storage=f"sqlite:///{path.resolve()}",
        directions=["minimize" if o.mode == "min" else "maximize" for o in objectives],
    )
    with warnings.catch_warnings():
        # set_metric_names is "experimental" since Optuna 3.2: the dashboard shows the names.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.metric for o in objectives])
    single = len(objectives) == 1
    for rec in sorted(records, key=lambda r: r.number):
        values = [objective_value(rec, o) for o in objectives]
        finished = rec.status == "TERMINATED" and all(math.isfinite(v) for v in values)
        params = {k: v for k, v in rec.params.items() if k in distributions}
        intermediate = {}
        if single:
            o = objectives[0]
            for i, h in enumerate(rec.history, start=1):
                v = h.get(o.reported, h.get(o.metric, math.nan))
                if isinstance(v, int | float) and math.isfinite(v):
                    intermediate[int(h.get("epoch", i))] = float(v)
        trial = optuna.trial.create_trial(
            params=params,
            distributions={k: distributions[k] for k in params},
            values=values if finished else None,
            intermediate_values=intermediate,
            state=optuna.trial.TrialState.COMPLETE if finished else optuna.trial.TrialState.FAIL,
            user_attrs={"trial_id": rec.trial_id, "status": rec.status},
        )
        study.add_trial(trial)
    return path


def _write_text(path: Path, text: str) -> None:
    """Atomically: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    _write_text(path, frame.to_csv(index=False))


def write_results(
    directory: str | Path,
    records: list[TrialRecord],
    base: MonolithConfig,
    distributions: dict[str, Any],
    objectives: list[Objective],
    max_epochs: int,
    study_name: str,
    *,
    ended_by: str = ALL_FINISHED,
    planned: int | None = None,
    lineage: Lineage | None = None,
) -> dict[str, Any]:
    """Write the results folder (see the module docstring); returns the summary.

    trials.csv, history.csv and lineage.json are written first, so an experiment in which
    no trial reported a finite objective still leaves them before the ConfigError.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    table = trials_table(records, objectives, max_epochs)
    _write_csv(directory / "trials.csv", table)
    _write_csv(directory / "history.csv", history_table(records))
    if lineage is not None:
        _write_text(
            directory / "lineage.json", json.dumps(lineage.to_dict(), indent=2, default=str) + "\n"
        )
    primary = objectives[0]
    summary: dict[str, Any] = {
        "metric": primary.reported,
        "mode": primary.mode,
        "objectives": [o.to_dict() for o in objectives],
        "best_trial": None,
        "best_trial_id": None,
        "best_objective": None,
        "best_values": None,
        "pareto_front": [],
        "trials": len(records),
        "stop_reasons": table["stop_reason"].value_counts().to_dict() if len(table) else {},
        "ended_by": ended_by,
    }
    if len(objectives) > 1:
        summary["pareto_rule"] = PARETO_RULE
    if planned is not None:
        summary["trials_planned"] = planned
    export_optuna(records, distributions, objectives, directory / "optuna.db", study_name)
    try:
        choice = choose(records, objectives)
    except ConfigError:
        # Said in summary.json too (best_trial null), so the folder explains itself.
        _write_summary(directory, summary, table, objectives, [])
        raise
    best = choice.chosen
    _write_csv(directory / "pareto.csv", pareto_table(records, objectives, choice))
    _write_text(
        directory / BEST_CONFIG_FILE,
        json.dumps(best_config(base, best), indent=2, sort_keys=True),
    )
    summary.update(
        best_trial=best.number,
        best_trial_id=best.trial_id,
        best_objective=choice.values[best.number][0],
        best_values=dict(
            zip([o.metric for o in objectives], choice.values[best.number], strict=True)
        ),
        pareto_front=choice.front,
    )
    _write_summary(directory, summary, table, objectives, choice.front)
    return summary


def _write_summary(
    directory: Path,
    summary: dict[str, Any],
    table: pd.DataFrame,
    objectives: list[Objective],
    front: list[int],
) -> None:
    _write_text(directory / "summary.json", json.dumps(summary, indent=2) + "\n")
    text = summary_table(table, objectives, front, summary["ended_by"])
    _write_text(directory / "summary.txt", text + "\n")


def summary_table(
    table: pd.DataFrame,
    objectives: list[Objective],
    front: list[int] | None = None,
    ended_by: str | None = None,
) -> str:
    """The trials as a fixed-width table: with one objective best first; with several the
    Pareto front first (marked ``*``), each part by the primary objective."""
    primary = objectives[0]
    foot = f"\nended by: {ended_by}" if ended_by else ""
    if table.empty:
        return "no trials" + foot
    view = table.copy()
    columns = ["trial"]
    if len(objectives) == 1:
        columns.append("objective")
    else:
        view["pareto"] = view["trial"].isin(front or []).map({True: "*", False: ""})
        columns.append("pareto")
        for o in objectives:
            view[o.metric] = view[f"objective/{o.metric}"]
        columns += [o.metric for o in objectives]
    params = [c for c in table.columns if c.startswith("config/")]
    view["_front"] = ~view["trial"].isin(front or [])
    view = view.sort_values(
        ["_front", "objective"] if len(objectives) > 1 else ["objective"],
        ascending=[True, primary.mode == "min"] if len(objectives) > 1 else primary.mode == "min",
        na_position="last",
    )
    view = view[columns + ["epochs_run", "stop_reason"] + params]
    view.columns = [c.removeprefix("config/") for c in view.columns]
    if len(objectives) == 1:
        head = f"{primary.reported} ({primary.mode}), best first:"
    else:
        names = ", ".join(f"{o.metric} ({o.mode})" for o in objectives)
        head = f"objectives {names}; Pareto front (*) first, by {primary.metric}:"
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        return head + "\n" + view.to_string(index=False, float_format=lambda v: f"{v:.4g}") + foot
