"""Locating and loading an experiment's results folder: what the report reads, loaded once.

Only ``trials.csv`` is required; every other file is optional (an experiment run before it
was written still loads), and an ``s3://`` experiment's result files are downloaded first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from monolith.errors import DataError
from monolith.experiment import RESULTS_DIR, TUNE_DIR
from monolith.results_files import (
    HISTORY_FILE,
    LINEAGE_FILE,
    PARETO_FILE,
    RESULT_FILES,
    STUDY_FILE,
    SUMMARY_FILE,
    TRIALS_FILE,
)
from monolith.tuning import Objective
from monolith.uri import is_s3_uri, join

if TYPE_CHECKING:
    from monolith.storage import StorageSettings

log = logging.getLogger(__name__)


@dataclass
class ExperimentResults:
    """Everything the report reads from one results folder, loaded once."""

    name: str
    directory: Path
    trials: pd.DataFrame
    summary: dict[str, Any]
    objectives: list[Objective]
    # One row per report (trial, trial_id, epoch, metrics...), or None when none was kept.
    history: pd.DataFrame | None = None
    history_source: str = ""
    pareto: pd.DataFrame | None = None
    lineage: dict[str, Any] | None = None
    # An in-memory copy of the Optuna study, or None; study_note says why it is missing.
    study: Any = None
    study_note: str = ""
    # Per objective metric: the value of every trial (indexed by trial number), and whence.
    values: dict[str, pd.Series] = field(default_factory=dict)
    value_sources: dict[str, str] = field(default_factory=dict)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def best_trial(self) -> int | None:
        """The chosen trial: summary.json's (or pareto.csv's) choice, else the best value."""
        if self.pareto is not None and "chosen" in self.pareto:
            chosen = self.pareto[self.pareto["chosen"].map(_truthy)]
            if len(chosen):
                return int(chosen["trial"].iloc[0])
        if self.summary.get("best_trial") is not None:
            return int(self.summary["best_trial"])
        first = self.objectives[0]
        series = self.values[first.metric].dropna()
        if series.empty:
            return None
        return int(series.idxmin() if first.mode == "min" else series.idxmax())

    def stop_reasons(self) -> pd.Series:
        """Every trial's stop reason by trial number ("unknown" where none was recorded)."""
        if "stop_reason" in self.trials:
            return self.trials.set_index("trial")["stop_reason"].fillna("unknown").astype(str)
        return pd.Series("unknown", index=self.trials["trial"])

    @property
    def param_columns(self) -> list[str]:
        """The trials table's hyperparameter columns (``config/<name>``)."""
        return [c for c in self.trials.columns if c.startswith("config/")]


def find_results(where: str | Path) -> Path:
    """The results folder of ``where``: an experiment folder (holding ``results/``) or the
    results folder itself; DataError naming the path when neither holds ``trials.csv``."""
    path = Path(where).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such experiment or results folder")
    if not path.is_dir():
        raise DataError(f"{path}: expected an experiment folder or its results folder, not a file")
    for candidate in (path / RESULTS_DIR, path):
        if (candidate / TRIALS_FILE).is_file():
            return candidate
    if (path / RESULTS_DIR).is_dir():
        raise DataError(
            f"{path / RESULTS_DIR / TRIALS_FILE}: missing (the tune job did not finish?)"
        )
    raise DataError(
        f"{path}: no {TRIALS_FILE} here nor in {path / RESULTS_DIR} (not an experiment folder?)"
    )


@contextlib.contextmanager
def local_results(where: str | Path, settings: StorageSettings | None) -> Iterator[Path]:
    """A local results folder for ``where``; an s3:// experiment is downloaded into a temporary
    folder first (only the result files: checkpoints under ``tune/`` stay where they are)."""
    if not is_s3_uri(str(where)):
        yield find_results(where)
        return
    from monolith.storage import list_objects, object_info, read_object

    uri = str(where).rstrip("/")
    results = next(
        (u for u in (join(uri, RESULTS_DIR), uri) if object_info(join(u, TRIALS_FILE), settings)),
        None,
    )
    if results is None:
        raise DataError(f"{uri}: no {TRIALS_FILE} here nor under {join(uri, RESULTS_DIR)}")
    present = {info.key.rsplit("/", 1)[-1] for info in list_objects(results, settings)}
    with tempfile.TemporaryDirectory(prefix="monolith-report-") as tmp:
        # Named after the experiment, so the report's title matches a local run's.
        parts = results.rstrip("/").split("/")
        local = Path(tmp) / (parts[-2] if parts[-1] == RESULTS_DIR else parts[-1]) / RESULTS_DIR
        local.mkdir(parents=True)
        for name in RESULT_FILES:
            if name in present:
                (local / name).write_bytes(read_object(join(results, name), settings))
        log.info("downloaded %d result file(s) from %s", len(present & set(RESULT_FILES)), results)
        yield local


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV table: {exc}") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None


def _objectives(summary: dict[str, Any]) -> list[Objective]:
    listed = summary.get("objectives")
    if isinstance(listed, list) and listed:
        return [Objective(str(o["metric"]), str(o.get("mode", "min"))) for o in listed]
    return [Objective(str(summary.get("metric", "objective")), str(summary.get("mode", "min")))]


