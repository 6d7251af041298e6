"""Per-trial facts: counts by state, grouped failure reasons, and one plot point per trial.

Why: the counts, the reasons and the points are read by several sections (status line, failure
tables, plots, claim table), so each is computed once here from the snapshot.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autokd.front import usable_trials
from autokd.pipeline import compare
from autokd.record import SearchRecord, TrialRecord, feasible
from autokd.tables import spec_summary

__all__ = ["POINT_KEYS", "architecture", "grouped_reasons", "ratios", "trial_counts",
           "trial_points"]

POINT_KEYS = ("val_accuracy", "test_accuracy", "val_kd_loss", "flops", "params", "bytes",
              "latency_ms", "latency_runtime")


def trial_counts(study: optuna.Study) -> dict[str, Any]:
    """Trials per state; complete-but-infeasible (skipped before training) counted apart."""
    counts: Counter[str] = Counter()
    strategies: Counter[str] = Counter()
    for t in study.get_trials(deepcopy=False):
        rec = TrialRecord.of(t)
        strategies[str(rec.strategy or "unknown")] += 1
        if t.state == TrialState.COMPLETE and (rec.infeasible or not feasible(t)):
            counts["infeasible"] += 1
        else:
            counts[t.state.name.lower()] += 1
    out: dict[str, Any] = {k: counts.get(k, 0) for k in
                           ("complete", "pruned", "fail", "infeasible", "running", "waiting")}
    out["total"] = sum(counts.values())
    out["strategies"] = dict(strategies)
    return out


def _reason_key(reason: str) -> str:
    """Group reasons that differ only in numbers (epochs, accuracies, sizes, nan/inf)."""
    return re.sub(r"\b(nan|-?inf)\b|\d+(\.\d+)?(e[-+]?\d+)?", "#", reason)


def grouped_reasons(study: optuna.Study, state: TrialState, attr: str) -> list[dict[str, Any]]:
    """Reasons recorded on trials of ``state``, grouped, most frequent first."""
    groups: dict[str, list[FrozenTrial]] = defaultdict(list)
    for t in study.get_trials(deepcopy=False, states=(state,)):
        reason = TrialRecord.of(t).get(attr)
        if reason is None and attr == "fail_reason":
            reason = "no reason recorded"
        if reason is not None:
            groups[_reason_key(str(reason))].append(t)
    rows = [{"reason": key, "count": len(ts), "trials": [t.number for t in ts],
             "example": str(TrialRecord.of(ts[0]).get(attr, key))} for key, ts in groups.items()]
    return sorted(rows, key=lambda r: -r["count"])


def trial_points(study: optuna.Study, front: set[int],
                 trials: list[FrozenTrial] | None = None) -> list[dict[str, Any]]:
    """One point per usable (complete, feasible, trained) trial, for plots and the claim table;
    ``trials`` narrows them (the report passes the useful ones)."""
    teacher = SearchRecord.of(study).get("teacher") or {}
    out = []
    for t in usable_trials(study) if trials is None else trials:
        a = TrialRecord.of(t).fields()
        point = {"trial": t.number, "on_front": t.number in front,
                 "strategy": a.get("strategy"), "architecture": architecture(a)}
        point.update({k: a.get(k) for k in POINT_KEYS})
        point.update(ratios(a, teacher))
        out.append(point)
    return out


def architecture(attrs: dict[str, Any]) -> str:
    """A one-line description of a trial's student: family and spec."""
    return f"{attrs.get('family', '?')} {spec_summary(attrs.get('spec'))}".strip()


def ratios(attrs: dict[str, Any], teacher: dict[str, Any]) -> dict[str, Any]:
    """Recorded ratios, recomputed against the teacher where a controller left them out."""
    computed = compare(attrs, teacher)
    return {k: attrs.get(k) if attrs.get(k) is not None else v for k, v in computed.items()}
