"""The files of an experiment's results folder, and the words of its trials table.

``monolith.tuning`` (with the tune job) writes them, ``monolith.report`` reads them: the names
live here, beneath both, so the reader needs nothing of the writer and neither of the page.
"""

TRIALS_FILE = "trials.csv"
SUMMARY_FILE = "summary.json"
HISTORY_FILE = "history.csv"
PARETO_FILE = "pareto.csv"
LINEAGE_FILE = "lineage.json"
STUDY_FILE = "optuna.db"
REPORT_FILE = "report.html"
RESULT_FILES = (TRIALS_FILE, SUMMARY_FILE, HISTORY_FILE, PARETO_FILE, LINEAGE_FILE, STUDY_FILE)

# monolith.tuning.stop_reason's words for a trial the scheduler (or the experiment's budget)
# cut short: the report's learning curves mark where.
ASHA_STOPPED = "stopped by ASHA"
BUDGET_STOPPED = "stopped by budget"