def _history_from_tune_folder(tune: Path, trials: pd.DataFrame) -> pd.DataFrame | None:
    """Per-epoch reports from Ray Tune's own ``<trial folder>/result.json`` (JSON lines): the
    fallback for experiments run before ``history.csv`` was written."""
    numbers = dict(zip(trials["trial_id"].astype(str), trials["trial"], strict=True))
    rows = []
    for result in sorted(tune.glob("*/result.json")):
        for line in result.read_text().splitlines():
            try:
                report = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: the earlier lines are still good
            trial_id = str(report.get("trial_id", ""))
            if trial_id not in numbers:
                continue
            row = {
                "trial": numbers[trial_id],
                "trial_id": trial_id,
                "epoch": report.get("epoch", report.get("training_iteration")),
            }
            row.update(
                {
                    k: v
                    for k, v in report.items()
                    if k.startswith(("val_", "loss", "best_")) and isinstance(v, int | float)
                }
            )
            rows.append(row)
    return pd.DataFrame(rows) if rows else None


def _load_study(path: Path) -> tuple[Any, str]:
    """An in-memory copy of the study in ``path`` (the experiment's file is only read)."""
    import optuna

    if not path.is_file():
        return None, f"no {STUDY_FILE} in the results folder"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = None
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
        names = optuna.study.get_all_study_names(storage)
        if not names:
            return None, f"{STUDY_FILE} holds no study"
        stored = optuna.load_study(study_name=names[0], storage=storage)
        study = optuna.create_study(directions=stored.directions, study_name=names[0])
        study.add_trials(stored.get_trials(deepcopy=False))
        return study, ""
    except Exception as exc:  # an unreadable study costs one section, not the whole page
        log.warning("cannot read %s: %s", path, exc)
        return None, f"{STUDY_FILE} could not be read: {type(exc).__name__}: {exc}"
    finally:
        if storage is not None:
            storage.engine.dispose()  # let go of the file (a downloaded copy is deleted next)
        optuna.logging.set_verbosity(verbosity)


def _objective_values(
    trials: pd.DataFrame, objective: Objective, index: int, single: bool, study: Any
) -> tuple[pd.Series, str]:
    """Every trial's value of ``objective``, and which column or file it came from.

    A single objective is trials.csv's ``objective`` column. A multi-objective run may write
    one column per objective; failing that, the study's values are used, then the metric's
    best-over-epochs column.
    """
    by_trial = trials.set_index("trial")
    stripped = objective.metric.removeprefix("best_")
    candidates = [f"objective/{objective.metric}"] + (["objective"] if single else [])
    for column in candidates:
        if column in by_trial:
            return pd.to_numeric(by_trial[column], errors="coerce"), f"{TRIALS_FILE}: {column}"
    if study is not None and len(study.directions) > index:
        numbers = {str(t): n for t, n in zip(trials["trial_id"], trials["trial"], strict=True)}
        found: dict[int, float] = {}
        for t in study.get_trials(deepcopy=False):
            if not t.values:
                continue
            number = numbers.get(str(t.user_attrs.get("trial_id")), t.number + 1)
            found[int(number)] = float(t.values[index])
        if found:
            return (
                pd.Series(found, dtype=float).reindex(by_trial.index),
                f"{STUDY_FILE}: objective {index + 1}",
            )
    for column in (objective.metric, f"best/{stripped}", f"best/{objective.metric}"):
        if column in by_trial:
            return pd.to_numeric(by_trial[column], errors="coerce"), f"{TRIALS_FILE}: {column}"
    return pd.Series(np.nan, index=by_trial.index, dtype=float), "not found"


def load_results(results: str | Path) -> ExperimentResults:
    """Read a local results folder (``find_results`` accepts the experiment folder too)."""
    directory = find_results(results)
    trials = _read_csv(directory / TRIALS_FILE)
    missing = {"trial", "trial_id"} - set(trials.columns)
    if missing:
        raise DataError(f"{directory / TRIALS_FILE}: no column(s) {sorted(missing)}")
    trials = trials.sort_values("trial").reset_index(drop=True)
    summary = _read_json(directory / SUMMARY_FILE) if (directory / SUMMARY_FILE).is_file() else {}
    lineage = _read_json(directory / LINEAGE_FILE) if (directory / LINEAGE_FILE).is_file() else None
    pareto = _read_csv(directory / PARETO_FILE) if (directory / PARETO_FILE).is_file() else None

    history, history_source = None, ""
    if (directory / HISTORY_FILE).is_file():
        history, history_source = _read_csv(directory / HISTORY_FILE), HISTORY_FILE
    elif (directory.parent / TUNE_DIR).is_dir():
        history = _history_from_tune_folder(directory.parent / TUNE_DIR, trials)
        history_source = f"{TUNE_DIR}/*/result.json" if history is not None else ""

    study, study_note = _load_study(directory / STUDY_FILE)
    name = (
        (lineage or {}).get("experiment")
        or (study.study_name if study is not None else None)
        or (directory.parent.name if directory.name == RESULTS_DIR else directory.name)
    )
    exp = ExperimentResults(
        name=str(name),
        directory=directory,
        trials=trials,
        summary=summary,
        objectives=_objectives(summary),
        history=history,
        history_source=history_source,
        pareto=pareto,
        lineage=lineage,
        study=study,
        study_note=study_note,
    )
    for i, objective in enumerate(exp.objectives):
        values, source = _objective_values(trials, objective, i, not exp.multi_objective, study)
        exp.values[objective.metric] = values
        exp.value_sources[objective.metric] = source
    return exp


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")
