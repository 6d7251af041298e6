"""Which objectives are costs, how each axis is labelled, and which points a view can place.

Why: pareto.png (matplotlib) and report.html (Plotly) draw the same views; sharing these rules
keeps the static image and the interactive one in agreement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from autokd.config import OBJECTIVES

__all__ = ["AXIS_LABELS", "COST_OBJECTIVES", "axes_of", "complete_points", "objective_values"]

COST_OBJECTIVES = ("flops", "params", "bytes", "latency")
AXIS_LABELS = {
    "accuracy": "val accuracy",
    "kd_loss": "val KD loss",
    "flops": "FLOPs (multiply-adds)",
    "params": "parameters",
    "bytes": "serialized bytes",
    "latency": "latency ms (batch 1)",
}


def axes_of(pair: tuple[str, str]) -> tuple[str, str]:
    """(x, y) objective names: accuracy goes on y, a cost on x."""
    a, b = pair
    return (b, a) if a == "accuracy" else (a, b)


def objective_values(points: Iterable[dict[str, Any]], name: str) -> list[float | None]:
    """Each point's value of objective ``name`` (None where not recorded)."""
    key = OBJECTIVES[name][0]
    return [p.get(key) for p in points]


def complete_points(points: list[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """The points that recorded every objective in ``names``: only those can be placed."""
    return [p for p in points if all(p.get(OBJECTIVES[n][0]) is not None for n in names)]
