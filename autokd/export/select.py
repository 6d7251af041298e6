"""Picking the student to export: by trial number, by a named rule, or by a ``--where`` filter.

Why only complete, feasible trials: the search's hard limits must hold for whatever is shipped,
and a trial that failed or was pruned has no trained student. Ties go to the smaller student.
``--pick`` also skips students below the usefulness floor (``autokd.front``), as the front does:
the smallest student is otherwise the one that learnt nothing. When no student clears the floor
it picks among all of them and warns. ``--trial`` and ``--where`` name their student
explicitly and may take one. ``--pick fastest`` ranks by the deploy runtime's latency when the
front was re-timed in it after the search (``autokd.runtime_front``).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autokd.errors import ConfigError, ExportError
from autokd.export.where import ALIASES, parse_where, where_matches, where_metrics
from autokd.front import UsefulnessFloor, usable_trials, useful_trials, val_retention
from autokd.record import SearchRecord, TrialRecord, feasible
from autokd.runtime_front import runtime_latency

__all__ = ["PICKS", "TEST_METRICS", "select_trial"]

PICKS = ("accuracy", "smallest", "fastest")
# metrics measured on the test split: filtering on them biases the card's test numbers
TEST_METRICS = ("test_accuracy", "test_nll", "test_kd_loss", "retention")
Choice = tuple[FrozenTrial, str, list[str]]  # the trial, how it was chosen, warnings


def select_trial(study: optuna.Study, *, trial: int | None = None, pick: str | None = None,
                 where: str | None = None, min_retention: float = 0.95,
                 ) -> tuple[FrozenTrial, str, list[str]]:
    """The trial to export, how it was chosen, and warnings about the choice.

    Raises:
        ConfigError: Selectors combined, unknown pick, malformed ``where``.
        ExportError: The trial does not exist or cannot be exported, or nothing qualifies.
    """
    if sum(x is not None for x in (trial, pick, where)) > 1:
        raise ConfigError("give only one of --trial, --pick and --where")
    if trial is not None:
        return _by_number(study, trial), f"trial {trial}", []
    candidates = [t for t in usable_trials(study) if feasible(t)]
    if not candidates:
        raise ExportError(f"study {study.study_name!r} has no complete trial that meets its "
                          "limits; nothing to export yet")
    if where is not None:
        return _by_where(candidates, where)
    floor = UsefulnessFloor.of(study)
    useful, below = useful_trials(study, floor, candidates)
    if useful:
        return _by_pick(study, useful, pick or "accuracy", min_retention)
    # nothing clears the floor (a smoke run, a hopeless space): still export, and say so
    chosen, how, warnings = _by_pick(study, candidates, pick or "accuracy", min_retention)
    warning = (f"all {len(below)} feasible students are below the usefulness floor "
               f"({floor.describe()}); exported trial {chosen.number} anyway")
    return chosen, how, [*warnings, warning]


def _by_number(study: optuna.Study, number: int) -> FrozenTrial:
    """An explicit trial is still refused when it has no trained, feasible student."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    t = trials.get(number)
    if t is None:
        span = f"0-{max(trials)}" if trials else "none"
        raise ExportError(f"trial {number} does not exist in study {study.study_name!r} "
                          f"(trials: {span})")
    a = TrialRecord.of(t).fields()
    if t.state != TrialState.COMPLETE:
        why = a.get("fail_reason") or a.get("prune_reason") or "not finished"
        raise ExportError(f"trial {number} is {t.state.name.lower()} ({why}); it has no "
                          "trained student to export")
    if a.get("infeasible") or not feasible(t):
        raise ExportError(f"trial {number} violates the search's limits "
                          f"({a.get('infeasible_reason', 'constraints > 0')}); not exportable")
    if a.get("val_accuracy") is None:
        raise ExportError(f"trial {number} recorded no validation accuracy; not exportable")
    return t


def _metric(t: FrozenTrial, key: str) -> float | None:
    """A recorded number (objective names accepted), None when absent or not a number."""
    value = TrialRecord.of(t).get(ALIASES.get(key, key))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _best_accuracy(trials: list[FrozenTrial]) -> FrozenTrial:
    """Highest validation accuracy; ties go to the smaller student."""
    return max(trials, key=lambda t: (_metric(t, "val_accuracy") or 0.0,
                                      -(_metric(t, "params") or 0.0)))


