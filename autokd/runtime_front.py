"""The front's latency in the runtime it deploys in, measured once after a search.

Why after the search: when no objective or limit reads latency, timing every trial in ONNX
Runtime would add an export (0.2-0.9 s) to a ~2 s trial for a number nothing ranks by. Trials
then keep eager PyTorch latency and only the Pareto members are re-timed in the search's
``--latency-runtime``, with the teacher, so reports and exports show the latency that ships
and a speed-up that compares like with like.

Finished Optuna trials cannot be changed, so the numbers live in one study attribute
(``RUNTIME_ATTR``), written after each member: a rerun measures only what is missing, and a
failure never touches a trial. Layout::

    {"runtime": "onnxruntime",
     "teacher": {"latency_ms", "latency_ms_batch", "latency_runtime", "latency_fallback"},
     "trials": {"<number>": {"latency_ms", "latency_ms_batch", "latency_cv",
                             "latency_runtime", "latency_fallback", "latency_speedup"}}}
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import optuna

from autokd.config import CostConfig
from autokd.data import DataSplits
from autokd.distill import KDConfig
from autokd.errors import StudyError
from autokd.front import pareto_front
from autokd.models import build_student
from autokd.pipeline import measure_student_cost, teacher_profile
from autokd.record import SEARCH_ATTR, TrialRecord
from autokd.teachers import Teacher

__all__ = ["FIELDS", "RUNTIME_ATTR", "check_runtime", "front_runtime_latency",
           "recorded_runtime", "runtime_latency"]

logger = logging.getLogger(__name__)
RUNTIME_ATTR = "runtime_latency"
FIELDS = ("latency_ms", "latency_ms_batch", "latency_cv", "latency_runtime", "latency_fallback")


def recorded_runtime(study: optuna.Study) -> str | None:
    """The ``--latency-runtime`` a study was searched with; ``torch`` for a study recorded
    before runtimes existed (its latency was eager), None for a new study."""
    record = study.user_attrs.get(SEARCH_ATTR)
    if not record:
        return None
    cost = (record.get("settings") or {}).get("cost") or {}
    return str(cost.get("runtime") or "torch")


def check_runtime(study: optuna.Study, cost: CostConfig) -> CostConfig:
    """``cost`` for resuming ``study``: ``auto`` adopts the recorded runtime; another runtime
    than the recorded one is refused (its latencies would not compare with the trials')."""
    old = recorded_runtime(study)
    if old is None:
        return cost
    if cost.runtime == "auto":
        return dataclasses.replace(cost, runtime=old)
    if cost.runtime != old:
        raise StudyError(f"study {study.study_name!r} timed latency in {old}, not "
                         f"{cost.runtime}; use --latency-runtime {old} or another --name")
    return cost


def runtime_latency(study: optuna.Study) -> dict[str, Any]:
    """The stored after-search measurements (``{}`` when none)."""
    return dict(study.user_attrs.get(RUNTIME_ATTR) or {})


def front_runtime_latency(study: optuna.Study, data: DataSplits, teacher: Teacher | None,
                          cost: CostConfig, teacher_cost: CostConfig | None = None) -> int:
    """Time the front's members (and the teacher) in ``cost.runtime``; returns how many
    members were measured now. Nothing to do unless the runtime was deferred."""
    if not (cost.defer_runtime and cost.latency and cost.runtime != "torch"):
        return 0
    now = dataclasses.replace(cost, defer_runtime=False)
    store = runtime_latency(study)
    if store.get("runtime") not in (None, cost.runtime):
        store = {}  # measured in another runtime (a hand-edited study): measure again
    store["runtime"] = cost.runtime
    trials = dict(store.get("trials") or {})

    def save() -> None:
        store["trials"] = trials
        study.set_user_attr(RUNTIME_ATTR, store)

    if "teacher" not in store and teacher is not None:
        t_cfg = dataclasses.replace(teacher_cost or now, defer_runtime=False)
        profile = teacher_profile(teacher, data, t_cfg)
        store["teacher"] = {k: profile.get(k) for k in
                            ("latency_ms", "latency_ms_batch", "latency_runtime",
                             "latency_fallback")}
        save()
    teacher_ms = (store.get("teacher") or {}).get("latency_ms")
    done = 0
    for trial in pareto_front(study, floor=False):
        key = str(trial.number)
        if key in trials:
            continue
        entry = _member(TrialRecord.of(trial), data, now)
        ms = entry.get("latency_ms")
        entry["latency_speedup"] = float(teacher_ms) / float(ms) if teacher_ms and ms else None
        trials[key] = entry
        save()
        done += 1
    if done:
        logger.info("front re-timed in %s: %d member(s)", cost.runtime, done)
    return done


def _member(rec: TrialRecord, data: DataSplits, cfg: CostConfig) -> dict[str, Any]:
    """One member's latency in ``cfg.runtime``; copied when its trial was timed there already
    (an int8 student, a search with int8 beside float)."""
    if rec.get("latency_runtime") == cfg.runtime:
        return {k: rec.get(k) for k in FIELDS}
    if rec.family is None or rec.spec is None:
        raise StudyError(f"trial without a recorded student; cannot time it in {cfg.runtime}")
    model = build_student(rec.family, dict(rec.spec), data.input_shape, data.num_classes,
                          tokens=data.tokens)
    kd = KDConfig(**(rec.recipe or {}))
    return {k: v for k, v in measure_student_cost(model, data, kd, cfg).to_dict().items()
            if k in FIELDS}
