"""Which trials form the front: complete, feasible, trained, with finite values.

Why our own front instead of ``study.best_trials``: the front shown anywhere must hold feasible
trials only (constraints met, never an infeasible candidate that was skipped before training),
and must be computed the same way for studies from any controller.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from autokd.pareto import FrontScale, as_losses, non_dominated
from autokd.record import recorded

__all__ = ["best_values", "hypervolume_history", "pareto_front", "usable_trials"]


def usable_trials(study: optuna.Study, superseded_too: bool = False) -> list[FrozenTrial]:
    """Complete, feasible, trained trials with finite objective values.

    A trial continued by a complete one (``resumed_from``, multi-fidelity searches) is left out
    unless ``superseded_too``: the continuation is the same candidate, trained longer, so the
    front shows it once. (A hypervolume history keeps it: until its continuation finished, it
    was on the front.)
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    superseded = set() if superseded_too else {recorded(t, "resumed_from") for t in complete} - {None}
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
                        scale: FrontScale) -> list[tuple[int, float]]:
    """(trial number, normalised hypervolume of the feasible front so far) after every trial,
    in the order trials finished (with parallel workers, numbers and finishing order differ)."""
    usable = {t.number for t in usable_trials(study, superseded_too=True)}
    seen: list[list[float]] = []
    out = []
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    for t in sorted(finished, key=_finish_order):
        if t.number in usable:
            seen.append(list(t.values))
        out.append((t.number, scale.hypervolume(seen, names) if seen else 0.0))
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


def _finish_order(t: FrozenTrial) -> tuple[float, int]:
    done = t.datetime_complete
    return (done.timestamp() if done is not None else math.inf, t.number)
