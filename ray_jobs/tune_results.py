"""The end of a tune experiment: Tune's results as plain per-trial records, which trials
the budget cut, the results folder (written by ``monolith.tuning``, with its lineage and
report) published beside the experiment, and what the console says about them."""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

from monolith.experiment import RESULTS_DIR, TUNE_DIR
from monolith.lineage import git_commit, package_versions
from monolith.tuning import ALL_FINISHED, Lineage, TrialRecord, utc_now, write_results
from monolith.uri import is_s3_uri, join
from ray_jobs.console import say
from ray_jobs.tune_plan import Plan

log = logging.getLogger("ray_jobs.tune")


def records_of(results: Any) -> list[TrialRecord]:
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


def _report(results: Path) -> Path | None:
    """results/report.html; a report that cannot be built costs a warning, not the results."""
    from monolith.report import build_report

    try:
        return build_report(results)
    except Exception as exc:  # noqa: BLE001 - the experiment's results stand without it
        log.warning("the experiment report was not built: %s", exc)
        print(f"warning: the experiment report was not built: {exc}", file=sys.stderr)
        return None


def apply_budget(records: list[TrialRecord], budget: Any, num_samples: int) -> str:
    """How the experiment ended; marks the trials the budget cut (``budget``: the
    experiment's ``ExperimentBudget``, None when it ran without one)."""
    ended_by = (budget.ended_by if budget else None) or ALL_FINISHED
    cut = {r.trial_id for r in records if budget is not None and budget.was_cut(r.trial_id)}
    if budget and not cut and len(records) >= num_samples:
        ended_by = ALL_FINISHED  # the budget ran out with the last trial: it cut nothing
    for record in records:
        record.stopped_by_budget = record.trial_id in cut
        if record.stopped_by_budget and record.trial_id in budget.started and not record.history:
            record.status = "TERMINATED"  # started, cut before its first report
    return ended_by


def finish(
    p: Plan,
    records: list[TrialRecord],
    ended_by: str,
    prepared: str,
    started_at: str,
    started: float,
) -> int:
    """Write and publish the results, say what they hold; the job's exit status."""
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
            planned=p.settings.num_samples,
            lineage=lineage,
        )
        report = _report(local_results)
    finally:
        # Whatever was written (trials.csv, history.csv, ...) is published, even when no
        # trial had a finite objective to choose from.
        target = _publish_results(p, local_results)
    _say_results(p, summary, ended_by, local_results, target, report)
    say(f"wall time {time.perf_counter() - started:.1f} s")
    errors = [r for r in records if r.status == "ERROR"]
    if errors and len(errors) == len(records):
        print(f"error: every trial failed; first: {errors[0].error}", file=sys.stderr)
        return 1
    return 0


def _say_results(
    p: Plan,
    summary: dict[str, Any],
    ended_by: str,
    local_results: Path,
    target: str,
    report: Path | None,
) -> None:
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
