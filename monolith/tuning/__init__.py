"""What a tuning experiment is asked to do, and what it leaves behind.

``TuneSettings`` (``monolith.config``) is the config's ``tune:`` section, validated when the
config loads: the objectives (one, or several for a Pareto search), the schedulers' settings
and the experiment's budgets. The result writers turn the per-trial
report histories into ``results/``:

    best_config.json  the chosen trial's flat hyperparameters (ready for the final job)
    trials.csv        one row per trial: params, best/last of every metric, stop reason
    pareto.csv        the non-dominated trials, one column per objective, the chosen one
    history.csv       one row per report: trial, trial_id, epoch, val_*/loss*/best_* values
    lineage.json      what produced the results: config, search space, code, data, versions
    optuna.db         an Optuna study (``optuna-dashboard sqlite:///optuna.db``)
    summary.json/.txt the objectives, the chosen trial, the front, how the experiment ended

No Ray here: ``ray_jobs/tune.py`` hands plain rows and values in. The modules: ``settings``
(the ``tune:`` section with overrides; ``TuneSettings`` itself is a config section),
``budgets``, ``records`` (a trial, lineage), ``pareto`` (the front and the choice),
``tables``, ``study`` (optuna.db) and ``results`` (the folder).
"""

from __future__ import annotations

from monolith.config import (
    MULTI_OBJECTIVE_STOPPING,
    Objective,
    TuneSettings,
    parse_objectives,
)
from monolith.tuning.budgets import (
    ALL_FINISHED,
    ended_by_no_improvement,
    ended_by_time_budget,
    trials_since_improvement,
)
from monolith.tuning.pareto import (
    PARETO_RULE,
    Choice,
    best_trial,
    choose,
    choose_from_front,
    dominates,
    pareto_front,
)
from monolith.tuning.records import (
    Lineage,
    TrialRecord,
    best_of,
    objective_value,
    stop_reason,
    utc_now,
)
from monolith.tuning.results import (
    best_config,
    write_results,
)
from monolith.tuning.settings import (
    tune_settings,
    with_epochs,
)
from monolith.tuning.study import (
    export_optuna,
)
from monolith.tuning.tables import (
    history_table,
    pareto_table,
    summary_table,
    trials_table,
)

__all__ = [
    "ALL_FINISHED",
    "Choice",
    "Lineage",
    "MULTI_OBJECTIVE_STOPPING",
    "Objective",
    "PARETO_RULE",
    "TrialRecord",
    "TuneSettings",
    "best_config",
    "best_of",
    "best_trial",
    "choose",
    "choose_from_front",
    "dominates",
    "ended_by_no_improvement",
    "ended_by_time_budget",
    "export_optuna",
    "history_table",
    "objective_value",
    "pareto_front",
    "pareto_table",
    "parse_objectives",
    "stop_reason",
    "summary_table",
    "trials_since_improvement",
    "trials_table",
    "tune_settings",
    "utc_now",
    "with_epochs",
    "write_results",
]
