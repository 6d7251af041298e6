"""Every section of the report as plain JSON-safe data, from the Optuna storage alone.

Why: the HTML, Markdown and PNG writers only render this dict, and ``autokd report --json``
prints part of it, so every number shown has one source. Everything comes from the storage, so a
report can be rebuilt at any time, also while a search is still running (finished trials only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from autokd.config import MINIMA, OBJECTIVES
from autokd.front import UsefulnessFloor, useful_trials
from autokd.record import SearchRecord
from autokd.report.classes import per_class_section
from autokd.report.front import chain_lines, front_records, kd_gain_rows
from autokd.report.sections import (
    claim_table,
    hypervolume_curve,
    importances,
    latency_prediction,
    selection_summary,
)
from autokd.report.snapshot import snapshot
from autokd.report.trials import grouped_reasons, trial_counts, trial_points
from autokd.runtime_front import recorded_runtime, runtime_latency
from autokd.study import StudyPaths, redact_url

__all__ = ["json_summary", "plot_objectives", "report_data", "storage_label"]


def json_summary(data: dict[str, Any]) -> dict[str, Any]:
    """The part ``autokd report --json`` prints: the Pareto front and what frames it."""
    keys = ("study", "results", "status", "objectives", "dataset", "teacher", "counts",
            "usefulness", "latency_runtime", "front", "files")
    return {k: data.get(k) for k in keys}


def report_data(study: optuna.Study, paths: StudyPaths,
                storage: str | None = None) -> dict[str, Any]:
    """Every section of the report as JSON-safe data (no files written).

    ``storage`` labels where the study lives; given when ``study`` is already a snapshot.
    """
    storage = storage or storage_label(study, paths)
    study = snapshot(study)
    teacher = _teacher(study)
    data = {**_study_facts(study, paths, storage, teacher),
            **_findings(study, paths, teacher)}
    data["status"] = _status(data["counts"], data["budget"])
    return _clean(data)


def _teacher(study: optuna.Study) -> dict[str, Any]:
    """The recorded teacher profile, with its latency in the deploy runtime when the front was
    re-timed after the search; a profile from before runtimes was timed in eager PyTorch."""
    teacher = dict(SearchRecord.of(study).get("teacher") or {})
    if teacher.get("latency_ms") is not None:
        teacher.setdefault("latency_runtime", "torch")
    deploy = runtime_latency(study).get("teacher") or {}
    if deploy.get("latency_ms") is not None:
        teacher.update(deploy_latency_ms=deploy["latency_ms"],
                       deploy_runtime=deploy.get("latency_runtime"),
                       deploy_latency_fallback=deploy.get("latency_fallback"))
    return teacher


def _runtime_facts(study: optuna.Study) -> dict[str, Any]:
    """Where latency was timed: the search's ``--latency-runtime``, whether trials were timed
    in it (else eagerly, and only the front in it after the search)."""
    record = SearchRecord.of(study)
    cost = (record.get("settings") or {}).get("cost") or {}
    runtime = recorded_runtime(study) or "torch"
    deferred = bool(cost.get("defer_runtime"))
    return {"runtime": runtime, "trials": "torch" if deferred else runtime,
            "front_after_search": deferred and runtime != "torch"}


def _study_facts(study: optuna.Study, paths: StudyPaths, storage: str,
                 teacher: dict[str, Any]) -> dict[str, Any]:
    """What frames the results: the study, its objectives, data set, teacher, limits, budget."""
    attrs = SearchRecord.of(study)
    return {
        "study": study.study_name,
        "results": str(paths.root),
        "storage": storage,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "objectives": list(attrs.get("objectives") or []),
        "mode": attrs.get("mode", "pareto"),
        "plot_objectives": plot_objectives(attrs.get("objectives") or []),
        "dataset": attrs.get("dataset") or {},
        "teacher": teacher,
        "limits": attrs.get("limits") or {},
        "minima": {k: v for k, v in (attrs.get("settings") or {}).items()
                   if k in MINIMA and v is not None},
        "budget": attrs.get("budget") or {},
        "search_epochs": _search_epochs(attrs.get("settings") or {}),
        "metric": attrs.metric or "accuracy",
        "latency_runtime": _runtime_facts(study),
    }


def _findings(study: optuna.Study, paths: StudyPaths,
              teacher: dict[str, Any]) -> dict[str, Any]:
    """What the trials found: counts, reasons, the front, every point and each analysis."""
    attrs = SearchRecord.of(study)
    floor = UsefulnessFloor.of(study)
    useful, below = useful_trials(study, floor)
    front = front_records(study, teacher, paths, _search_epochs(attrs.get("settings") or {}),
                          floor)
    points = trial_points(study, {r["trial"] for r in front}, useful)
    convergence = hypervolume_curve(study)
    return {
        "counts": trial_counts(study),
        "usefulness": floor.summary(below),
        "failures": grouped_reasons(study, TrialState.FAIL, "fail_reason"),
        "pruned": grouped_reasons(study, TrialState.PRUNED, "prune_reason"),
        "infeasible": grouped_reasons(study, TrialState.COMPLETE, "infeasible_reason"),
        "front": front,
        "chains": chain_lines(front),
        "points": points,
        "claim": claim_table(points),
        "hypervolume": convergence["curve"],
        "hypervolume_scale": convergence["scale"],
        "importances": importances(study),
        "kd_gain": kd_gain_rows(front),
        "per_class": per_class_section(front, teacher, attrs.get("dataset") or {}),
        "selection": selection_summary(front, points, attrs.get("dataset") or {}),
        "latency_prediction": latency_prediction(study),
    }


def storage_label(study: optuna.Study, paths: StudyPaths) -> str:
    """Where the study lives, never with credentials."""
    backend = getattr(study._storage, "_backend", study._storage)  # optuna caches RDB storages
    url = getattr(backend, "url", None)
    if url is None and paths.config.exists():
        try:
            cfg = yaml.safe_load(paths.config.read_text()) or {}
            url = cfg.get("storage") if isinstance(cfg, dict) else None
        except yaml.YAMLError:
            url = None
    if not url:
        return "in memory" if isinstance(study._storage, optuna.storages.InMemoryStorage) \
            else "unknown"
    if url.startswith("sqlite:///") and Path(url[10:]).resolve() == paths.db.resolve():
        return f"sqlite ({paths.db.name} in the results directory)"
    return redact_url(url)


def _search_epochs(settings: dict[str, Any]) -> int | None:
    """The search's epochs override (``--epochs``), or None when each space set its own."""
    return settings.get("epochs")


def plot_objectives(objectives: Sequence[str]) -> list[str]:
    """Axes to plot: the study's objectives; a score or single objective gets accuracy-FLOPs."""
    names = [o for o in objectives if o in OBJECTIVES]
    if len(names) >= 2:
        return names
    return ["accuracy", "flops"] if names in ([], ["accuracy"]) else ["accuracy", names[0]]


def _status(counts: dict[str, int], budget: dict[str, Any]) -> dict[str, Any]:
    """The status line: finished, still running, or nothing to compare yet."""
    running = counts.get("running", 0) + counts.get("waiting", 0)
    if counts.get("complete", 0) == 0:
        note = "no complete trials yet: nothing to compare"
    elif running:
        note = f"search still running ({running} trial(s) in progress); showing finished trials"
    else:
        note = "search finished"
    return {"running": running, "note": note, "budget_trials": budget.get("trials"),
            "budget_seconds": budget.get("seconds")}


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
