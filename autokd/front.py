"""Which trials form the front: complete, feasible, trained, useful, with finite values.

Why our own front instead of ``study.best_trials``: the front shown anywhere must hold feasible
trials only (constraints met, never an infeasible candidate that was skipped before training),
and must be computed the same way for studies from any controller.

Why a usefulness floor: the cheapest candidate is always non-dominated on cost, so a student
that learnt nothing (accuracy at the majority class, or a fraction of the teacher's) would head
every front. ``UsefulnessFloor`` marks such students; the front, its tables and plots and
``export --pick`` leave them off and say how many, while the study (trials.csv) keeps them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autokd.pareto import FrontScale, as_losses, non_dominated
from autokd.record import SearchRecord, TrialRecord, recorded

__all__ = ["USEFUL_RETENTION", "UsefulnessFloor", "best_values", "hypervolume_history",
           "pareto_front", "usable_trials", "useful_trials", "val_retention"]

USEFUL_RETENTION = 0.5  # default floor: a student keeping less than half the teacher's accuracy


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


def val_retention(trial: FrozenTrial, teacher: dict[str, Any]) -> float | None:
    """Validation accuracy / the teacher's: recorded by newer searches, recomputed from the
    teacher's profile for older ones; None when either accuracy is unknown."""
    rec = TrialRecord.of(trial)
    if isinstance(rec.val_retention, (int, float)):
        return float(rec.val_retention)
    top = teacher.get("val_accuracy")
    return float(rec.val_accuracy) / float(top) if rec.val_accuracy is not None and top else None


@dataclass(frozen=True)
class UsefulnessFloor:
    """Below this a trained student is not useful: validation retention under ``min_retention``
    or validation accuracy at or below ``majority`` (always predicting the most common training
    class; the absolute floor). An unknown quantity (no teacher accuracy, a study recorded
    before the majority was) never marks a student.
    """

    min_retention: float = USEFUL_RETENTION
    majority: float | None = None
    teacher: tuple[tuple[str, Any], ...] = ()  # the teacher's profile, as items (hashable)

    @classmethod
    def of(cls, study: optuna.Study, min_retention: float = USEFUL_RETENTION) -> UsefulnessFloor:
        """The floor of a study: its teacher's val accuracy and its majority-class accuracy."""
        rec = SearchRecord.of(study)
        majority = rec.majority_accuracy
        accuracy_axis = (rec.scale or {}).get("accuracy")
        if majority is None and rec.metric == "accuracy" and accuracy_axis:
            majority = float(accuracy_axis[0])  # studies from before it was recorded
        return cls(min_retention, majority, tuple((rec.teacher or {}).items()))

    def reason(self, trial: FrozenTrial) -> str | None:
        """Why ``trial`` is below the floor (each part it misses), or None when it is useful."""
        acc, why = TrialRecord.of(trial).val_accuracy, []
        if self.majority is not None and acc is not None and acc <= self.majority:
            why.append(f"val accuracy {acc:.3f} at/below the majority class's {self.majority:.3f}")
        kept = val_retention(trial, dict(self.teacher))
        if kept is not None and kept < self.min_retention:
            why.append(f"val retention {kept:.3f} < {self.min_retention:g}")
        return "; ".join(why) or None

    def describe(self) -> str:
        """The floor in words, as reports and the CLI print it."""
        majority = "" if self.majority is None else f" ({self.majority:.3f})"
        return (f"val retention < {self.min_retention:g} or at/below majority-class accuracy"
                f"{majority}")

    def summary(self, below: list[FrozenTrial]) -> dict[str, Any]:
        """The floor and the students below it, as reports and ``--json`` show them."""
        return {"min_retention": self.min_retention, "majority_accuracy": self.majority,
                "rule": self.describe(), "left_off": len(below),
                "trials": [t.number for t in below]}


def useful_trials(study: optuna.Study, floor: UsefulnessFloor | None = None,
                  trials: list[FrozenTrial] | None = None,
                  ) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """(useful, below the floor) among ``trials`` (default: the usable ones)."""
    floor = UsefulnessFloor.of(study) if floor is None else floor
    trials = usable_trials(study) if trials is None else trials
    useful, below = [], []
    for t in trials:
        (below if floor.reason(t) else useful).append(t)
    return useful, below


def pareto_front(study: optuna.Study, trials: list[FrozenTrial] | None = None,
                 floor: UsefulnessFloor | None | bool = None) -> list[FrozenTrial]:
    """The feasible, useful non-dominated trials, ordered by the first objective (best first).

    ``floor``: None uses the study's default ``UsefulnessFloor``; ``False`` keeps students
    below it (the raw front, e.g. to decide whose weights to keep).
    """
    trials = usable_trials(study) if trials is None else trials
    if floor is not False:
        trials = useful_trials(study, floor if isinstance(floor, UsefulnessFloor) else None,
                               trials)[0]
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
