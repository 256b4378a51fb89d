"""The experiment report: one self-contained HTML page built from an experiment's results.

``build_report(results)`` reads what a tuning run left in ``<experiment>/results/`` and
writes ``report.html`` beside it: the summary, the optimisation history, every trial's
learning curve (with the epochs where ASHA stopped trials), parameter importances, parallel
coordinates, the Pareto front of a multi-objective run, the best trial's probe lifts against
their baselines, the lineage, and the trials table.

The page opens offline: plotly.js is inlined once and nothing is fetched. Only
``trials.csv`` is required; every other file (``summary.json``, ``history.csv``,
``optuna.db``, ``pareto.csv``, ``lineage.json``) is optional, and a section whose input is
missing says so instead of failing, so old experiments still get a report.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from monolith.errors import DataError, StorageError
from monolith.experiment import RESULTS_DIR, TUNE_DIR
from monolith.tuning import Objective, pareto_front
from monolith.uri import is_s3_uri, join

if TYPE_CHECKING:
    from monolith.storage import StorageSettings

log = logging.getLogger(__name__)

# The files of a results folder (written by monolith.tuning and the tune job).
TRIALS_FILE = "trials.csv"
SUMMARY_FILE = "summary.json"
HISTORY_FILE = "history.csv"
PARETO_FILE = "pareto.csv"
LINEAGE_FILE = "lineage.json"
STUDY_FILE = "optuna.db"
REPORT_FILE = "report.html"
RESULT_FILES = (TRIALS_FILE, SUMMARY_FILE, HISTORY_FILE, PARETO_FILE, LINEAGE_FILE, STUDY_FILE)

# monolith.tuning.stop_reason's words for a trial the scheduler (or the experiment's budget)
# cut short: the learning curves mark where.
ASHA_STOPPED = "stopped by ASHA"
BUDGET_STOPPED = "stopped by budget"
# Fewer finished trials than this and an importance is noise, not a measurement.
MIN_TRIALS_FOR_IMPORTANCE = 3

# (id, title) of every section, in page order; the ids are stable anchors for links and tests.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("history", "Optimisation history"),
    ("learning-curves", "Learning curves"),
    ("importances", "Parameter importances"),
    ("parallel-coordinates", "Parallel coordinates"),
    ("pareto", "Pareto front"),
    ("probes", "Probe lifts of the best trial"),
    ("lineage", "Lineage"),
    ("trials", "Trials"),
)


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


# -- locating and loading -----------------------------------------------------------------------
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
def _local_results(where: str | Path, settings: StorageSettings | None) -> Iterator[Path]:
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


# -- small helpers ------------------------------------------------------------------------------
def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def _fmt(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return "–" if not math.isfinite(value) else f"{value:.4g}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return str(value)


def _esc(value: Any) -> str:
    return html.escape(_fmt(value))


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _frame_table(frame: pd.DataFrame, highlight: int | None = None, key: str = "trial") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        best = highlight is not None and key in row and row[key] == highlight
        cells = "".join(f"<td>{_esc(v)}</td>" for v in row)
        rows.append(f'<tr class="best">{cells}</tr>' if best else f"<tr>{cells}</tr>")
    return (
        f'<div class="scroll"><table class="grid"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _figure(fig: Any, height: int = 420) -> str:
    import plotly.io as pio

    margin = {"l": 60, "r": 30, "t": 50, **fig.layout.margin.to_plotly_json()}
    fig.update_layout(template="plotly_white", height=height, margin=margin)
    # The page inlines plotly.js once (in <head>); each figure is a bare div and its script.
    return pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        config={"displaylogo": False, "responsive": True},
        default_width="100%",
        default_height=f"{height}px",
    )


def _trial_colour(number: int) -> str:
    """One colour per trial, the same in every figure of the page."""
    from plotly.colors import qualitative

    palette = qualitative.Plotly + qualitative.D3
    return palette[(int(number) - 1) % len(palette)]


def _stop_reasons(exp: ExperimentResults) -> pd.Series:
    if "stop_reason" in exp.trials:
        return exp.trials.set_index("trial")["stop_reason"].fillna("unknown").astype(str)
    return pd.Series("unknown", index=exp.trials["trial"])


def _params(trials: pd.DataFrame) -> list[str]:
    return [c for c in trials.columns if c.startswith("config/")]


# -- sections -----------------------------------------------------------------------------------
def _summary_section(exp: ExperimentResults) -> str:
    best = exp.best_trial()
    trials = exp.trials.set_index("trial")
    rows: list[tuple[str, Any]] = [("experiment", exp.name)]
    for objective in exp.objectives:
        rows.append(("objective", objective.label))
    if exp.multi_objective:
        rows.append(("Pareto rule", exp.summary.get("pareto_rule", "not recorded")))
    if best is not None and best in trials.index:
        rows.append(("best trial", f"{best} (id {trials.loc[best, 'trial_id']})"))
        for objective in exp.objectives:
            value = exp.values[objective.metric].get(best)
            rows.append((f"{objective.metric} of the best trial", value))
    else:
        rows.append(("best trial", "none (no trial reported a finite objective)"))
    planned = exp.summary.get("trials_planned")
    count = exp.summary.get("trials", len(exp.trials))
    rows.append(("trials", f"{count} (of {planned} planned)" if planned else count))
    if exp.multi_objective and exp.summary.get("pareto_front"):
        rows.append(("Pareto front", ", ".join(f"trial {n}" for n in exp.summary["pareto_front"])))
    reasons = _stop_reasons(exp).value_counts()
    rows.append(("stop reasons", ", ".join(f"{r}: {n}" for r, n in reasons.items())))
    rows.append(("how it ended", exp.summary.get("ended_by", "not recorded")))
    if "wall_seconds" in exp.trials:
        rows.append(("trial time (sum)", f"{exp.trials['wall_seconds'].sum():.0f} s"))
    if not exp.summary:
        rows.append(("note", f"no {SUMMARY_FILE}: objective and best trial inferred"))
    config = ""
    if best is not None and best in trials.index:
        params = {c.removeprefix("config/"): trials.loc[best, c] for c in _params(exp.trials)}
        config = "<h3>Best trial's hyperparameters</h3>" + _table(sorted(params.items()))
    return _table(rows) + config


def _history_section(exp: ExperimentResults) -> str:
    import plotly.graph_objects as go

    reasons = _stop_reasons(exp)
    parts = []
    for objective in exp.objectives:
        values = exp.values[objective.metric]
        fig = go.Figure()
        for reason in sorted(reasons.unique()):
            numbers = reasons.index[reasons == reason]
            fig.add_trace(
                go.Scatter(
                    x=list(numbers),
                    y=values.reindex(numbers).tolist(),
                    mode="markers",
                    name=reason,
                    marker={"size": 10},
                    hovertemplate="trial %{x}: %{y:.4g}<extra>" + html.escape(reason) + "</extra>",
                )
            )
        finite = values.dropna()
        running = finite.cummin() if objective.mode == "min" else finite.cummax()
        fig.add_trace(
            go.Scatter(
                x=list(running.index),
                y=running.tolist(),
                mode="lines",
                line={"shape": "hv", "color": "black", "width": 2},
                name="running best",
            )
        )
        fig.update_layout(
            title=objective.label,
            xaxis_title="trial (in creation order)",
            yaxis_title=objective.metric,
        )
        fig.update_xaxes(dtick=1 if len(values) <= 30 else None)
        parts.append(_figure(fig))
        if finite.empty:
            parts.append(_note(f"no trial reported a finite {objective.metric}"))
        parts.append(_note(f"values from {exp.value_sources[objective.metric]}"))
    return "".join(parts)


def _history_column(history: pd.DataFrame, metric: str) -> str | None:
    """The per-epoch column of ``metric``: its raw value rather than the running best that
    the search ranks (``best_<metric>``), since a running best hides how training went."""
    for column in (metric.removeprefix("best_"), metric, f"best_{metric}"):
        if column in history:
            return column
    return None


def _learning_curves_section(exp: ExperimentResults) -> str:
    import plotly.graph_objects as go

    if exp.history is None or exp.history.empty:
        return _note(
            f"no per-epoch history recorded (no {HISTORY_FILE}, and no {TUNE_DIR}/ folder with "
            "the trials' result.json beside the results)"
        )
    history = exp.history.sort_values(["trial", "epoch"])
    reasons = _stop_reasons(exp)
    best = exp.best_trial()
    parts = [_note(f"per-epoch reports from {exp.history_source}")]
    for objective in exp.objectives:
        column = _history_column(history, objective.metric)
        if column is None:
            parts.append(_note(f"the history has no column {objective.metric}"))
            continue
        fig = go.Figure()
        stops: dict[str, tuple[list, list, list]] = {
            ASHA_STOPPED: ([], [], []),
            BUDGET_STOPPED: ([], [], []),
        }
        for number, curve in history.groupby("trial", sort=True):
            curve = curve.dropna(subset=[column])
            if curve.empty:
                continue
            reason = reasons.get(number, "unknown")
            fig.add_trace(
                go.Scatter(
                    x=curve["epoch"].tolist(),
                    y=curve[column].tolist(),
                    mode="lines+markers",
                    name=f"trial {number}" + (" (best)" if number == best else ""),
                    line={"width": 4 if number == best else 1.5, "color": _trial_colour(number)},
                    marker={"size": 5},
                    hovertemplate=f"trial {number}, epoch %{{x}}: %{{y:.4g}}<extra>"
                    f"{html.escape(reason)}</extra>",
                )
            )
            if reason in stops:
                xs, ys, texts = stops[reason]
                xs.append(curve["epoch"].iloc[-1])
                ys.append(curve[column].iloc[-1])
                texts.append(f"trial {number}")
        for reason, symbol, colour in (
            (ASHA_STOPPED, "x", "#d62728"),
            (BUDGET_STOPPED, "square", "#5f6368"),
        ):
            xs, ys, texts = stops[reason]
            if xs:
                fig.add_trace(
                    go.Scatter(
                        x=xs,
                        y=ys,
                        text=texts,
                        mode="markers",
                        name=reason,
                        marker={
                            "symbol": symbol,
                            "size": 14,
                            "color": colour,
                            "line": {"width": 1},
                        },
                        hovertemplate=f"%{{text}} {reason} after epoch %{{x}}<extra></extra>",
                    )
                )
        fig.update_layout(title=f"{column} per epoch", xaxis_title="epoch", yaxis_title=column)
        fig.update_xaxes(dtick=1 if history["epoch"].max() <= 30 else None)
        parts.append(_figure(fig, height=460))
    return "".join(parts)


def _importances_section(exp: ExperimentResults) -> str:
    import optuna
    import plotly.graph_objects as go

    if exp.study is None:
        return _note(f"importances need the Optuna study: {exp.study_note}")
    complete = exp.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return _note(
            f"not enough finished trials: {len(complete)} complete, importances need at least "
            f"{MIN_TRIALS_FOR_IMPORTANCE}"
        )
    fig = go.Figure()
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        for i, objective in enumerate(exp.objectives[: len(exp.study.directions)]):
            # fANOVA with a small, seeded forest: a few hundred ms, the same figure every time.
            evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=32, max_depth=8, seed=0)
            target = (lambda t, i=i: t.values[i]) if exp.multi_objective else None
            importances = optuna.importance.get_param_importances(
                exp.study, evaluator=evaluator, target=target
            )
            names = list(importances)[::-1]  # plotly draws the first bar at the bottom
            fig.add_trace(
                go.Bar(
                    x=[float(importances[n]) for n in names],
                    y=names,
                    orientation="h",
                    name=objective.metric,
                )
            )
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return _note(f"importances could not be computed: {exc}")
    finally:
        optuna.logging.set_verbosity(verbosity)
    n_params = max(len(t.y) for t in fig.data) if fig.data else 0
    fig.update_layout(
        barmode="group",
        xaxis_title="share of the objective's variance (fANOVA)",
        showlegend=exp.multi_objective,
        legend={"traceorder": "reversed"},  # the same order as each group's bars
        margin={"l": 200},
    )
    return _note(f"from {len(complete)} complete trials") + _figure(
        fig, height=max(300, 40 + 28 * n_params * len(fig.data))
    )


def _dimension(label: str, column: pd.Series) -> dict[str, Any]:
    """A parallel-coordinates axis: categories as ticks, a wide positive range on log10."""
    numeric = pd.to_numeric(column, errors="coerce")
    if column.dtype == bool or numeric.isna().any():
        categories = sorted(column.astype(str).unique())
        codes = column.astype(str).map({c: i for i, c in enumerate(categories)})
        return {
            "label": label,
            "values": codes.tolist(),
            "tickvals": list(range(len(categories))),
            "ticktext": categories,
        }
    positive = numeric[numeric > 0]
    if len(positive) == len(numeric) and len(numeric) and positive.max() / positive.min() >= 100:
        logs = np.log10(numeric)
        # The ends and the whole decades between them: a tick outside the data's range would
        # be drawn beyond the axis, over the labels.
        decades = np.arange(math.ceil(logs.min()), math.floor(logs.max()) + 1)
        ticks = sorted({float(logs.min()), *decades.tolist(), float(logs.max())})
        return {
            "label": f"{label} (log)",
            "values": logs.tolist(),
            "tickvals": ticks,
            "ticktext": [f"{10**t:.2g}" for t in ticks],
        }
    return {"label": label, "values": numeric.tolist()}


def _parallel_section(exp: ExperimentResults) -> str:
    import plotly.graph_objects as go

    first = exp.objectives[0]
    values = exp.values[first.metric]
    trials = exp.trials.set_index("trial")
    keep = values.dropna().index
    if len(keep) < 2:
        return _note("fewer than two trials with an objective value: nothing to compare")
    params = [c for c in _params(exp.trials) if trials.loc[keep, c].notna().all()]
    dims = [_dimension(c.removeprefix("config/"), trials.loc[keep, c]) for c in params]
    for objective in exp.objectives:
        dims.append(
            {"label": objective.metric, "values": exp.values[objective.metric][keep].tolist()}
        )
    fig = go.Figure(
        go.Parcoords(
            dimensions=dims,
            labelangle=-30,
            labelfont={"size": 11},
            tickfont={"size": 10},
            line={
                "color": values[keep].tolist(),
                "colorscale": "Viridis",
                # Best trials in the bright colour, whichever the direction.
                "reversescale": first.mode == "min",
                "showscale": True,
                "colorbar": {"title": {"text": first.metric}},
            },
        )
    )
    # Room above the axes for the slanted parameter names.
    fig.update_layout(margin={"l": 70, "r": 60, "t": 140, "b": 30})
    dropped = len(exp.trials) - len(keep)
    note = f"{len(keep)} trials with a value" + (
        f"; {dropped} without one left out" if dropped else ""
    )
    return _note(note) + _figure(fig, height=520)


def _pareto_section(exp: ExperimentResults) -> str:
    import plotly.graph_objects as go

    if not exp.multi_objective:
        objective = exp.objectives[0]
        return _note(
            f"single-objective experiment ({objective.label}): there is no Pareto front; the "
            "best trial is the one with the best value"
        )
    x_obj, y_obj = exp.objectives[:2]
    metrics = [o.metric for o in exp.objectives]
    frame = pd.DataFrame({m: exp.values[m] for m in metrics})
    if exp.pareto is not None:
        # pareto.csv is the tune job's own front: trust it over a recomputation.
        on_front = set(exp.pareto["trial"].astype(int))
        if set(metrics) <= set(exp.pareto.columns):
            frame = frame.combine_first(exp.pareto.set_index("trial")[metrics])
        frame = frame.dropna()
        source = PARETO_FILE
    else:
        frame = frame.dropna()
        points = {int(k): list(row) for k, row in zip(frame.index, frame.to_numpy(), strict=True)}
        on_front = set(pareto_front(points, [o.mode for o in exp.objectives]))
        source = "recomputed from the trials' values (no pareto.csv)"
    chosen = exp.best_trial()
    front = frame[frame.index.isin(on_front)].sort_values(x_obj.metric)
    rest = frame[~frame.index.isin(on_front)]
    fig = go.Figure()
    for subset, name, marker in (
        (rest, "dominated", {"color": "#9aa0a6", "size": 9}),
        (front, "Pareto front", {"color": "#1f77b4", "size": 12}),
    ):
        fig.add_trace(
            go.Scatter(
                x=subset[x_obj.metric].tolist(),
                y=subset[y_obj.metric].tolist(),
                text=[f"trial {n}" for n in subset.index],
                mode="lines+markers" if name == "Pareto front" else "markers",
                line={"shape": "hv", "dash": "dot"},
                name=name,
                marker=marker,
                hovertemplate="%{text}: (%{x:.4g}, %{y:.4g})<extra></extra>",
            )
        )
    if chosen is not None and chosen in frame.index:
        fig.add_trace(
            go.Scatter(
                x=[frame.loc[chosen, x_obj.metric]],
                y=[frame.loc[chosen, y_obj.metric]],
                mode="markers",
                name=f"chosen: trial {chosen}",
                # Open, so the front's own marker stays visible inside it.
                marker={
                    "symbol": "star-open",
                    "size": 26,
                    "color": "#d62728",
                    "line": {"width": 2},
                },
            )
        )
    fig.update_layout(xaxis_title=x_obj.label, yaxis_title=y_obj.label)
    rule = exp.summary.get("pareto_rule", "not recorded")
    parts = [
        _table([("rule for the chosen trial", rule), ("front", source)]),
        _figure(fig, height=480),
    ]
    if len(exp.objectives) > 2:
        parts.append(_note(f"showing the first two of {len(exp.objectives)} objectives"))
    return "".join(parts)


def probe_targets(columns: list[str] | pd.Index) -> list[str]:
    """Probe targets with both baselines: ``best/val_probe_<t>`` with ``_random`` and ``_raw``
    siblings (so lift columns and ``mean_lift`` are never mistaken for targets)."""
    names = set(columns)
    found = []
    for column in sorted(names):
        if not column.startswith("best/val_probe_"):
            continue
        target = column.removeprefix("best/val_probe_")
        if {f"{column}_random", f"{column}_raw"} <= names:
            found.append(target)
    return found


def _probes_section(exp: ExperimentResults) -> str:
    import plotly.graph_objects as go

    targets = probe_targets(exp.trials.columns)
    if not targets:
        return _note(f"no probe metrics with both baselines in {TRIALS_FILE}")
    best = exp.best_trial()
    if best is None or best not in set(exp.trials["trial"]):
        return _note("no best trial to show")
    row = exp.trials.set_index("trial").loc[best]

    def value(target: str, suffix: str = "") -> float:
        column = f"best/val_probe_{target}{suffix}"
        return float(row[column]) if column in row else math.nan

    table = pd.DataFrame(
        {
            "target": targets,
            "trained": [value(t) for t in targets],
            "random encoder": [value(t, "_random") for t in targets],
            "raw features": [value(t, "_raw") for t in targets],
            "lift vs random": [value(t, "_lift_vs_random") for t in targets],
            "lift vs raw": [value(t, "_lift_vs_raw") for t in targets],
            "lift": [value(t, "_lift") for t in targets],
        }
    )
    fig = go.Figure()
    for column, colour in (
        ("trained", "#1f77b4"),
        ("random encoder", "#9aa0a6"),
        ("raw features", "#ff7f0e"),
    ):
        fig.add_trace(
            go.Bar(
                x=targets,
                y=table[column].tolist(),
                name=column,
                marker_color=colour,
                text=[_fmt(v) for v in table[column]],
                textposition="outside",
            )
        )
    for target, lift, top in zip(
        targets,
        table["lift"],
        table[["trained", "random encoder", "raw features"]].max(axis=1),
        strict=True,
    ):
        if math.isfinite(lift):
            fig.add_annotation(
                x=target,
                y=top,
                text=f"lift {lift:+.3f}",
                showarrow=False,
                yshift=32,
                font={"color": "#2ca02c" if lift > 0 else "#d62728", "size": 13},
            )
    fig.update_layout(
        barmode="group",
        yaxis_title="probe score (validation)",
        title=f"trial {best}",
        margin={"t": 80},
    )
    fig.update_yaxes(rangemode="tozero")
    mean = row.get("best/val_probe_mean_lift")
    parts = [_figure(fig, height=440), _frame_table(table)]
    if mean is not None:
        parts.append(_note(f"mean lift over targets (val_probe_mean_lift): {_fmt(float(mean))}"))
    return "".join(parts)


def _lineage_section(exp: ExperimentResults) -> str:
    if not exp.lineage:
        return _note(
            f"not recorded: this experiment has no {LINEAGE_FILE} (run before lineage was kept)"
        )
    lineage = exp.lineage
    rows = [
        ("git commit", lineage.get("git_commit") or "not recorded"),
        ("data fingerprint", lineage.get("data_fingerprint") or "not recorded"),
        ("prepared dataset", lineage.get("prepared") or "not recorded"),
        ("started", lineage.get("started_at") or "not recorded"),
        ("finished", lineage.get("finished_at") or "not recorded"),
    ]
    versions = lineage.get("versions") or {}
    parts = [_table(rows), "<h3>Library versions</h3>"]
    parts.append(_table(sorted(versions.items())) if versions else _note("not recorded"))
    for key, title in (("config", "Config"), ("search_space", "Search space")):
        body = html.escape(
            json.dumps(lineage.get(key) or {}, indent=2, sort_keys=True, default=str)
        )
        parts.append(f"<details><summary>{title}</summary><pre>{body}</pre></details>")
    return "".join(parts)


def _trials_section(exp: ExperimentResults) -> str:
    trials = exp.trials.copy()
    front = ["trial", "trial_id"]
    for objective in exp.objectives:
        if exp.multi_objective or "objective" not in trials:
            trials[objective.metric] = trials["trial"].map(exp.values[objective.metric])
            front.append(objective.metric)
    if not exp.multi_objective and "objective" in trials:
        front.append("objective")
    front += [c for c in ("epochs_run", "status", "stop_reason", "wall_seconds") if c in trials]
    params = _params(trials)
    view = trials[front + params].rename(columns={c: c.removeprefix("config/") for c in params})
    return _frame_table(view, highlight=exp.best_trial())


# -- the page -----------------------------------------------------------------------------------
_EXPLAIN = {
    "summary": "What was tuned, which trial won, and how the run ended.",
    "history": "Each trial's objective in the order trials were created; the line is the best "
    "so far.",
    "learning-curves": "The objective after every epoch of every trial (thick: the best trial); "
    "a red x marks the last epoch of a trial ASHA stopped early (a grey square: stopped when "
    "the experiment's budget ran out).",
    "importances": "How much of the objective's variation each hyperparameter explains "
    "(fANOVA over the finished trials; rough with few trials).",
    "parallel-coordinates": "Every trial as a line through its hyperparameters to its "
    "objective; drag along an axis to filter.",
    "pareto": "The trade-off between objectives: no trial on the front is beaten on every "
    "objective at once.",
    "probes": "Linear-probe scores (best over epochs) of the best trial's frozen encoder, of an "
    "untrained encoder and of the raw features; the lift is over the stronger baseline, so a "
    "positive lift means the encoder beats both.",
    "lineage": "Where this result came from: code, data and library versions.",
    "trials": "One row per trial (the best highlighted); the full metrics are in trials.csv.",
}

_BUILDERS = {
    "summary": _summary_section,
    "history": _history_section,
    "learning-curves": _learning_curves_section,
    "importances": _importances_section,
    "parallel-coordinates": _parallel_section,
    "pareto": _pareto_section,
    "probes": _probes_section,
    "lineage": _lineage_section,
    "trials": _trials_section,
}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #202124;
  background: #fafafa; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 28px 60px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #dadce0; padding-bottom: 4px; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.2em; }
nav a { margin-right: 1em; }
.explain { color: #5f6368; margin-top: -0.4em; }
.note { color: #5f6368; font-style: italic; }
section { background: #fff; padding: 4px 20px 16px; margin-bottom: 16px; border-radius: 6px;
  box-shadow: 0 1px 2px rgba(0,0,0,0.08); overflow-x: hidden; }
table { border-collapse: collapse; font-size: 0.88em; }
table.kv th { text-align: left; padding: 3px 16px 3px 0; color: #5f6368; font-weight: 500;
  vertical-align: top; }
table.kv td { padding: 3px 0; word-break: break-all; }
.scroll { overflow-x: auto; max-width: 100%; }
table.grid th, table.grid td { border: 1px solid #e0e0e0; padding: 3px 7px; white-space: nowrap; }
table.grid thead th { background: #f1f3f4; position: sticky; top: 0; }
table.grid tr.best td { background: #e6f4ea; font-weight: 600; }
pre { background: #f1f3f4; padding: 10px; overflow-x: auto; font-size: 0.85em; }
"""

