"""pareto.png: the front in every pair of plotted objectives, drawn with matplotlib.

Why a static image besides the Plotly views: report.md links it, and report.html embeds it as a
data URI, so the front can be seen where JavaScript does not run.
"""

from __future__ import annotations

import io
import itertools
import math
from typing import Any

from autokd.config import OBJECTIVES
from autokd.report.axes import (
    COST_OBJECTIVES,
    axes_of,
    axis_label,
    complete_points,
    objective_values,
)

__all__ = ["pareto_png"]


def pareto_png(data: dict[str, Any]) -> bytes:
    """The front in every pair of plotted objectives (plus 3-D when three), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = data["plot_objectives"]
    pairs = list(itertools.combinations(names, 2))
    panels = len(pairs) + (1 if len(names) == 3 else 0)
    ncols = 2 if panels == 4 else min(panels, 3)
    nrows = math.ceil(panels / ncols)
    fig = plt.figure(figsize=(5.6 * ncols, 4.6 * nrows), dpi=110)
    for i, pair in enumerate(pairs):
        _mpl_pair(fig.add_subplot(nrows, ncols, i + 1), data, axes_of(pair), len(names) == 2)
    if len(names) == 3:
        _mpl_3d(fig.add_subplot(nrows, ncols, panels, projection="3d"), data, names)
    fig.suptitle(_png_title(data), fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _png_title(data: dict[str, Any]) -> str:
    """The figure's title: how many usable trials made the front."""
    n = len(data["front"])
    if not data["points"]:
        return f"{data['study']}: no complete trials yet"
    left = (data.get("usefulness") or {}).get("left_off")
    below = f"; {left} below the usefulness floor not shown" if left else ""
    return f"{data['study']}: Pareto front ({n} of {len(data['points'])} useful trials{below})"


def _mpl_pair(ax: Any, data: dict[str, Any], axes: tuple[str, str], connect: bool) -> None:
    """One 2-D panel; ``connect`` draws the front as a staircase (only meaningful in 2-D)."""
    xn, yn = axes
    pts = complete_points(data["points"], axes)
    rest = [p for p in pts if not p["on_front"]]
    front = sorted([p for p in pts if p["on_front"]], key=lambda p: p[OBJECTIVES[xn][0]])
    x_rest, y_rest = objective_values(rest, xn), objective_values(rest, yn)
    x_front, y_front = objective_values(front, xn), objective_values(front, yn)
    ax.scatter(x_rest, y_rest, s=22, c="#9aa5b1", label="other trials")
    if connect and front:
        ax.step(x_front, y_front, where="post", c="#d62728", lw=1, alpha=0.6)
    ax.scatter(x_front, y_front, s=44, c="#d62728", label="Pareto front", zorder=3)
    # labels go towards the better corner, which no trial occupies beyond a front point
    dx = -5 if OBJECTIVES[xn][1] == "minimize" else 5
    dy = 5 if OBJECTIVES[yn][1] == "maximize" else -12
    for p in front:
        ax.annotate(f"#{p['trial']}", (p[OBJECTIVES[xn][0]], p[OBJECTIVES[yn][0]]),
                    textcoords="offset points", xytext=(dx, dy), fontsize=8,
                    ha="right" if dx < 0 else "left")
    _mpl_teacher(ax, data["teacher"], xn, yn)
    _mpl_style(ax, xn, yn, pts)


def _mpl_teacher(ax: Any, teacher: dict[str, Any], xn: str, yn: str) -> None:
    """The teacher as a star, when it recorded both objectives."""
    x, y = teacher.get(OBJECTIVES[xn][0]), teacher.get(OBJECTIVES[yn][0])
    if x is not None and y is not None:
        ax.scatter([x], [y], marker="*", s=160, c="#1f77b4", label="teacher", zorder=4)


def _mpl_style(ax: Any, xn: str, yn: str, pts: list[dict[str, Any]]) -> None:
    """Labels (latency names its runtime), log scales for costs (they span orders of
    magnitude), grid and legend."""
    has_points = bool(pts)
    ax.set_xlabel(axis_label(xn, pts))
    ax.set_ylabel(axis_label(yn, pts))
    if xn in COST_OBJECTIVES and has_points:
        ax.set_xscale("log")
    if yn in COST_OBJECTIVES and has_points:
        ax.set_yscale("log")
    if not has_points:
        ax.text(0.5, 0.5, "no complete trials yet", ha="center", va="center",
                transform=ax.transAxes, fontsize=12)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _mpl_3d(ax: Any, data: dict[str, Any], names: list[str]) -> None:
    """The 3-D panel; costs are plotted as log10 since matplotlib's 3-D axes have no log scale."""
    pts = complete_points(data["points"], names)
    for on_front, colour, size in ((False, "#9aa5b1", 14), (True, "#d62728", 36)):
        sel = [p for p in pts if p["on_front"] == on_front]
        coords = [[_log10(v) if n in COST_OBJECTIVES else v for v in objective_values(sel, n)]
                  for n in names]
        ax.scatter(*coords, c=colour, s=size)
    for n, setter in zip(names, (ax.set_xlabel, ax.set_ylabel, ax.set_zlabel)):
        setter(("log10 " if n in COST_OBJECTIVES else "") + axis_label(n, pts), fontsize=8)
    ax.set_title("3-D front (red)", fontsize=9)


def _log10(v: float | None) -> float | None:
    """log10 of a cost; None for a missing or zero one."""
    return math.log10(v) if v else None
