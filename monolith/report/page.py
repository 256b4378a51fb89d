"""The report page: sections in order, the CSS and the two small scripts, written whole.

The page opens offline: plotly.js is inlined once and nothing is fetched.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from monolith.errors import StorageError
from monolith.report.load import ExperimentResults, load_results, local_results
from monolith.report.sections import BUILDERS, EXPLAIN, SECTIONS
from monolith.results_files import REPORT_FILE
from monolith.uri import is_s3_uri

if TYPE_CHECKING:
    from monolith.storage import StorageSettings

log = logging.getLogger(__name__)

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
    body = BUILDERS[section_id](exp)
    return (
        f'<section><h2 id="{section_id}">{html.escape(title)}</h2>'
        f'<p class="explain">{html.escape(EXPLAIN[section_id])}</p>{body}</section>'
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
    with local_results(results, settings) as directory:
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
