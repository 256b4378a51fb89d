"""A Tune trial's driver function: one Train run of the trial's hyperparameters."""

from __future__ import annotations

from typing import Any

from ray_jobs.report_relay import start_report_relay
from ray_jobs.train_adapter import RunPlace, launch


def run_trial(hyperparameters: dict[str, Any], static: dict[str, Any]) -> None:
    """One Tune trial: a run of ``hyperparameters`` over ``static["resources"]``' workers.

    The run is named after the trial, so a restarted trial (driver failure or ``--resume``)
    finds its earlier checkpoints and continues from the latest. It lives here, not beside
    the search in ``ray_jobs.tune``: every trial driver imports the module of its function,
    and that one's (Optuna, the storage clients) cost each trial ~0.2 s of CPU for nothing;
    this one imports only the Train adapter.

    ``static``: ``spec`` (a JobSpec), ``resources``, ``train_storage`` (the runs' root) and
    ``relay`` (the experiment's ``start_report_relay()``) that brings each report to Tune.
    """
    from ray import tune

    place = RunPlace(f"trial-{tune.get_context().get_trial_id()}", static["train_storage"])
    launch(
        static["spec"],
        static["resources"],
        place,
        hyperparameters,
        progress=tune.report,
        relay=static.get("relay") or start_report_relay(),
    )
