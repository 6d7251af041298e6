"""The hypervolume's scale for one search: the space's cost ranges and the accuracy range.

Why from the space, before the search: a scale fitted to the trials seen would move as the search
goes (a new cheapest student would shrink everyone's volume), and two strategies' fronts could
not be compared. The cheapest and dearest candidates a space can produce are fixed by its YAML,
so they are found once, recorded in the study, and every report, early-stopping decision and
benchmark reads the same numbers.

How: the two corner candidates (every architecture parameter at its smallest, then its largest
value) plus a seeded random sample of the space are built and costed (FLOPs, params and bytes are
counts: milliseconds each). Latency is measured only for the candidates with the fewest and the
most FLOPs, when latency is an objective.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from autokd import __version__
from autokd._io import atomic_write, cache_dir
from autokd.config import OBJECTIVES, CostConfig
from autokd.cost import measure_cost
from autokd.data import DataSplits
from autokd.metrics import majority_score
from autokd.pareto import FrontScale
from autokd.pipeline import build_seeded
from autokd.quant.deploy import runtime_cost
from autokd.record import SearchRecord
from autokd.space import Candidate, SearchSpace

__all__ = ["COST_NAMES", "complete_scale", "majority_accuracy", "majority_floor", "observed_scale",
           "space_scale", "study_scale"]

logger = logging.getLogger(__name__)
COST_NAMES = ("flops", "params", "bytes", "latency")
_SCALE_SCHEMA = 1  # bump when what a row holds or how candidates are drawn changes
SAMPLES = 24  # random candidates beside the two corners (non-monotone spaces)


class _Corner:
    """A ``TrialLike`` that picks the smallest (or largest) value of every parameter.

    Numeric choices are ordered by value; other choices (an activation name) take their first
    (or last) option, which only matters when the random sample misses a dearer one.
    """

    def __init__(self, high: bool) -> None:
        self.high = high

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        choices = list(choices)
        if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices):
            return max(choices) if self.high else min(choices)
        return choices[-1] if self.high else choices[0]

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return low + (high - low) // step * step if self.high else low

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return high if self.high else low


def majority_accuracy(data: DataSplits) -> float:
    """Validation accuracy of always predicting the most common training class."""
    counts = torch.bincount(data.y_train.long(), minlength=data.num_classes)
    return float((data.y_val.long() == int(counts.argmax())).float().mean())


def majority_floor(data: DataSplits, metric: str = "accuracy") -> float:
    """The search's metric on the validation split for always predicting the most common
    training class: the accuracy axis's floor (a student no better adds no hypervolume).

    Balanced accuracy gives 1/K and macro F1 (1/K)·2p/(1+p) (p the class's validation share),
    both computed exactly by scoring that constant prediction (``autokd.metrics``).
    """
    return majority_score(data.y_train, data.y_val, data.num_classes, metric)


def _candidates(space: SearchSpace, samples: int, seed: int) -> list[Candidate]:
    out = [space.sample(_Corner(False)), space.sample(_Corner(True))]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(samples):
        out.append(space.sample(study.ask()))
    return out


def space_scale(space: SearchSpace, data: DataSplits, teacher_accuracy: float,
                objectives: Sequence[str], cost: CostConfig | None = None,
                samples: int = SAMPLES, seed: int = 0, metric: str = "accuracy") -> FrontScale:
    """The scale of a search: each cost objective's range over the space, accuracy (the
    search's ``metric``) between the majority class and the teacher (the teacher's, floored just
    above the majority's); ``teacher_accuracy`` is the teacher's value of ``metric``."""
    floor = majority_floor(data, metric)
    scale = FrontScale((floor, max(float(teacher_accuracy), floor + 1e-6)))
    wanted = [n for n in objectives if n in COST_NAMES]
    if not wanted:
        return scale
    rows = _counted(space, data, samples, seed, cost)
    if not rows:
        return scale
    costs = {n: _range([c[OBJECTIVES[n][0]] for c, _ in rows])
             for n in wanted if n != "latency"}
    if "latency" in wanted:
        costs["latency"] = _latency_range(rows, space.family, data, cost)
    return FrontScale(scale.accuracy, {n: r for n, r in costs.items() if r is not None})


def _counted(space: SearchSpace, data: DataSplits, samples: int, seed: int,
             cost: CostConfig | None) -> list[tuple[dict[str, float], dict[str, Any]]]:
    """(FLOPs, params, bytes) and spec of each distinct candidate, cached on disk per space and
    input: counting traces every candidate (fvcore), ~0.4 s of CPU for the cnn space and ~1.4 s
    for mbv2 on digits, paid again by every search and worker of the same space otherwise.
    The counts are exact, so the cache cannot go stale for the same code version and input."""
    tokens = data.tokens
    key = hashlib.sha256(json.dumps(
        [__version__, _SCALE_SCHEMA, space.family, [repr(p) for p in space.params],
         list(data.input_shape), data.num_classes, repr(tokens), samples, seed],
        default=str).encode()).hexdigest()[:20]
    path = cache_dir() / "scales" / f"{key}.json"
    try:
        return [(c, s) for c, s in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):  # absent or damaged: count again
        pass
    seen: dict[str, tuple[dict[str, float], dict[str, Any]]] = {}
    for cand in _candidates(space, samples, seed):
        key_spec = repr(sorted(cand.spec.items()))
        if key_spec in seen:
            continue
        try:
            model = build_seeded(cand.family, cand.spec, data, 0)
            report = measure_cost(model, data.input_shape, cost, latency=False)
        except Exception as exc:  # a candidate this input cannot take fails its trial later
            logger.debug("scale: skipping candidate %s: %s", cand.spec, exc)
            continue
        seen[key_spec] = ({"flops": report.flops, "params": report.params,
                           "bytes": report.bytes}, dict(cand.spec))
    rows = list(seen.values())
    try:
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(rows, default=str)))
    except OSError as exc:  # a read-only cache only costs the next search the counting
        logger.debug("scale: cache not written: %s", exc)
    return rows


def _range(values: Sequence[float | None]) -> tuple[float, float] | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v)) and v > 0]
    return (min(vals), max(vals)) if vals else None


def _latency_range(rows: list[tuple[dict[str, float], dict[str, Any]]], family: str,
                   data: DataSplits, cost: CostConfig | None) -> tuple[float, float] | None:
    """Latency of the fewest- and most-FLOPs candidates, timed where the trials are timed
    (``runtime_cost``: the search's runtime when latency ranks trials), so the range and the
    trials' latencies are on one scale."""
    by_flops = sorted(rows, key=lambda r: r[0]["flops"] or 0)
    cfg = dataclasses.replace(cost or CostConfig(), latency=True)
    lat = [runtime_cost(build_seeded(family, spec, data, 0), data.input_shape, cfg).latency_ms
           for _, spec in (by_flops[0], by_flops[-1])]
    return _range(lat)


def observed_scale(values: Sequence[Sequence[float]], names: Sequence[str],
                   teacher_accuracy: float | None, num_classes: int) -> FrontScale:
    """A scale for a study that recorded none (autokd 0.1): cost ranges from the trials seen,
    accuracy from chance (1 / classes) to the teacher. Reports say so."""
    arr = np.asarray(values, dtype=float).reshape(len(values), len(names))
    costs = {}
    for j, name in enumerate(names):
        if name != "accuracy":
            r = _range(list(arr[:, j]))
            if r is not None:
                costs[name] = r
    floor = 1.0 / max(1, num_classes)
    top = float(teacher_accuracy) if teacher_accuracy else 1.0
    return FrontScale((floor, max(top, floor + 1e-6)), costs, source="observed")


def complete_scale(scale: FrontScale, values: Sequence[Sequence[float]],
                   names: Sequence[str]) -> FrontScale:
    """``scale`` plus observed ranges for objectives it has none for (``kd_loss``, or a cost
    the space could not be built for), so a hypervolume can always be taken."""
    missing = [n for n in names if n != "accuracy" and n not in scale.costs]
    if not missing or not len(values):
        return scale
    extra = observed_scale(values, names, None, 2).costs
    return FrontScale(scale.accuracy, {**scale.costs, **{n: extra[n] for n in missing if n in extra}},
                      scale.margin, scale.source)


def study_scale(study: optuna.Study, names: Sequence[str],
                values: Sequence[Sequence[float]]) -> FrontScale:
    """The scale a study recorded when its search started; for an older study, one from the
    trials seen (``values``: their objective values, in ``names`` order)."""
    rec = SearchRecord.of(study)
    if rec.scale:
        scale = FrontScale.from_dict(rec.scale)
    else:
        scale = observed_scale(values, names, (rec.teacher or {}).get("val_accuracy"),
                               int((rec.dataset or {}).get("num_classes") or 2))
    return complete_scale(scale, values, names)
