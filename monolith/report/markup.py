"""The report's HTML pieces: values as text, notes, tables and plotly figures.

Every value passes through ``esc`` (formatted, then HTML-escaped) on its way into the page.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd


def fmt(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return "–" if not math.isfinite(value) else f"{value:.4g}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return str(value)


def esc(value: Any) -> str:
    return html.escape(fmt(value))


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def frame_table(frame: pd.DataFrame, highlight: int | None = None, key: str = "trial") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        best = highlight is not None and key in row and row[key] == highlight
        cells = "".join(f"<td>{esc(v)}</td>" for v in row)
        rows.append(f'<tr class="best">{cells}</tr>' if best else f"<tr>{cells}</tr>")
    return (
        f'<div class="scroll"><table class="grid"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def figure(fig: Any, height: int = 420) -> str:
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


def trial_colour(number: int) -> str:
    """One colour per trial, the same in every figure of the page."""
    from plotly.colors import qualitative

    palette = qualitative.Plotly + qualitative.D3
    return palette[(int(number) - 1) % len(palette)]