def _by_pick(study: optuna.Study, candidates: list[FrozenTrial], pick: str,
             min_retention: float) -> Choice:
    """``accuracy``, or the smallest / fastest student that keeps ``min_retention``."""
    if pick not in PICKS:
        raise ConfigError(f"unknown --pick {pick!r}; known: {', '.join(PICKS)}")
    if pick == "accuracy":
        return _best_accuracy(candidates), "best validation accuracy", []
    key = "params" if pick == "smallest" else "latency_ms"
    teacher = SearchRecord.of(study).get("teacher") or {}
    keep = [t for t in candidates if (val_retention(t, teacher) or 0.0) >= min_retention
            and _metric(t, key) is not None]
    if not keep:
        raise ExportError(_no_pick_message(candidates, teacher, key, min_retention))
    if pick == "fastest" and (deployed := _by_deploy_latency(study, keep, min_retention)):
        return deployed
    best = min(keep, key=lambda t: (_metric(t, key), -(_metric(t, "val_accuracy") or 0.0)))
    what = "fewest parameters" if pick == "smallest" else "lowest latency"
    return best, f"{what} with val retention >= {min_retention:g}", []


def _by_deploy_latency(study: optuna.Study, keep: list[FrozenTrial],
                       min_retention: float) -> Choice | None:
    """The fastest in the runtime the front was re-timed in after the search, when it was.

    Why: trials timed in eager PyTorch while the deploy runtime was deferred rank by Python
    dispatch, not by what ships. Only the front's members were re-timed, so the pick is among
    them (a student off the front is beaten on accuracy and cost by one on it), and says so.
    """
    deploy = runtime_latency(study)
    timed = deploy.get("trials") or {}

    def ms(t: FrozenTrial) -> float | None:
        value = (timed.get(str(t.number)) or {}).get("latency_ms")
        return float(value) if isinstance(value, (int, float)) else None

    retimed = [t for t in keep if ms(t) is not None]
    if not retimed:
        return None
    best = min(retimed, key=lambda t: (ms(t), -(_metric(t, "val_accuracy") or 0.0)))
    runtime = deploy.get("runtime") or "the deploy runtime"
    how = f"lowest {runtime} latency with val retention >= {min_retention:g}"
    left = len(keep) - len(retimed)
    note = (f"{left} qualifying student(s) off the front were not timed in {runtime} and not "
            "considered")
    notes = [note] if left else []
    return best, how, notes


def _no_pick_message(candidates: list[FrozenTrial], teacher: dict[str, Any], key: str,
                     min_retention: float) -> str:
    """Why nothing qualified, and what to change."""
    if all(_metric(t, key) is None for t in candidates):
        return f"no trial recorded {key} (the search ran without that measurement)"
    best = max(candidates, key=lambda t: val_retention(t, teacher) or 0.0)
    return (f"no student keeps val retention >= {min_retention:g}; the best is "
            f"{val_retention(best, teacher) or 0:.3f} (trial {best.number}); "
            "lower --min-retention")


def _by_where(candidates: list[FrozenTrial], text: str) -> Choice:
    """The best val accuracy among trials matching ``text``; warns on test-split filters."""
    node = parse_where(text)
    known = {k for t in candidates for k, v in TrialRecord.of(t).fields().items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    unknown = sorted(where_metrics(node) - known)
    if unknown:
        raise ConfigError(f"unknown metric(s) {', '.join(unknown)} in --where; known: "
                          f"{', '.join(sorted(known))}")
    hits = [t for t in candidates if where_matches(node, TrialRecord.of(t).fields())]
    if not hits:
        raise ExportError(f"no feasible trial satisfies --where {text!r} "
                          f"({len(candidates)} checked)")
    used_test = sorted(where_metrics(node) & set(TEST_METRICS))
    warned = [(f"--where filters on test-split metrics ({', '.join(used_test)}), so the card's "
              "test numbers are optimistic; val_accuracy / val_retention are selection-safe")
              ] if used_test else []
    return _best_accuracy(hits), f"best val accuracy where {text}", warned
