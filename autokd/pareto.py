"""Pareto fronts and hypervolume over recorded trials.

Why our own front instead of ``study.best_trials``: the front shown anywhere must hold feasible
trials only (constraints met, never an infeasible candidate that was skipped before training),
and must be computed the same way for studies from any controller.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["usable_trials", "pareto_front", "non_dominated", "normalised_losses", "hypervolume",
           "hypervolume_history"]


def usable_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete, feasible, trained trials with finite objective values."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("infeasible") or t.values is None:
            continue
        if any(v > 0 for v in t.constraints.values()):
            continue
        if all(math.isfinite(v) for v in t.values):
            out.append(t)
    return out


def _as_losses(values: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    signs = np.array([-1.0 if d.lower() == "maximize" else 1.0 for d in directions])
    return np.asarray(values, dtype=float).reshape(len(values), len(directions)) * signs


def non_dominated(losses: np.ndarray) -> np.ndarray:
    """Boolean mask of rows no other row dominates (all <=, one <); duplicates all kept."""
    n = len(losses)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        others = losses[np.arange(n) != i]
        dominated = np.all(others <= losses[i], axis=1) & np.any(others < losses[i], axis=1)
        mask[i] = not dominated.any()
    return mask


def pareto_front(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """The feasible non-dominated trials, ordered by the first objective (best first)."""
    trials = usable_trials(study) if trials is None else trials
    if not trials:
        return []
    directions = [d.name for d in study.directions]
    losses = _as_losses([t.values for t in trials], directions)
    front = [t for t, keep in zip(trials, non_dominated(losses)) if keep]
    return sorted(front, key=lambda t: _as_losses([t.values], directions)[0].tolist())


def normalised_losses(values: Sequence[Sequence[float]], names: Sequence[str],
                      directions: Sequence[str], reference: dict[str, Any]) -> np.ndarray:
    """Map objectives into [0, 1] losses: 1 - accuracy, cost / teacher's cost (capped at 1).

    Costs without a teacher reference are scaled by the largest value seen.
    """
    arr = np.asarray(values, dtype=float).reshape(len(values), len(names))
    out = np.empty_like(arr)
    for j, (name, direction) in enumerate(zip(names, directions)):
        col = arr[:, j]
        if direction.lower() == "maximize":
            out[:, j] = 1.0 - np.clip(col, 0.0, 1.0)
            continue
        ref = reference.get(name) or (np.nanmax(col) if len(col) else 1.0) or 1.0
        out[:, j] = np.clip(col / float(ref), 0.0, 1.0)
    return out


def hypervolume(losses: np.ndarray) -> float:
    """Hypervolume dominated by ``losses`` (minimised, in [0, 1]) w.r.t. the point (1, ..., 1)."""
    if len(losses) == 0:
        return 0.0
    pts = losses[non_dominated(losses)]
    if pts.shape[1] == 1:
        return float(1.0 - pts.min())
    if pts.shape[1] == 2:
        pts = pts[np.argsort(pts[:, 0])]
        area, prev_y = 0.0, 1.0
        for x, y in pts:
            if y < prev_y:
                area += (1.0 - x) * (prev_y - y)
                prev_y = y
        return float(area)
    from optuna._hypervolume import compute_hypervolume  # exact WFG for 3+ objectives

    return float(compute_hypervolume(pts, np.ones(pts.shape[1]), assume_pareto=True))


def hypervolume_history(study: optuna.Study, names: Sequence[str],
                        reference: dict[str, Any]) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the feasible front so far) after every trial."""
    directions = [d.name for d in study.directions]
    usable = {t.number for t in usable_trials(study)}
    seen: list[list[float]] = []
    out = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state.is_finished():
            if t.number in usable:
                seen.append(list(t.values))
            hv = hypervolume(normalised_losses(seen, names, directions, reference)) if seen else 0.0
            out.append((t.number, hv))
    return out
