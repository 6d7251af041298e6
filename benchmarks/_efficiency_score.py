"""search_efficiency, scoring: hypervolume against cumulative CPU seconds, and paired tests.

Why plain functions on event rows (``_efficiency_run.EVENT_FIELDS``): the JSON keeps every
cell's raw trace, so the scores can be recomputed (another horizon, another scale) without
running anything again.

* Curve: after each finished trial, the normalised hypervolume (``FrontScale``) of the
  feasible completed trials' (validation accuracy, FLOPs) front; ``hv_test`` scores the same
  front members (picked on validation) with their test accuracy. A step function of the
  cumulative CPU seconds, 0 before the first trial completes.
* AUC: the curve's integral from 0 to the dataset's horizon, divided by the horizon (a mean
  hypervolume over the horizon; a search that ended earlier keeps its last value).
* CPU to random's HV: the first CPU time the curve reaches random's hypervolume after its
  ``reference_trials``-th counted trial on the same seed; censored (``None`` + the CPU the
  search ran) when it never does.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from autokd.pareto import FrontScale, non_dominated

__all__ = ["Curve", "auc", "cpu_to_reach", "curve", "describe", "dominated", "paired_test",
           "reference", "value_at"]

NAMES = ["accuracy", "flops"]
MIN_PAIRS = 6  # two-sided signed-rank: below 6 pairs p < 0.05 is out of reach


class Curve:
    """A search's hypervolume after each finished trial, against cumulative CPU seconds."""

    def __init__(self, cpu: Sequence[float], hv_val: Sequence[float], hv_test: Sequence[float],
                 fronts: list[list[list[float]]]) -> None:
        self.cpu = np.asarray(cpu, dtype=float)
        self.hv_val = np.asarray(hv_val, dtype=float)
        self.hv_test = np.asarray(hv_test, dtype=float)
        self.fronts = fronts  # per event: [val, test, flops] of the front members

    @property
    def end(self) -> float:
        return float(self.cpu[-1]) if len(self.cpu) else 0.0


def _front(points: list[list[float]]) -> list[list[float]]:
    """Members of the validation front ([val, test, flops] rows)."""
    if not points:
        return []
    losses = np.array([[-p[0], p[2]] for p in points], dtype=float)
    return [p for p, keep in zip(points, non_dominated(losses), strict=True) if keep]


def curve(events: list[list[Any]], scale: FrontScale) -> Curve:
    """The hypervolume curve of one cell's events (see the module docstring)."""
    done: list[list[float]] = []
    cpu, hv_val, hv_test, fronts = [], [], [], []
    front: list[list[float]] = []
    for _n, state, val, test, flops, cum_cpu, *_ in events:
        if state == "C" and val is not None and flops:
            done.append([float(val), float(test if test is not None else 0.0), float(flops)])
            front = _front(done)
        cpu.append(float(cum_cpu))
        hv_val.append(scale.hypervolume([[p[0], p[2]] for p in front], NAMES))
        hv_test.append(scale.hypervolume([[p[1], p[2]] for p in front], NAMES))
        fronts.append(front)
    return Curve(cpu, hv_val, hv_test, fronts)


def value_at(c: Curve, t: float, which: str = "val") -> float:
    """The step curve's value at CPU time ``t`` (0 before the first event)."""
    i = int(np.searchsorted(c.cpu, t, side="right")) - 1
    return 0.0 if i < 0 else float((c.hv_val if which == "val" else c.hv_test)[i])


def auc(c: Curve, horizon: float, which: str = "val") -> float:
    """Area under the step curve on [0, horizon], divided by the horizon."""
    if horizon <= 0:
        raise ValueError("the horizon must be positive")
    hv = c.hv_val if which == "val" else c.hv_test
    edges = np.clip(np.append(c.cpu, horizon), 0.0, horizon)
    return float(np.sum(hv * np.diff(edges)) / horizon) if len(hv) else 0.0


def cpu_to_reach(c: Curve, target: float) -> float | None:
    """CPU seconds at which the curve first reaches ``target`` (None: never, censored)."""
    hit = np.nonzero(c.hv_val >= target - 1e-12)[0]
    return float(c.cpu[hit[0]]) if len(hit) else None


def reference(events: list[list[Any]], c: Curve, trials: int) -> dict[str, float] | None:
    """CPU and hypervolume after the ``trials``-th counted (complete or pruned) trial."""
    counted = 0
    for i, e in enumerate(events):
        counted += e[1] in ("C", "P")
        if counted == trials:
            return {"cpu_s": float(c.cpu[i]), "hv_val": float(c.hv_val[i]),
                    "hv_test": float(c.hv_test[i])}
    return None


def dominated(front: list[list[float]], points: list[list[float]],
              column: int = 1) -> int:
    """How many ``points`` ([val, test, flops]) some front member dominates, comparing
    accuracy in ``column`` (1: test, 0: validation) and FLOPs (<= both, < in one)."""
    count = 0
    for p in points:
        count += any(m[column] >= p[column] and m[2] <= p[2]
                     and (m[column] > p[column] or m[2] < p[2]) for m in front)
    return count


def paired_test(method: dict[int, float], base: dict[int, float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of per-seed values against the baseline's, paired
    by seed; ``descriptive`` when fewer than 6 pairs (p < 0.05 is then impossible)."""
    seeds = sorted(set(method) & set(base))
    diffs = [method[s] - base[s] for s in seeds]
    out: dict[str, Any] = {"n": len(seeds), "seeds": seeds,
                           "median_diff": statistics.median(diffs) if diffs else None,
                           "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs),
                           "descriptive": len(seeds) < MIN_PAIRS, "p": None, "statistic": None}
    if not diffs:
        return out
    if all(d == 0 for d in diffs):
        return out | {"p": 1.0, "statistic": 0.0}
    res = sps.wilcoxon(diffs, alternative="two-sided")
    return out | {"p": float(res.pvalue), "statistic": float(res.statistic)}


def describe(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, sample std (ddof=1), median, min, max and n of the finite values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"n": 0, "mean": None, "std": None, "median": None, "min": None, "max": None}
    return {"n": len(vals), "mean": statistics.fmean(vals),
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "median": statistics.median(vals), "min": min(vals), "max": max(vals)}
