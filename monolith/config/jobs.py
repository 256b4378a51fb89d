"""The jobs' sections: ``tune`` (what a tuning experiment is asked to do) and ``final``
(the final training run), and the worker group both of them ask Ray for.

Validated with the rest of the config, before any cluster resource is requested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from monolith.config.objectives import Objective, parse_objectives
from monolith.errors import ConfigError

if TYPE_CHECKING:
    from monolith.config import MonolithConfig

# Trials stopped by ASHA rank on one metric only: with several objectives, "none" (no
# early stopping; each trial runs its epochs or its patience) keeps the front unbiased,
# "primary" buys the compute back by letting ASHA rank the first objective.
MULTI_OBJECTIVE_STOPPING = ("none", "primary")


def _bad(where: str, section: Any, key: str, allowed: str) -> ConfigError:
    return ConfigError(f"{where}.{key} = {getattr(section, key)!r} is invalid: {allowed}")


def _is_int(value: Any, lo: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo


@dataclass
class WorkerResources:
    """The Ray Train worker group of a run: how many workers, what each holds, how often
    the group may be restarted (each time from the last checkpoint)."""

    # Each worker is a MultiWorkerMirroredStrategy worker.
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    # Restarts of a failed worker group (Train).
    worker_max_failures: int = 3
    # Ray Train's preemption watcher (an actor per Train run): drains runs on nodes being
    # reclaimed, as spot GPU pools are; off where nodes are not preempted (a laptop).
    watch_preemption: bool = True

    def validate_workers(self, where: str) -> None:
        for key, lo in (("num_workers", 1), ("worker_max_failures", 0)):
            if not _is_int(getattr(self, key), lo):
                raise _bad(where, self, key, f"expected an integer >= {lo}")
        for key in ("use_gpu", "watch_preemption"):
            if not isinstance(getattr(self, key), bool):
                raise _bad(where, self, key, "expected true or false")
        for key in ("cpus_per_worker", "gpus_per_worker"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise _bad(where, self, key, "expected a number >= 0")
        if self.cpus_per_worker == 0 and self.gpus_per_worker == 0:
            raise _bad(where, self, "cpus_per_worker", "a worker needs CPUs or GPUs")
        if self.use_gpu and self.gpus_per_worker == 0:
            self.gpus_per_worker = 1.0
        if not self.use_gpu and self.gpus_per_worker > 0:
            raise _bad(where, self, "gpus_per_worker", "set use_gpu: true to request GPUs")

    def resources_per_worker(self) -> dict[str, float]:
        out = {"CPU": float(self.cpus_per_worker)}
        if self.gpus_per_worker:
            out["GPU"] = float(self.gpus_per_worker)
        return out


@dataclass
class TuneSettings(WorkerResources):
    """The ``tune:`` section of a config."""

    name: str = "monolith-tune"
    # Experiment storage: a local folder, or s3://bucket/prefix (needed on multi-node clusters).
    storage: str = "runs/experiments"
    search_space: str = "configs/search_space.yaml"
    num_samples: int = 8
    max_concurrent_trials: int = 1
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
    # Retries of a failed trial driver (Tune); worker_max_failures is the Train group's.
    max_failures: int = 2
    extra_resources: dict[str, float] = field(default_factory=dict)
    # Refuse at once when the running cluster cannot fit one trial; off for autoscaling
    # clusters, whose worker groups grow on demand.
    check_capacity: bool = True
    # How often each trial's Train controller polls its workers (reports, health). Ray's
    # default (2 s) adds up to a poll to each trial's start, to every report and to its end.
    train_poll_interval_s: float = 0.25
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
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise _bad(where, self, "name", "expected a non-empty name without '/'")
        for key, lo in (
            ("num_samples", 1),
            ("max_concurrent_trials", 1),
            ("grace_period", 1),
            ("n_startup_trials", 1),
            ("max_failures", 0),
            ("seed", 0),
        ):
            if not _is_int(getattr(self, key), lo):
                raise _bad(where, self, key, f"expected an integer >= {lo}")
        if self.max_epochs is not None and not _is_int(self.max_epochs, 1):
            raise _bad(where, self, "max_epochs", "expected an integer >= 1 or null")
        for key in ("multivariate", "check_capacity"):
            if not isinstance(getattr(self, key), bool):
                raise _bad(where, self, key, "expected true or false")
        self._validate_positive(where)
        self.validate_workers(where)
        if not isinstance(self.extra_resources, dict):
            raise _bad(
                where, self, "extra_resources", "expected a mapping of resource name -> amount"
            )
        if self.objectives is not None:
            parse_objectives(self.objectives, f"{where}.objectives")
        if self.multi_objective_stopping not in MULTI_OBJECTIVE_STOPPING:
            raise _bad(
                where,
                self,
                "multi_objective_stopping",
                f"allowed values {list(MULTI_OBJECTIVE_STOPPING)}",
            )
        self._validate_budgets(where)
        return self

    def _validate_positive(self, where: str) -> None:
        for key in (
            "driver_cpus",
            "reduction_factor",
            "train_poll_interval_s",
            "worker_start_timeout_s",
        ):
            value = getattr(self, key)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise _bad(where, self, key, "expected a number >= 0")
            if value == 0:
                why = (
                    " (Ray rejects a zero CPU share for the driver)" if key == "driver_cpus" else ""
                )
                raise _bad(where, self, key, f"must be > 0{why}")
        if self.reduction_factor <= 1:
            raise _bad(where, self, "reduction_factor", "expected a number > 1")

    def _validate_budgets(self, where: str) -> None:
        budget = self.time_budget_s
        if budget is not None and (
            not isinstance(budget, int | float)
            or isinstance(budget, bool)
            or not math.isfinite(budget)
            or budget <= 0
        ):
            raise _bad(
                where,
                self,
                "time_budget_s",
                "expected a number of seconds > 0, or null for no budget",
            )
        if self.stop_after_no_improvement is not None and not _is_int(
            self.stop_after_no_improvement, 1
        ):
            raise _bad(
                where,
                self,
                "stop_after_no_improvement",
                "expected an integer >= 1 (finished trials without a better primary objective), "
                "or null",
            )

    def objectives_for(self, cfg: MonolithConfig) -> list[Objective]:
        """The objectives, primary first (the default: ``eval.objective`` alone)."""
        if self.objectives is None:
            return [Objective(cfg.eval.objective, cfg.eval.mode)]
        return parse_objectives(self.objectives)

    def resources_per_worker(self) -> dict[str, float]:
        out = super().resources_per_worker()
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


@dataclass
class FinalSettings(WorkerResources):
    """The ``final:`` section of a config."""

    # Where bundles are published: a folder or s3://bucket/prefix.
    output: str = "runs/bundles"
    # Fixed epoch budget on train+val (no validation left to stop on); None = train.epochs.
    epochs: int | None = None
    # Where the Train run keeps its checkpoints when no experiment is given.
    storage: str = "runs/final"

    def validate(self, where: str = "final") -> FinalSettings:
        self.validate_workers(where)
        if self.epochs is not None and not _is_int(self.epochs, 1):
            raise ConfigError(f"{where}.epochs = {self.epochs!r} is invalid: expected >= 1 or null")
        return self
