"""The interactive Plotly figures of report.html, each rendered as a div without plotly.js.

Why without plotly.js: the library is embedded once in the page's <head> (see
``autokd.report.html``), so the report opens offline and stays one file.
"""

from __future__ import annotations

import html
from typing import Any

from autokd.config import OBJECTIVES
from autokd.report.axes import COST_OBJECTIVES, axis_label, complete_points, objective_values
from autokd.report.format import fmt, importance_rows

__all__ = ["figure_3d", "hypervolume_figure", "importance_figure", "latency_figure",
           "pair_figure", "plotly_div", "selection_figure"]


def plotly_div(fig: Any) -> str:
    """A figure as a div + inline script; plotly.js itself is embedded once in <head>."""
    fig.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig.to_html(full_html=False, include_plotlyjs=False,
                       config={"displaylogo": False, "responsive": True})


def _hover(points: list[dict[str, Any]]) -> list[str]:
    """Hover text per point: trial, controller, architecture and accuracies."""
    return [f"trial {p['trial']} ({p.get('strategy')})<br>{html.escape(p['architecture'])}<br>"
            f"val {fmt(p.get('val_accuracy'), 'pct')}, test {fmt(p.get('test_accuracy'), 'pct')}"
            for p in points]


def pair_figure(data: dict[str, Any], axes: tuple[str, str]) -> Any:
    """One interactive 2-D view of the front: other trials grey, front red, teacher star."""
    import plotly.graph_objects as go

    xn, yn = axes
    pts = complete_points(data["points"], axes)
    fig = go.Figure()
    for on_front, name, colour, size in ((False, "other trials", "#9aa5b1", 8),
                                         (True, "Pareto front", "#d62728", 11)):
        sel = sorted([p for p in pts if p["on_front"] == on_front],
                     key=lambda p: p[OBJECTIVES[xn][0]])
        fig.add_trace(go.Scatter(x=objective_values(sel, xn), y=objective_values(sel, yn),
                                 name=name, mode="markers+text" if on_front else "markers",
                                 text=[f"#{p['trial']}" for p in sel] if on_front else None,
                                 textposition="top right", hovertext=_hover(sel),
                                 hoverinfo="text", marker={"color": colour, "size": size}))
    _plotly_teacher(fig, data["teacher"], xn, yn)
    xl, yl = axis_label(xn, pts), axis_label(yn, pts)
    fig.update_layout(title=f"Pareto front: {yl} vs {xl}", xaxis_title=xl, yaxis_title=yl,
                      height=440,
                      xaxis_type="log" if xn in COST_OBJECTIVES else "linear",
                      yaxis_type="log" if yn in COST_OBJECTIVES else "linear")
    return fig


def _plotly_teacher(fig: Any, teacher: dict[str, Any], xn: str, yn: str) -> None:
    """The teacher as a star, when it recorded both objectives."""
    import plotly.graph_objects as go

    x, y = teacher.get(OBJECTIVES[xn][0]), teacher.get(OBJECTIVES[yn][0])
    if x is not None and y is not None:
        fig.add_trace(go.Scatter(x=[x], y=[y], name="teacher", mode="markers",
                                 marker={"symbol": "star", "size": 16, "color": "#1f77b4"}))


def figure_3d(data: dict[str, Any], names: list[str]) -> Any:
    """The front in three objectives at once, rotatable."""
    import plotly.graph_objects as go

    pts = complete_points(data["points"], names)
    fig = go.Figure()
    for on_front, name, colour in ((False, "other trials", "#9aa5b1"),
                                   (True, "Pareto front", "#d62728")):
        sel = [p for p in pts if p["on_front"] == on_front]
        x, y, z = (objective_values(sel, n) for n in names)
        fig.add_trace(go.Scatter3d(x=x, y=y, z=z, mode="markers", name=name,
                                   hovertext=_hover(sel), hoverinfo="text",
                                   marker={"color": colour, "size": 4 if not on_front else 6}))
    axis = {f"{a}axis": {"title": axis_label(n, pts), "type": "log" if n in COST_OBJECTIVES else
                         "linear"} for a, n in zip("xyz", names)}
    fig.update_layout(title="3-D Pareto front", scene=axis, height=560)
    return fig


def hypervolume_figure(curve: list[dict[str, Any]]) -> Any:
    """The hypervolume after each trial: a flat tail says more trials found little."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[c["trial"] for c in curve], y=[c["hypervolume"] for c in curve],
                               mode="lines+markers", name="hypervolume", line={"shape": "hv"}))
    fig.update_layout(title="Hypervolume of the feasible front after each trial",
                      xaxis_title="trial", yaxis_title="hypervolume", height=340)
    return fig


def importance_figure(imp: dict[str, Any]) -> Any:
    """The twelve most important parameters, for accuracy and for the cost side by side."""
    import plotly.graph_objects as go

    rows = importance_rows(imp)[:12][::-1]
    fig = go.Figure()
    for key, label in (("accuracy", "val accuracy"), ("cost", imp["cost_metric"])):
        fig.add_trace(go.Bar(y=[r["parameter"] for r in rows], x=[r[key] or 0 for r in rows],
                             orientation="h", name=f"for {label}"))
    fig.update_layout(title="Hyperparameter importances (fANOVA)", barmode="group",
                      height=max(300, 28 * len(rows) + 120), xaxis_title="importance")
    return fig


def selection_figure(points: list[dict[str, Any]]) -> Any:
    """Test against validation accuracy per trial; points below the diagonal were optimistic."""
    import plotly.graph_objects as go

    pts = [p for p in points if p.get("val_accuracy") is not None
           and p.get("test_accuracy") is not None]
    fig = go.Figure(go.Scatter(x=[p["val_accuracy"] for p in pts],
                               y=[p["test_accuracy"] for p in pts], mode="markers",
                               name="trials", hovertext=_hover(pts), hoverinfo="text",
                               marker={"color": ["#d62728" if p["on_front"] else "#9aa5b1"
                                                 for p in pts]}))
    lo = min([p["val_accuracy"] for p in pts] + [p["test_accuracy"] for p in pts], default=0)
    fig.add_trace(go.Scatter(x=[lo, 1], y=[lo, 1], mode="lines", name="test = val",
                             line={"dash": "dot", "color": "#555"}))
    fig.update_layout(title="Test vs validation accuracy (red: Pareto front)", height=380,
                      xaxis_title="val accuracy", yaxis_title="test accuracy")
    return fig


def latency_figure(lp: dict[str, Any]) -> Any:
    """Predicted against measured latency; the dotted diagonal is a perfect prediction."""
    import plotly.graph_objects as go

    rows = lp["rows"]
    top = max(max(r["latency_ms"], r["predicted_latency_ms"]) for r in rows)
    fig = go.Figure(go.Scatter(x=[r["latency_ms"] for r in rows],
                               y=[r["predicted_latency_ms"] for r in rows], mode="markers",
                               text=[f"trial {r['trial']}" for r in rows], name="trials"))
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="exact",
                             line={"dash": "dot", "color": "#555"}))
    title = "Predicted vs measured latency"
    table = (lp.get("table_error") or {}).get("1") or {}
    if table.get("mean_abs_pct") is not None:  # the table's own held-out error, for scale
        title += (f" (table held-out error at batch 1: mean {table['mean_abs_pct']:.0f} %, "
                  f"max {table['max_abs_pct']:.0f} %)")
    fig.update_layout(title=title, xaxis_title="measured ms", yaxis_title="predicted ms",
                      height=380)
    return fig
