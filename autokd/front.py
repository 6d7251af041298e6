"""Which trials form the front: complete, feasible, trained, with finite values.

Why our own front instead of ``study.best_trials``: the front shown anywhere must hold feasible
trials only (constraints met, never an infeasible candidate that was skipped before training),
and must be computed the same way for studies from any controller.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autokd.pareto import as_losses, hypervolume, non_dominated, normalised_losses
from autokd.record import recorded

__all__ = ["best_values", "hypervolume_history", "pareto_front", "usable_trials"]


def usable_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete, feasible, trained trials with finite objective values.

    A trial continued by a complete one (``resumed_from``, multi-fidelity searches) is left out:
    the continuation is the same candidate, trained longer, so the front shows it once.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    superseded = {recorded(t, "resumed_from") for t in complete} - {None}
    out = []
    for t in complete:
        if t.number in superseded or recorded(t, "infeasible") or t.values is None:
            continue
        if any(v > 0 for v in t.constraints.values()):
            continue
        if all(math.isfinite(v) for v in t.values):
            out.append(t)
    return out


def pareto_front(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """The feasible non-dominated trials, ordered by the first objective (best first)."""
    trials = usable_trials(study) if trials is None else trials
    if not trials:
        return []
    directions = [d.name for d in study.directions]
    losses = as_losses([t.values for t in trials], directions)
    front = [t for t, keep in zip(trials, non_dominated(losses)) if keep]
    return sorted(front, key=lambda t: as_losses([t.values], directions)[0].tolist())


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


def best_values(study: optuna.Study, names: Sequence[str],
                front: list[FrozenTrial] | None = None) -> dict[str, float]:
    """The best value of each objective over the front (what progress lines show)."""
    front = pareto_front(study) if front is None else front
    best: dict[str, float] = {}
    for i, name in enumerate(names):
        pick = max if study.directions[i].name == "MAXIMIZE" else min
        if front:
            best[name] = pick(t.values[i] for t in front)
    return best
