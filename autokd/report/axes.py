"""Which objectives are costs, how each axis is labelled, and which points a view can place.

Why: pareto.png (matplotlib) and report.html (Plotly) draw the same views; sharing these rules
keeps the static image and the interactive one in agreement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from autokd.config import OBJECTIVES

__all__ = ["AXIS_LABELS", "COST_OBJECTIVES", "axes_of", "axis_label", "complete_points",
           "latency_runtime_of", "objective_values"]

COST_OBJECTIVES = ("flops", "params", "bytes", "latency")
AXIS_LABELS = {
    "accuracy": "val accuracy",
    "kd_loss": "val KD loss",
    "flops": "FLOPs (multiply-adds)",
    "params": "parameters",
    "bytes": "serialized bytes",
    "latency": "latency ms (batch 1)",
}


def latency_runtime_of(points: Iterable[dict[str, Any]]) -> str:
    """Where the points' latency was timed: ``torch``, ``onnxruntime``, ... (``a+b`` when they
    differ). A trial recorded before runtimes existed was timed in eager PyTorch."""
    names = sorted({str(p.get("latency_runtime") or "torch") for p in points
                    if p.get("latency_ms") is not None})
    return "+".join(names) or "torch"


def axis_label(name: str, points: Iterable[dict[str, Any]] = ()) -> str:
    """An axis title; latency names the runtime it was timed in (a number without it is not
    comparable with one from another runtime)."""
    if name == "latency":
        return f"latency ms (batch 1, {latency_runtime_of(points)})"
    return AXIS_LABELS[name]


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
