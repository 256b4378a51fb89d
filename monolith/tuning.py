"""What a tuning experiment is asked to do, and what it leaves behind.

``TuneSettings`` is the config's ``tune:`` section (validated at the edge, before any
cluster resource is requested). The result writers turn the per-trial report histories
into ``trials.csv``, ``best_config.json`` (the original's flat format, ready for the final
job), an Optuna study in a SQLite file (``optuna-dashboard sqlite:///optuna.db``) and a
printed summary. No Ray here: ``ray_jobs/tune.py`` hands plain rows in.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from monolith.config import MonolithConfig, _build
from monolith.errors import ConfigError


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
        return self

    def resources_per_worker(self) -> dict[str, float]:
        out = {"CPU": float(self.cpus_per_worker)}
        if self.gpus_per_worker:
            out["GPU"] = float(self.gpus_per_worker)
        return {**out, **{k: float(v) for k, v in self.extra_resources.items()}}

    def epochs(self, cfg: MonolithConfig) -> int:
        return self.max_epochs or cfg.train.epochs


def tune_settings(cfg: MonolithConfig, **overrides: Any) -> TuneSettings:
    """The validated ``tune:`` section of ``cfg`` with command-line overrides applied."""
    settings = _build(TuneSettings, cfg.extra.get("tune"), "tune")
    for key, value in overrides.items():
        if value is not None:
            setattr(settings, key, value)
    return settings.validate()


def with_epochs(cfg: MonolithConfig, epochs: int) -> MonolithConfig:
    train = dataclasses.replace(cfg.train, epochs=epochs)
    return dataclasses.replace(cfg, train=train)


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


def stop_reason(record: TrialRecord, max_epochs: int) -> str:
    if record.status == "ERROR":
        return f"error: {record.error or 'unknown'}"
    if not record.history:
        return "not started" if record.status == "PENDING" else "no report"
    last = record.history[-1]
    epochs = int(last.get("epoch", len(record.history)))
    if record.status not in ("TERMINATED",):
        return record.status.lower()
    if last.get("early_stopped"):
        return "early stopping (patience)"
    if epochs >= max_epochs:
        return "completed (max epochs)"
    return "stopped by ASHA"


def _best(values: list[float], mode: str) -> float:
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not finite:
        return math.nan
    return min(finite) if mode == "min" else max(finite)


def trials_table(
    records: list[TrialRecord], metric: str, mode: str, max_epochs: int
) -> pd.DataFrame:
    """One row per trial: params, per-metric best and last, epochs run, status, stop reason."""
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
        row["objective"] = _best([h.get(metric, math.nan) for h in rec.history], mode)
        row["epochs_run"] = int(rec.history[-1].get("epoch", 0)) if rec.history else 0
        row["status"] = rec.status
        row["stop_reason"] = stop_reason(rec, max_epochs)
        row["wall_seconds"] = rec.wall_seconds
        rows.append(row)
    return pd.DataFrame(rows)


def best_trial(records: list[TrialRecord], metric: str, mode: str) -> TrialRecord:
    scored = [
        (_best([h.get(metric, math.nan) for h in r.history], mode), r)
        for r in records
        if r.status != "ERROR"
    ]
    scored = [(v, r) for v, r in scored if math.isfinite(v)]
    if not scored:
        raise ConfigError(f"no trial reported a finite {metric}: nothing to choose from")
    sign = 1.0 if mode == "min" else -1.0
    return min(scored, key=lambda vr: (sign * vr[0], vr[1].number))[1]


def best_config(base: MonolithConfig, record: TrialRecord) -> dict[str, Any]:
    """The flat hyperparameters of the best trial (all of them, not only the searched)."""
    return base.with_hyperparameters(record.params).hyperparameters()


def export_optuna(
    records: list[TrialRecord],
    distributions: dict[str, Any],
    metric: str,
    mode: str,
    path: str | Path,
    study_name: str,
) -> Path:
    """Write the study (params, per-epoch intermediate values, state) to a SQLite file."""
    import optuna

    path = Path(path)
    if path.exists():
        path.unlink()
    study = optuna.create_study(
        study_name=study_name,
        storage=f"sqlite:///{path.resolve()}",
        direction="minimize" if mode == "min" else "maximize",
    )
    for rec in sorted(records, key=lambda r: r.number):
        values = [h.get(metric, math.nan) for h in rec.history]
        value = _best(values, mode)
        finished = rec.status == "TERMINATED" and math.isfinite(value)
        params = {k: v for k, v in rec.params.items() if k in distributions}
        trial = optuna.trial.create_trial(
            params=params,
            distributions={k: distributions[k] for k in params},
            value=value if finished else None,
            intermediate_values={
                int(h.get("epoch", i + 1)): float(v)
                for i, (h, v) in enumerate(zip(rec.history, values, strict=True))
                if math.isfinite(v)
            },
            state=optuna.trial.TrialState.COMPLETE if finished else optuna.trial.TrialState.FAIL,
            user_attrs={"trial_id": rec.trial_id, "status": rec.status},
        )
        study.add_trial(trial)
    return path


def write_results(
    directory: str | Path,
    records: list[TrialRecord],
    base: MonolithConfig,
    distributions: dict[str, Any],
    metric: str,
    mode: str,
    max_epochs: int,
    study_name: str,
) -> dict[str, Any]:
    """Write best_config.json, trials.csv, optuna.db, summary.txt; returns the summary."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    table = trials_table(records, metric, mode, max_epochs)
    table.to_csv(directory / "trials.csv", index=False)
    best = best_trial(records, metric, mode)
    flat = best_config(base, best)
    tmp = directory / "best_config.json.tmp"
    tmp.write_text(json.dumps(flat, indent=2, sort_keys=True))
    tmp.replace(directory / "best_config.json")
    export_optuna(records, distributions, metric, mode, directory / "optuna.db", study_name)
    summary = {
        "metric": metric,
        "mode": mode,
        "best_trial": best.number,
        "best_trial_id": best.trial_id,
        "best_objective": float(table.loc[table["trial"] == best.number, "objective"].iloc[0]),
        "trials": len(records),
        "stop_reasons": table["stop_reason"].value_counts().to_dict(),
    }
    (directory / "summary.json").write_text(json.dumps(summary, indent=2))
    (directory / "summary.txt").write_text(summary_table(table, metric, mode) + "\n")
    return summary


def summary_table(table: pd.DataFrame, metric: str, mode: str) -> str:
    """The trials as a fixed-width table, best first."""
    cols = ["trial", "objective", "epochs_run", "stop_reason"]
    params = [c for c in table.columns if c.startswith("config/")]
    view = table[cols + params].copy()
    view.columns = [c.removeprefix("config/") for c in view.columns]
    view = view.sort_values("objective", ascending=mode == "min", na_position="last")
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        return f"{metric} ({mode}), best first:\n" + view.to_string(
            index=False, float_format=lambda v: f"{v:.4g}"
        )
