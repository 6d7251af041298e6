"""Pareto dominance and hypervolume on plain arrays of objective values.

Why separate from the study: the same maths serves reports, early stopping and benchmarks,
whichever controller produced the values (``autokd.front`` picks the trials).

Why ``FrontScale``: dividing costs by the teacher's made every student a sliver near 0 (they
use 1-10 % of its FLOPs), so the hypervolume measured little but the best accuracy. Costs are
instead placed on a log scale between the cheapest and the dearest candidate the search space
can produce, and accuracy between the majority class and the teacher, so the volume measures
the trade-off the search exists for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FrontScale", "as_losses", "crowding_distance", "hypervolume", "non_dominated",
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


def hypervolume(losses: np.ndarray, reference: Sequence[float] | None = None) -> float:
    """Hypervolume dominated by minimised ``losses`` below ``reference`` (default all ones)."""
    if len(losses) == 0:
        return 0.0
    pts = losses[non_dominated(losses)]
    ref = np.ones(pts.shape[1]) if reference is None else np.asarray(reference, dtype=float)
    return _volume(pts, ref)


@dataclass(frozen=True)
class FrontScale:
    """How objective values become the losses a hypervolume is taken over.

    - accuracy: ``(floor, ceiling)``, by default (majority-class accuracy, teacher accuracy);
      loss = (ceiling - accuracy) / (ceiling - floor), 0 at the teacher, 1 at the floor.
    - each cost: ``(smallest, largest)`` the search space can produce; loss =
      log(cost / smallest) / log(largest / smallest), 0 for the cheapest candidate, 1 for the
      dearest (log: a 2x cheaper student is the same step anywhere on the range).
    - reference point: accuracy loss 1 (the floor: a student no better than predicting the
      majority class adds nothing) and every cost loss ``1 + margin``, so the dearest candidate
      still counts when it is the most accurate.

    ``hypervolume`` divides by the box between the ideal point (teacher accuracy at the
    cheapest cost) and the reference point, so 1.0 is that ideal and fronts of different
    searches compare directly when they share one scale (``union`` for different spaces).
    """

    accuracy: tuple[float, float]
    costs: dict[str, tuple[float, float]] = field(default_factory=dict)
    margin: float = 0.1
    source: str = "space"  # where the cost ranges came from: space | observed

    def loss(self, name: str, values: np.ndarray) -> np.ndarray:
        """Losses of one objective's values (``name``: accuracy, kd_loss or a cost)."""
        values = np.asarray(values, dtype=float)
        if name == "accuracy":
            lo, hi = self.accuracy
            return (hi - values) / max(hi - lo, 1e-12)
        if name not in self.costs:
            raise KeyError(f"no range for objective {name!r} in this scale")
        lo, hi = self.costs[name]
        span = math.log(hi / lo) if lo > 0 and hi > lo else 0.0
        if span <= 0.0:  # a fixed-cost space: every candidate is the cheapest
            return np.zeros_like(values)
        return np.log(np.maximum(values, 1e-300) / lo) / span

    def losses(self, values: Sequence[Sequence[float]], names: Sequence[str]) -> np.ndarray:
        arr = np.asarray(values, dtype=float).reshape(len(values), len(names))
        return np.stack([self.loss(n, arr[:, j]) for j, n in enumerate(names)], axis=1)

    def reference(self, names: Sequence[str]) -> np.ndarray:
        return np.array([1.0 if n == "accuracy" else 1.0 + self.margin for n in names])

    def hypervolume(self, values: Sequence[Sequence[float]], names: Sequence[str]) -> float:
        """Normalised hypervolume of ``values`` (objective values, in ``names`` order)."""
        if len(values) == 0:
            return 0.0
        ref = self.reference(names)
        return hypervolume(self.losses(values, names), ref) / float(np.prod(ref))

    def gain(self, front: Sequence[Sequence[float]], point: Sequence[float],
             names: Sequence[str]) -> float:
        """How much ``point`` would add to the normalised hypervolume of ``front``."""
        return self.hypervolume([*front, point], names) - self.hypervolume(front, names)

    def covers(self, names: Sequence[str]) -> bool:
        return all(n == "accuracy" or n in self.costs for n in names)

    def union(self, *others: FrontScale) -> FrontScale:
        """One scale over several: the widest accuracy and cost ranges (fronts of different
        spaces compared on the same axes)."""
        scales = (self, *others)
        names = set().union(*(s.costs for s in scales))
        costs = {n: (min(s.costs[n][0] for s in scales if n in s.costs),
                     max(s.costs[n][1] for s in scales if n in s.costs)) for n in sorted(names)}
        acc = (min(s.accuracy[0] for s in scales), max(s.accuracy[1] for s in scales))
        sources = {s.source for s in scales}
        return FrontScale(acc, costs, self.margin, sources.pop() if len(sources) == 1 else "union")

    def describe(self, names: Sequence[str] | None = None) -> str:
        """One sentence for reports: the ranges and the reference point."""
        lo, hi = self.accuracy
        parts = [f"accuracy from {lo:.4g} (loss 1) to {hi:.4g} (loss 0)"]
        for n, (c_lo, c_hi) in self.costs.items():
            if names is None or n in names:
                parts.append(f"{n} log-scaled from {_num(c_lo)} (0) to {_num(c_hi)} (1)")
        origin = "the search space's cheapest and dearest candidates" if self.source == "space" \
            else "the trials seen (the study did not record its space's range)"
        return (f"Hypervolume over {'; '.join(parts)}; cost ranges from {origin}; reference "
                f"point: accuracy loss 1, each cost {1 + self.margin:g}; divided by the box "
                f"volume, so 1.0 is teacher accuracy at the cheapest cost.")

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": list(self.accuracy),
                "costs": {n: list(v) for n, v in self.costs.items()},
                "margin": self.margin, "source": self.source}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FrontScale:
        return cls(tuple(float(v) for v in raw["accuracy"]),  # type: ignore[arg-type]
                   {n: (float(v[0]), float(v[1])) for n, v in (raw.get("costs") or {}).items()},
                   float(raw.get("margin", 0.1)), str(raw.get("source", "space")))


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




def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
