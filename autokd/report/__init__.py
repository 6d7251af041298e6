"""``autokd report``: what a study found, as report.html, report.md, pareto.png and the tables.

Why it is built like this:
- Everything comes from the Optuna storage (``autokd.study``), so a report can be rebuilt at any
  time, also while a search is still running (finished trials only) and for any controller.
- ``report_data`` gathers plain JSON-safe dicts first; the HTML, Markdown and PNG writers only
  render them. The same dict is what ``--json`` prints, so every number shown has one source.
- report.html must open offline: plotly.js is embedded inline once (no CDN tag) and the static
  pareto.png is embedded as a data URI, so the file works copied alone to another machine.
- Retention is student / teacher accuracy; "retention" is measured on the test split, which
  selection never saw, "val retention" on the validation split used for selection. The claim
  table picks each band's student by validation and shows its test retention, so the table does
  not reward luck on the test split.

The modules, from data to files: ``snapshot`` (a frozen copy of the study), ``trials``,
``front`` and ``sections`` (what each section shows), ``gather`` (all of it as one dict),
``format`` and ``text`` (cells, columns and sentences both reports share), ``markdown``,
``axes``, ``figures`` (pareto.png), ``plots`` and ``html`` (report.html), and ``build`` (the
files). Callers import from ``autokd.report`` itself, which re-exports the names they use.
"""

from __future__ import annotations

from autokd._api import callable_module
from autokd.report.axes import AXIS_LABELS, COST_OBJECTIVES
from autokd.report.build import build_report
from autokd.report.figures import pareto_png
from autokd.report.format import (
    CLAIM_COLUMNS,
    KD_COLUMNS,
    LATENCY_COLUMNS,
    REASON_COLUMNS,
    RECIPE_COLUMNS,
    TEACHER_COLUMNS,
    Column,
    fmt,
    front_columns,
    importance_columns,
    importance_rows,
)
from autokd.report.front import MEMBER_KEYS, front_records, kd_gain_rows
from autokd.report.gather import json_summary, plot_objectives, report_data, storage_label
from autokd.report.html import html_table, render_html
from autokd.report.markdown import md_table, render_markdown
from autokd.report.plots import (
    figure_3d,
    hypervolume_figure,
    importance_figure,
    latency_figure,
    pair_figure,
    selection_figure,
)
from autokd.report.sections import (
    CLAIM_BANDS,
    claim_table,
    hypervolume_curve,
    importances,
    latency_prediction,
    selection_summary,
)
from autokd.report.snapshot import snapshot
from autokd.report.text import selection_text, summary_rows
from autokd.report.trials import POINT_KEYS, grouped_reasons, trial_counts, trial_points

__all__ = [
    "AXIS_LABELS",
    "CLAIM_BANDS",
    "CLAIM_COLUMNS",
    "COST_OBJECTIVES",
    "KD_COLUMNS",
    "LATENCY_COLUMNS",
    "MEMBER_KEYS",
    "POINT_KEYS",
    "REASON_COLUMNS",
    "RECIPE_COLUMNS",
    "TEACHER_COLUMNS",
    "Column",
    "build_report",
    "claim_table",
    "figure_3d",
    "fmt",
    "front_columns",
    "front_records",
    "grouped_reasons",
    "html_table",
    "hypervolume_curve",
    "hypervolume_figure",
    "importance_columns",
    "importance_figure",
    "importance_rows",
    "importances",
    "json_summary",
    "kd_gain_rows",
    "latency_figure",
    "latency_prediction",
    "md_table",
    "pair_figure",
    "pareto_png",
    "plot_objectives",
    "render_html",
    "render_markdown",
    "report_data",
    "selection_figure",
    "selection_summary",
    "selection_text",
    "snapshot",
    "storage_label",
    "summary_rows",
    "trial_counts",
    "trial_points",
]


callable_module(__name__, build_report)  # ``autokd.report(...)`` calls build_report
