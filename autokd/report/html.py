"""report.html: every section with interactive Plotly figures, in one self-contained file.

Why self-contained: the report must open offline and copied alone to another machine, so
plotly.js is embedded inline once (no CDN tag) and pareto.png is embedded as a data URI.
"""

from __future__ import annotations

import base64
import html
import itertools
from typing import Any

from autokd.report.axes import axes_of
from autokd.report.format import (
    CLAIM_COLUMNS,
    LATENCY_COLUMNS,
    REASON_COLUMNS,
    RECIPE_COLUMNS,
    Column,
    fmt,
    front_columns,
    importance_columns,
    importance_rows,
    kd_columns,
    teacher_columns,
    with_lr,
)
from autokd.report.plots import (
    figure_3d,
    hypervolume_figure,
    importance_figure,
    latency_figure,
    pair_figure,
    plotly_div,
    selection_figure,
)
from autokd.report.text import (
    NO_BASELINE,
    hypervolume_text,
    importance_text,
    kd_gain_text,
    latency_text,
    left_off_text,
    selection_text,
    summary_rows,
)

__all__ = ["html_table", "render_html"]


def html_table(rows: list[dict[str, Any]], cols: list[Column], cls: str = "") -> str:
    """A table whose cells carry their kind as class, so text aligns left and numbers right."""
    if not rows:
        return "<p class='none'>none</p>"
    head = "".join(f"<th class='{kind}'>{html.escape(h)}</th>" for h, _, kind in cols)
    body = "".join("<tr>" + "".join(f"<td class='{kind}'>{html.escape(fmt(r.get(k), kind))}</td>"
                                    for _, k, kind in cols) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv_table(rows: list[tuple[str, str]]) -> str:
    """The summary facts as a two-column table."""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table class='kv'><tbody>{body}</tbody></table>"


def _section(title: str, anchor: str, *parts: str) -> str:
    """A titled section; ``anchor`` lets a link point at it."""
    return f"<section id='{anchor}'><h2>{html.escape(title)}</h2>{''.join(parts)}</section>"


def _p(text: str) -> str:
    """A paragraph of escaped text."""
    return f"<p>{html.escape(text)}</p>"


def _front_section(data: dict[str, Any], png: bytes) -> str:
    """The front: interactive views, the static image, the member table and their recipes."""
    names = data["plot_objectives"]
    figs = [plotly_div(pair_figure(data, axes_of(p))) for p in itertools.combinations(names, 2)]
    if len(names) == 3:
        figs.append(plotly_div(figure_3d(data, names)))
    img = base64.b64encode(png).decode("ascii")
    static = (f"<details><summary>static image (pareto.png)</summary><img alt='Pareto front' "
              f"src='data:image/png;base64,{img}'></details>")
    note = _p("Members of the front: feasible, complete trials that no other trial beats on "
              "every objective. Retention = student / teacher accuracy; × = teacher / student. "
              + left_off_text(data.get("usefulness")))
    table = html_table(with_lr(data["front"]), front_columns(data["front"], data.get("metric")),
                       "front")
    recipes = ("<details><summary>full architecture, recipe and training settings</summary>"
               + html_table(data["front"], RECIPE_COLUMNS, "recipes") + "</details>")
    chains = "".join(f"<li>{html.escape(line)}</li>" for line in data.get("chains") or [])
    if chains:
        chains = f"<h3>Teacher-assistant chains</h3><ul>{chains}</ul>"
    return _section("Pareto front", "pareto", *figs, static, note, table, chains, recipes,
                    _per_class(data.get("per_class")))


def _per_class(pc: dict[str, Any] | None) -> str:
    """Each class's accuracy for the teacher and every front member (a table per class)."""
    if not pc:
        return ""
    return (f"<h3>Per-class accuracy ({html.escape(pc['split'])})</h3>"
            + html_table(pc["rows"], [tuple(c) for c in pc["columns"]], "per-class"))


def _html_sections(data: dict[str, Any]) -> list[str]:
    """The analyses after the front, in the order report.md shows them."""
    imp, sel, lp = data["importances"], data["selection"], data["latency_prediction"]
    imp_rows = importance_rows(imp)
    out = [
        _section("Retention vs compression: the article's claims, measured", "claims",
                 _p("Bands by parameter compression (teacher / student). Each band's student is "
                    "chosen by validation retention; its test retention is compared."),
                 html_table(data["claim"], CLAIM_COLUMNS, "claim")),
        _section("Selection: validation vs test", "selection", _p(selection_text(sel)),
                 plotly_div(selection_figure(data["points"])) if data["points"] else ""),
        _section("Convergence", "convergence", _p(hypervolume_text(data["hypervolume"], data.get("hypervolume_scale"))),
                 plotly_div(hypervolume_figure(data["hypervolume"])) if data["hypervolume"]
                 else ""),
        _section("Hyperparameter importances", "importances",
                 _p(importance_text(imp)),
                 plotly_div(importance_figure(imp)) if imp_rows else "",
                 html_table(imp_rows, importance_columns(imp), "importances")),
        _section("KD gain over training from scratch", "kd-gain",
                 *((_p(kd_gain_text(data["kd_gain"])),
                    html_table(data["kd_gain"], kd_columns(data["kd_gain"])))
                   if data["kd_gain"] else (_p(NO_BASELINE),))),
    ]
    if lp:
        out.append(_section("Predicted vs measured latency", "latency", _p(latency_text(lp)),
                            plotly_div(latency_figure(lp)),
                            html_table(lp["rows"], LATENCY_COLUMNS)))
    reasons = [f"<h3>{t}</h3>" + html_table(data[k], REASON_COLUMNS, "reasons") for t, k in
               (("Failed", "failures"), ("Pruned", "pruned"), ("Infeasible", "infeasible"))]
    out.append(_section("Failed, pruned and infeasible trials", "failures", *reasons))
    return out


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1280px;color:#1d2330;padding:0 16px}
h1{font-size:1.6em}h2{border-bottom:1px solid #dde;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:10px 0;font-size:13px}
th,td{border:1px solid #dde;padding:4px 8px;text-align:right}
th{background:#f3f5f9}.text,.list,.json{text-align:left}
td.json{font-family:monospace;font-size:12px}
table.kv th{text-align:left}table.kv td{text-align:left}
.status{padding:8px 12px;background:#fff6d9;border:1px solid #f0d98c;border-radius:4px}
img{max-width:100%}details{margin:8px 0}p.none{color:#777}
"""


def render_html(data: dict[str, Any], png: bytes) -> str:
    """report.html: self-contained (plotly.js inline, images as data URIs, no network)."""
    from plotly.offline import get_plotlyjs

    title = html.escape(f"autokd report: {data['study']}")
    parts = [
        f"<h1>{title}</h1><p>generated {html.escape(data['generated'])}</p>",
        f"<p class='status'>{html.escape(data['status']['note'])}</p>",
        _kv_table(summary_rows(data)),
        _section("Teacher", "teacher", html_table([data["teacher"]], teacher_columns(data["teacher"]), "teacher")),
        _front_section(data, png),
        *_html_sections(data),
    ]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script>"
            f"</head><body>{''.join(parts)}</body></html>")
