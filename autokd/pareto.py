"""Pareto dominance and hypervolume on plain arrays of objective values.

Why separate from the study: the same maths serves reports, early stopping and benchmarks,
whichever controller produced the values (``autokd.front`` picks the trials).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["as_losses", "crowding_distance", "hypervolume", "non_dominated", "normalised_losses",
           "pareto_layers", "rank_order"]


def as_losses(values: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
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


def pareto_layers(losses: np.ndarray) -> np.ndarray:
    """Non-dominated sorting (NSGA-II, Deb et al. 2002): each row's layer, 0 for the front.

    Layer k holds the rows no other row outside layers 0..k-1 dominates.
    """
    layers = np.full(len(losses), -1)
    remaining, k = np.arange(len(losses)), 0
    while remaining.size:
        front = non_dominated(losses[remaining])
        layers[remaining[front]] = k
        remaining, k = remaining[~front], k + 1
    return layers


def crowding_distance(losses: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of the rows of one layer: the normalised side lengths of the
    cuboid their neighbours span, summed over objectives; the extremes get infinity, so a layer
    is thinned from its crowded middle first."""
    n = len(losses)
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(losses.shape[1]):
        order = np.argsort(losses[:, j], kind="stable")
        col = losses[order, j]
        dist[order[[0, -1]]] = np.inf
        span = col[-1] - col[0]
        if span > 0:
            dist[order[1:-1]] += (col[2:] - col[:-2]) / span
    return dist


def rank_order(losses: np.ndarray) -> list[int]:
    """Row indices best first: by Pareto layer, then larger crowding distance, then index.

    Why: successive halving keeps "the top 1/eta" of a rung; with several objectives that is
    the first layers of the non-dominated sorting, spread along the front (MO-ASHA, Schmucker
    et al. 2021, with NSGA-II's selection).
    """
    layers = pareto_layers(losses)
    crowd = np.zeros(len(losses))
    for k in np.unique(layers):
        idx = np.flatnonzero(layers == k)
        crowd[idx] = crowding_distance(losses[idx])
    return sorted(range(len(losses)), key=lambda i: (int(layers[i]), -float(crowd[i]), i))


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
    return _volume(pts, np.ones(pts.shape[1]))


def _volume(pts: np.ndarray, ref: np.ndarray) -> float:
    """Exact volume dominated by ``pts`` below ``ref``: a sweep in 2-D, slices above that.

    Slicing (HSO, While et al. 2006): sort by the last objective; between two consecutive
    values the dominated region is the (d-1)-dimensional volume of the points seen so far.
    Fronts here hold tens of points, where this is exact and fast enough.
    """
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    if pts.shape[1] == 2:
        pts = pts[np.argsort(pts[:, 0])]
        area, prev_y = 0.0, float(ref[1])
        for x, y in pts:
            if y < prev_y:
                area += (float(ref[0]) - x) * (prev_y - y)
                prev_y = y
        return float(area)
    pts = pts[np.argsort(pts[:, -1])]
    total = 0.0
    for i in range(len(pts)):
        upper = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        if upper > pts[i, -1]:
            total += (upper - pts[i, -1]) * _volume(pts[: i + 1, :-1], ref[:-1])
    return float(total)