# Runs after every figure's own script: counts the drawn plots into data attributes, so a
# headless browser (the report's test, a CI check) can tell the page rendered without errors.
_RENDER_PROBE = """
window.addEventListener("load", function () {
  var plots = Array.from(document.querySelectorAll(".plotly-graph-div"));
  document.body.dataset.plots = plots.length;
  document.body.dataset.rendered = plots.filter(function (d) {
    return d.querySelector(".main-svg") !== null;
  }).length;
});
"""
_ERROR_PROBE = """
window.addEventListener("error", function (e) {
  var b = document.body || document.documentElement;
  b.dataset.errors = (parseInt(b.dataset.errors || "0") + 1).toString();
  b.dataset.lastError = String(e.message);
});
"""


def _section(exp: ExperimentResults, section_id: str, title: str) -> str:
    body = _BUILDERS[section_id](exp)
    return (
        f'<section><h2 id="{section_id}">{html.escape(title)}</h2>'
        f'<p class="explain">{html.escape(_EXPLAIN[section_id])}</p>{body}</section>'
    )


def render_report(exp: ExperimentResults) -> str:
    """The report page of ``exp`` as one self-contained HTML document."""
    from plotly.offline import get_plotlyjs

    sections = "".join(_section(exp, sid, title) for sid, title in SECTIONS)
    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title in SECTIONS)
    objectives = ", ".join(o.label for o in exp.objectives)
    title = html.escape(f"Experiment report: {exp.name}")
    # The error probe comes before plotly.js so a failure while loading it is counted too.
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style><script>{_ERROR_PROBE}</script>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body><main><h1>{title}</h1>"
        f'<p class="explain">{len(exp.trials)} trials; objective {html.escape(objectives)}; '
        f"from {html.escape(str(exp.directory))}</p><nav>{nav}</nav>{sections}</main>"
        f"<script>{_RENDER_PROBE}</script></body></html>\n"
    )


def build_report(
    results: str | Path,
    out: str | Path | None = None,
    settings: StorageSettings | None = None,
) -> Path:
    """Write the report of an experiment; returns the file written.

    Args:
        results: the experiment folder (holding ``results/``) or its results folder; an
            ``s3://`` URI of either is downloaded first (``settings``: its StorageSettings).
        out: the HTML file to write; default ``<results>/report.html`` (for an s3:// experiment,
            ``<experiment>-report.html`` in the current folder: the report is a local file).

    The file is written whole or not at all (a temporary file renamed into place).
    """
    from monolith.storage import write_bytes

    if out is not None and is_s3_uri(str(out)):
        raise StorageError(f"--output {out}: write the report to a local file, then upload it")
    with _local_results(results, settings) as directory:
        exp = load_results(directory)
        page = render_report(exp)
    if out is None:
        out = (
            Path(f"{exp.name}-report.html") if is_s3_uri(str(results)) else directory / REPORT_FILE
        )
    out = Path(out)
    write_bytes(out, page.encode("utf-8"))
    log.info("wrote the report of %s (%d trials) to %s", exp.name, len(exp.trials), out)
    return out
