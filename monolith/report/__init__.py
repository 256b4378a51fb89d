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

from monolith.report.load import ExperimentResults, find_results, load_results
from monolith.report.page import build_report, render_report
from monolith.report.sections import SECTIONS, probe_targets

__all__ = [
    "SECTIONS",
    "ExperimentResults",
    "build_report",
    "find_results",
    "load_results",
    "probe_targets",
    "render_report",
]
