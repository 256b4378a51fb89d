"""The report's nine sections: each a function of the loaded results that returns its HTML.

``SECTIONS`` orders them on the page; ``EXPLAIN`` is the line under each title; ``BUILDERS``
draws each one. A section whose input is missing says so instead of failing.
"""

from __future__ import annotations

from monolith.report.sections.curves import history_section, learning_curves_section
from monolith.report.sections.overview import lineage_section, summary_section, trials_section
from monolith.report.sections.parameters import importances_section, parallel_section
from monolith.report.sections.pareto import pareto_section
from monolith.report.sections.probes import probe_targets, probes_section

__all__ = ["BUILDERS", "EXPLAIN", "SECTIONS", "probe_targets"]

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

EXPLAIN = {
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

BUILDERS = {
    "summary": summary_section,
    "history": history_section,
    "learning-curves": learning_curves_section,
    "importances": importances_section,
    "parallel-coordinates": parallel_section,
    "pareto": pareto_section,
    "probes": probes_section,
    "lineage": lineage_section,
    "trials": trials_section,
}
