"""``autokd report``: what a study found, as report.html, report.md, pareto.png and the tables.

Why it is built like this:
- Everything comes from the Optuna storage (``autokd.study``), so a report can be rebuilt at any
  time, also while a search is still running (finished trials only) and for any controller.
- ``report_data`` gathers plain JSON-safe dicts first; the HTML, Markdown and PNG writers only
  render them. The same dict is what ``--json`` prints, so every number shown has one source.
- report.html must open offline: plotly.js is embedded inline once (no CDN tag) and the static
  pareto.png is embedded as a data URI, so the file works copied alone to another machine.
- Retention is student / teacher accuracy; "retention" is measured on the test split, which
  selection never saw, "val retention" on the validation split used for selection. The claim
  table picks each band's student by validation and shows its test retention, so the table does
  not reward luck on the test split.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import itertools
import json
import logging
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from autokd._io import atomic_write
from autokd.errors import StudyError
from autokd.objective import OBJECTIVES, feasible
from autokd.pareto import hypervolume_history, pareto_front, usable_trials
from autokd.pipeline import compare
from autokd.study import StudyPaths, atomic_write_text, redact_url
from autokd.tables import recipe_summary, spec_summary, write_tables

__all__ = [
    "CLAIM_BANDS",
    "build_report",
    "claim_table",
    "front_records",
    "importances",
    "pareto_png",
    "render_html",
    "render_markdown",
    "report_data",
    "trial_counts",
]

logger = logging.getLogger(__name__)

# compression band by params (low, high, article's retention claim, claim low, claim high)
CLAIM_BANDS: list[tuple[float, float, str, float, float]] = [
    (2.0, 4.0, "95-98 %", 0.95, 0.98),
    (4.0, 8.0, "90-95 %", 0.90, 0.95),
    (8.0, 16.0, "80-90 %", 0.80, 0.90),
    (16.0, math.inf, "<80 %", 0.0, 0.80),
]
COST_OBJECTIVES = ("flops", "params", "bytes", "latency")
AXIS_LABELS = {
    "accuracy": "val accuracy",
    "kd_loss": "val KD loss",
    "flops": "FLOPs (multiply-adds)",
    "params": "parameters",
    "bytes": "serialized bytes",
    "latency": "latency ms (batch 1)",
}
POINT_KEYS = ("val_accuracy", "test_accuracy", "val_kd_loss", "flops", "params", "bytes",
              "latency_ms")
MEMBER_KEYS = ("val_accuracy", "test_accuracy", "val_nll", "test_nll", "retention",
               "val_retention", "params", "flops", "bytes", "latency_ms", "latency_ms_batch",
               "latency_cv", "params_compression", "flops_compression", "latency_speedup",
               "predicted_latency_ms", "best_epoch", "epochs_run", "train_seconds", "seed")
Column = tuple[str, str, str]  # (header, key, kind of formatting)


# -- gathering -------------------------------------------------------------------------------
def build_report(study: optuna.Study, paths: StudyPaths, *, json: bool = False) -> dict[str, Any]:
    """Write report.html, report.md, pareto.png, trials.csv and pareto.csv; return the data.

    Args:
        study: The study (finished or still running; only finished trials are read).
        paths: Its results directory.
        json: Return only the JSON summary (study, teacher, Pareto front, counts, files)
            instead of every section.

    Raises:
        StudyError: The results directory cannot be written.
    """
    _check_writable(paths.root)
    label = storage_label(study, paths)
    study = snapshot(study)  # tables and report describe the very same trials
    data = report_data(study, paths, label)
    write_tables(study, paths)
    files = {"html": paths.root / "report.html", "markdown": paths.root / "report.md",
             "png": paths.root / "pareto.png", "trials_csv": paths.root / "trials.csv",
             "pareto_csv": paths.root / "pareto.csv"}
    data["files"] = {k: str(v) for k, v in files.items()}
    png = pareto_png(data)
    # like the tables, the report gets the umask's permissions: a private study stays private
    atomic_write(files["png"], lambda tmp: Path(tmp).write_bytes(png))
    atomic_write_text(files["markdown"], render_markdown(data))
    atomic_write_text(files["html"], render_html(data, png))
    logger.info("report written to %s", files["html"])
    return json_summary(data) if json else data


def json_summary(data: dict[str, Any]) -> dict[str, Any]:
    """The part ``autokd report --json`` prints: the Pareto front and what frames it."""
    keys = ("study", "results", "status", "objectives", "dataset", "teacher", "counts",
            "front", "files")
    return {k: data.get(k) for k in keys}


def snapshot(study: optuna.Study) -> optuna.Study:
    """An in-memory copy of the study as it is now.

    Why: a search may finish trials while the report reads; every section must describe the
    same set of trials (a front from one moment and counts from another would disagree).
    """
    if isinstance(study._storage, optuna.storages.InMemoryStorage):
        return study  # already a private copy
    trials = sorted(study.get_trials(deepcopy=True), key=lambda t: t.number)
    with _quiet_optuna():
        copy = optuna.create_study(study_name=study.study_name, directions=study.directions,
                                   storage=optuna.storages.InMemoryStorage())
        copy.add_trials(trials)
    for key, value in study.user_attrs.items():
        copy.set_user_attr(key, value)
    return copy


def report_data(study: optuna.Study, paths: StudyPaths,
                storage: str | None = None) -> dict[str, Any]:
    """Every section of the report as JSON-safe data (no files written).

    ``storage`` labels where the study lives; given when ``study`` is already a snapshot.
    """
    storage = storage or storage_label(study, paths)
    study = snapshot(study)
    attrs = study.user_attrs
    teacher = dict(attrs.get("teacher") or {})
    front = front_records(study, teacher, paths, _search_epochs(attrs.get("settings") or {}))
    points = trial_points(study, {r["trial"] for r in front})
    data = {
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
        "budget": attrs.get("budget") or {},
        "search_epochs": _search_epochs(attrs.get("settings") or {}),
        "counts": trial_counts(study),
        "failures": grouped_reasons(study, TrialState.FAIL, "fail_reason"),
        "pruned": grouped_reasons(study, TrialState.PRUNED, "prune_reason"),
        "infeasible": grouped_reasons(study, TrialState.COMPLETE, "infeasible_reason"),
        "front": front,
        "points": points,
        "claim": claim_table(points),
        "hypervolume": hypervolume_curve(study, teacher),
        "importances": importances(study),
        "kd_gain": kd_gain_rows(front),
        "selection": selection_summary(front, points, attrs.get("dataset") or {}),
        "latency_prediction": latency_prediction(study),
    }
    data["status"] = _status(data["counts"], data["budget"])
    return _clean(data)


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
    running = counts.get("running", 0) + counts.get("waiting", 0)
    if counts.get("complete", 0) == 0:
        note = "no complete trials yet: nothing to compare"
    elif running:
        note = f"search still running ({running} trial(s) in progress); showing finished trials"
    else:
        note = "search finished"
    return {"running": running, "note": note, "budget_trials": budget.get("trials"),
            "budget_seconds": budget.get("seconds")}


# -- trials ----------------------------------------------------------------------------------
def trial_counts(study: optuna.Study) -> dict[str, Any]:
    """Trials per state; complete-but-infeasible (skipped before training) counted apart."""
    counts: Counter[str] = Counter()
    strategies: Counter[str] = Counter()
    for t in study.get_trials(deepcopy=False):
        strategies[str(t.user_attrs.get("strategy", "unknown"))] += 1
        if t.state == TrialState.COMPLETE and (t.user_attrs.get("infeasible") or not feasible(t)):
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
        reason = t.user_attrs.get(attr)
        if reason is None and attr == "fail_reason":
            reason = "no reason recorded"
        if reason is not None:
            groups[_reason_key(str(reason))].append(t)
    rows = [{"reason": key, "count": len(ts), "trials": [t.number for t in ts],
             "example": str(ts[0].user_attrs.get(attr, key))} for key, ts in groups.items()]
    return sorted(rows, key=lambda r: -r["count"])


def trial_points(study: optuna.Study, front: set[int]) -> list[dict[str, Any]]:
    """One point per usable (complete, feasible, trained) trial, for plots and the claim table."""
    teacher = study.user_attrs.get("teacher") or {}
    out = []
    for t in usable_trials(study):
        a = t.user_attrs
        point = {"trial": t.number, "on_front": t.number in front,
                 "strategy": a.get("strategy"), "architecture": _architecture(a)}
        point.update({k: a.get(k) for k in POINT_KEYS})
        point.update(_ratios(a, teacher))
        out.append(point)
    return out


def _architecture(attrs: dict[str, Any]) -> str:
    return f"{attrs.get('family', '?')} {spec_summary(attrs.get('spec'))}".strip()


def _ratios(attrs: dict[str, Any], teacher: dict[str, Any]) -> dict[str, Any]:
    """Recorded ratios, recomputed against the teacher where a controller left them out."""
    computed = compare(attrs, teacher)
    return {k: attrs.get(k) if attrs.get(k) is not None else v for k, v in computed.items()}


# -- the Pareto front ------------------------------------------------------------------------
def front_records(study: optuna.Study, teacher: dict[str, Any], paths: StudyPaths | None = None,
                  epochs: int | None = None) -> list[dict[str, Any]]:
    """The Pareto members with metrics, ratios vs the teacher, recipe and KD gain.

    ``epochs`` is the search's epochs override: shown in each member's training settings
    instead of the space's nominal epochs, which the search did not use.
    """
    baseline = study.user_attrs.get("baseline") or {}
    rows = [_member(t, teacher, baseline.get(str(t.number)), paths) for t in pareto_front(study)]
    for row in rows:
        if epochs is not None and isinstance(row.get("train"), dict):
            row["train"] = {**row["train"], "epochs": epochs}
    return rows


def _member(t: FrozenTrial, teacher: dict[str, Any], base: dict[str, Any] | None,
            paths: StudyPaths | None) -> dict[str, Any]:
    a = t.user_attrs
    row: dict[str, Any] = {"trial": t.number, "strategy": a.get("strategy"),
                           "family": a.get("family"), "architecture": _architecture(a),
                           "spec": a.get("spec"), "recipe": a.get("recipe"),
                           "recipe_summary": recipe_summary(a.get("recipe")),
                           "train": a.get("train")}
    row.update({k: a.get(k) for k in MEMBER_KEYS})
    row.update(_ratios(a, teacher))
    row["selection_gap"] = _diff(a.get("val_accuracy"), a.get("test_accuracy"))
    row["latency_error_pct"] = _rel_error(a.get("predicted_latency_ms"), a.get("latency_ms"))
    if base:
        row["scratch_val_accuracy"] = base.get("val_accuracy")
        row["scratch_test_accuracy"] = base.get("test_accuracy")
        row["kd_gain"] = _diff(a.get("test_accuracy"), base.get("test_accuracy"))
        row["kd_gain_val"] = _diff(a.get("val_accuracy"), base.get("val_accuracy"))
    if paths is not None:
        row["weights_kept"] = (paths.root / a.get("checkpoint", f"students/{t.number}/"
                                                                "student.pt")).exists()
    return row


def _diff(a: Any, b: Any) -> float | None:
    return float(a) - float(b) if a is not None and b is not None else None


def _rel_error(predicted: Any, measured: Any) -> float | None:
    if predicted is None or not measured:
        return None
    return 100.0 * (float(predicted) - float(measured)) / float(measured)


def kd_gain_rows(front: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Front members with a scratch twin; None when the search did not record baselines."""
    rows = [r for r in front if "kd_gain" in r]
    return rows or None


# -- sections --------------------------------------------------------------------------------
def _band_label(low: float, high: float) -> str:
    return f">{low:g}×" if math.isinf(high) else f"{low:g}-{high:g}×"


def claim_table(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The article's compression/retention table, filled with this study's students.

    Each band's student is the one with the best validation retention (selection never looks at
    test), and its test retention is what is compared with the article's claim.
    """
    rows = []
    for low, high, claim, c_low, c_high in CLAIM_BANDS:
        band = [p for p in points if p.get("params_compression") is not None
                and low <= p["params_compression"] < high and p.get("val_retention") is not None]
        best = max(band, key=lambda p: (p["val_retention"], -p["params_compression"]),
                   default=None)
        row = {"band": _band_label(low, high), "claim": claim, "trials": len(band),
               "best_trial": None, "val_retention": None, "retention": None,
               "params_compression": None, "verdict": "no student in this band"}
        if best is not None:
            row.update(best_trial=best["trial"], val_retention=best["val_retention"],
                       retention=best.get("retention"),
                       params_compression=best["params_compression"],
                       verdict=_verdict(best.get("retention"), c_low, c_high))
        rows.append(row)
    return rows


def _verdict(retention: float | None, low: float, high: float) -> str:
    if retention is None:
        return "no test retention recorded"
    if retention > high:
        return "better than claimed"
    return "as claimed" if retention >= low else "worse than claimed"


def hypervolume_curve(study: optuna.Study, teacher: dict[str, Any]) -> list[dict[str, Any]]:
    """Hypervolume of the feasible front after each finished trial (costs / teacher's cost)."""
    names = list(study.user_attrs.get("objectives") or [])
    if len(names) != len(study.directions):
        return []
    reference = {n: teacher.get(OBJECTIVES[n][0]) for n in names if n in OBJECTIVES}
    return [{"trial": n, "hypervolume": float(hv)}
            for n, hv in hypervolume_history(study, names, reference)]


def importances(study: optuna.Study) -> dict[str, Any]:
    """fANOVA importances of the sampled parameters for accuracy and for the main cost.

    The cost's importances consider architecture parameters only: a recipe parameter (alpha,
    lr) cannot change FLOPs or size, and with few trials a forest would still credit it noise.
    """
    trials = usable_trials(study)
    cost = _cost_metric(study.user_attrs.get("objectives") or [])
    return {"accuracy": _importance(trials, "val_accuracy"),
            "cost": _importance(trials, cost, _architecture_params(trials)),
            "cost_metric": cost}


def _cost_metric(objectives: Sequence[str]) -> str:
    costs = [o for o in objectives if o in COST_OBJECTIVES]
    return OBJECTIVES[costs[0]][0] if costs else "flops"


def _architecture_params(trials: list[FrozenTrial]) -> list[str]:
    """Sampled names that set the spec (``widths_1`` sets ``widths``), common to all trials."""
    common = set.intersection(*(set(t.params) for t in trials)) if trials else set()
    return sorted(p for p in common if all(re.sub(r"_\d+$", "", p) in (t.user_attrs.get("spec")
                                                                        or {}) for t in trials))


def _importance(trials: list[FrozenTrial], key: str,
                params: list[str] | None = None) -> dict[str, Any]:
    """Importances on a throwaway in-memory study holding only trials that measured ``key``."""
    ok = [t for t in trials if isinstance(t.user_attrs.get(key), (int, float)) and t.params]
    if len(ok) < 3:
        return {"unavailable": f"needs at least 3 complete trials with sampled parameters "
                               f"(have {len(ok)})"}
    if params is not None and not params:
        return {"unavailable": "no sampled architecture parameter common to all trials"}
    with _quiet_optuna():
        tmp = optuna.create_study(direction="maximize")
        tmp.add_trials([optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                  value=float(t.user_attrs[key])) for t in ok])
        try:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            values = optuna.importance.get_param_importances(tmp, evaluator=evaluator,
                                                             params=params)
        except (RuntimeError, ValueError) as exc:  # e.g. no parameter common to all trials
            return {"unavailable": str(exc).splitlines()[0][:200]}
    return {"values": {k: float(v) for k, v in values.items()}, "trials": len(ok)}


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """The throwaway study's creation message is noise in a report run."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(level, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def selection_summary(front: list[dict[str, Any]], points: list[dict[str, Any]],
                      dataset: dict[str, Any]) -> dict[str, Any]:
    """How much the validation split can be trusted for selection (overfitting made visible)."""
    sizes = dataset.get("sizes") or {}
    n_val = sizes.get("val")
    gaps = [r["selection_gap"] for r in front if r.get("selection_gap") is not None]
    accs = [r["val_accuracy"] for r in front if r.get("val_accuracy") is not None]
    p = sum(accs) / len(accs) if accs else None
    se = math.sqrt(p * (1 - p) / n_val) if p is not None and n_val else None
    return {"val_size": n_val, "test_size": sizes.get("test"), "train_size": sizes.get("train"),
            "val_accuracy_se": se, "mean_gap": sum(gaps) / len(gaps) if gaps else None,
            "rank_correlation": _spearman(points)}


def _spearman(points: list[dict[str, Any]]) -> float | None:
    """Rank correlation of val and test accuracy over usable trials (None when undefined)."""
    import pandas as pd

    pairs = [(p["val_accuracy"], p["test_accuracy"]) for p in points
             if p.get("val_accuracy") is not None and p.get("test_accuracy") is not None]
    if len(pairs) < 3:
        return None
    frame = pd.DataFrame(pairs, columns=["val", "test"]).rank()
    value = frame["val"].corr(frame["test"])
    return None if value is None or math.isnan(value) else float(value)


def latency_prediction(study: optuna.Study) -> dict[str, Any] | None:
    """Predicted (e.g. a DARTS latency model) vs measured latency, when trials recorded both."""
    rows = []
    for t in usable_trials(study):
        pred, meas = t.user_attrs.get("predicted_latency_ms"), t.user_attrs.get("latency_ms")
        if pred is not None and meas:
            rows.append({"trial": t.number, "strategy": t.user_attrs.get("strategy"),
                         "predicted_latency_ms": float(pred), "latency_ms": float(meas),
                         "error_ms": float(pred) - float(meas),
                         "error_pct": _rel_error(pred, meas)})
    if not rows:
        return None
    errors = [abs(r["error_pct"]) for r in rows]
    return {"rows": rows, "mean_abs_error_pct": sum(errors) / len(errors),
            "max_abs_error_pct": max(errors)}


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


# -- formatting ------------------------------------------------------------------------------
def fmt(value: Any, kind: str = "num") -> str:
    """One cell: ``pct`` 98.3 %, ``pp`` +1.2 pp, ``x`` 12.5×, ``int`` 12,345, ``num`` 4 digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if kind == "text" or isinstance(value, (str, bool)):
        return str(value)
    if kind == "json":
        return json.dumps(value, separators=(", ", ": "), default=str)
    if kind == "list":
        return ", ".join(str(v) for v in value[:12]) + (" …" if len(value) > 12 else "")
    formats: dict[str, Callable[[float], str]] = {
        "pct": lambda v: f"{100 * v:.1f} %",
        "pp": lambda v: f"{100 * v:+.1f} pp",
        "x": lambda v: f"{v:.1f}×",
        "int": lambda v: f"{round(v):,}",
        "ms": lambda v: f"{v:.3g}",
        "signed": lambda v: f"{v:+.1f}",
    }
    return formats.get(kind, lambda v: f"{v:.4g}")(float(value))


TEACHER_COLUMNS: list[Column] = [
    ("teacher", "name", "text"), ("val acc", "val_accuracy", "pct"),
    ("test acc", "test_accuracy", "pct"), ("params", "params", "int"),
    ("FLOPs", "flops", "int"), ("bytes", "bytes", "int"), ("latency ms", "latency_ms", "ms"),
    ("latency ms (batch)", "latency_ms_batch", "ms"), ("hash", "hash", "text")]
CLAIM_COLUMNS: list[Column] = [
    ("compression (params)", "band", "text"), ("article: retention", "claim", "text"),
    ("trials in band", "trials", "int"), ("best trial (by val)", "best_trial", "int"),
    ("its compression", "params_compression", "x"), ("val retention", "val_retention", "pct"),
    ("test retention", "retention", "pct"), ("verdict", "verdict", "text")]
KD_COLUMNS: list[Column] = [
    ("trial", "trial", "int"), ("KD test acc", "test_accuracy", "pct"),
    ("scratch test acc", "scratch_test_accuracy", "pct"), ("KD gain (test)", "kd_gain", "pp"),
    ("KD val acc", "val_accuracy", "pct"), ("scratch val acc", "scratch_val_accuracy", "pct"),
    ("KD gain (val)", "kd_gain_val", "pp")]
LATENCY_COLUMNS: list[Column] = [
    ("trial", "trial", "int"), ("strategy", "strategy", "text"),
    ("predicted ms", "predicted_latency_ms", "ms"), ("measured ms", "latency_ms", "ms"),
    ("error ms", "error_ms", "ms"), ("error", "error_pct", "signed")]
RECIPE_COLUMNS: list[Column] = [
    ("trial", "trial", "int"), ("architecture spec", "spec", "json"),
    ("distillation recipe", "recipe", "json"), ("training", "train", "json")]
REASON_COLUMNS: list[Column] = [
    ("count", "count", "int"), ("reason", "reason", "text"), ("trials", "trials", "list"),
    ("example", "example", "text")]


def front_columns(front: list[dict[str, Any]]) -> list[Column]:
    """The front table's columns; optional ones only when some member has them."""
    cols: list[Column] = [
        ("trial", "trial", "int"), ("strategy", "strategy", "text"),
        ("val acc", "val_accuracy", "pct"), ("test acc", "test_accuracy", "pct"),
        ("val−test", "selection_gap", "pp"), ("retention", "retention", "pct"),
        ("val retention", "val_retention", "pct"), ("params", "params", "int"),
        ("params ×", "params_compression", "x"), ("FLOPs", "flops", "int"),
        ("FLOPs ×", "flops_compression", "x"), ("latency ms", "latency_ms", "ms"),
        ("speed-up", "latency_speedup", "x")]
    if any(r.get("predicted_latency_ms") is not None for r in front):
        cols += [("predicted ms", "predicted_latency_ms", "ms"),
                 ("latency error %", "latency_error_pct", "signed")]
    if any("kd_gain" in r for r in front):
        cols.append(("KD gain", "kd_gain", "pp"))
    return cols + [("architecture", "architecture", "text"), ("recipe", "recipe_summary", "text"),
                   ("lr", "lr", "num")]


def _with_lr(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "lr": (r.get("train") or {}).get("lr")} for r in rows]


def summary_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Key facts shown at the top of both reports."""
    ds, counts, sel = data["dataset"], data["counts"], data["selection"]
    sizes = ds.get("sizes") or {}
    return [
        ("status", data["status"]["note"]),
        ("objectives", ", ".join(data["objectives"]) + f" ({data['mode']})"),
        ("dataset", (f"{ds.get('name', '?')} — train {sizes.get('train', '?')}, "
                    f"validation {sizes.get('val', '?')}, test {sizes.get('test', '?')} samples; "
                    f"split hash {ds.get('split_hash', '?')}")),
        ("trials", (f"{counts['complete']} complete, {counts['pruned']} pruned, "
                   f"{counts['fail']} failed, {counts['infeasible']} infeasible, "
                   f"{counts['running'] + counts['waiting']} running/waiting "
                   f"(budget {_budget_text(data['budget'])})")),
        ("controllers", ", ".join(f"{k}: {v}" for k, v in counts["strategies"].items()) or "-"),
        ("hard limits", ", ".join(f"{k} ≤ {fmt(v)}" for k, v in data["limits"].items()) or "none"),
        ("epochs per trial", fmt(data["search_epochs"], "int") if data["search_epochs"]
         else "as set by the search space"),
        ("validation accuracy ±1 SE", fmt(sel["val_accuracy_se"], "pp").lstrip("+")),
        ("storage", data["storage"]),
    ]


def _budget_text(budget: dict[str, Any]) -> str:
    if budget.get("trials"):
        return f"{budget['trials']} trials"
    return f"{budget['seconds']:g} s" if budget.get("seconds") else "-"


def selection_text(sel: dict[str, Any]) -> str:
    """Plain-language reading of the val/test comparison."""
    parts = [(f"Selection used {fmt(sel['val_size'], 'int')} validation samples; one standard "
             f"error of a validation accuracy is about {fmt(sel['val_accuracy_se'], 'pp')[1:]}.")]
    if sel["mean_gap"] is not None:
        parts.append(f"The front's val − test accuracy gap averages {fmt(sel['mean_gap'], 'pp')} "
                     "(positive: selection on validation was optimistic).")
    if sel["rank_correlation"] is not None:
        parts.append(f"Rank correlation of val and test accuracy across trials: "
                     f"{sel['rank_correlation']:.2f}.")
    return " ".join(parts)


def importance_rows(imp: dict[str, Any]) -> list[dict[str, Any]]:
    """Parameters with their importance for accuracy and for the cost, most important first."""
    acc, cost = imp["accuracy"].get("values") or {}, imp["cost"].get("values") or {}
    names = sorted(set(acc) | set(cost), key=lambda n: -(acc.get(n, 0.0) + cost.get(n, 0.0)))
    return [{"parameter": n, "accuracy": acc.get(n), "cost": cost.get(n)} for n in names]


def importance_columns(imp: dict[str, Any]) -> list[Column]:
    return [("parameter", "parameter", "text"), ("importance for val accuracy", "accuracy", "num"),
            (f"importance for {imp['cost_metric']}", "cost", "num")]


# -- Markdown --------------------------------------------------------------------------------
def md_table(rows: list[dict[str, Any]], cols: list[Column]) -> str:
    if not rows:
        return "_none_\n"
    head = "| " + " | ".join(h for h, _, _ in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(fmt(r.get(k), kind).replace("|", "/") for _, k, kind in cols)
            + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


def render_markdown(data: dict[str, Any]) -> str:
    """report.md: the same sections as the HTML report, static."""
    out = [f"# autokd report: {data['study']}\n", f"_generated {data['generated']}_\n"]
    out += [f"- **{k}**: {v}" for k, v in summary_rows(data)]
    out += ["\n## Teacher\n", md_table([data["teacher"]], TEACHER_COLUMNS)]
    out += ["## Pareto front\n", "![Pareto front](pareto.png)\n",
            md_table(_with_lr(data["front"]), front_columns(data["front"]))]
    out += ["\n### Recipes of the front\n", md_table(data["front"], RECIPE_COLUMNS)]
    out += ["\n## Retention vs compression: the article's claims, measured\n",
            md_table(data["claim"], CLAIM_COLUMNS)]
    out += _md_sections(data)
    return "\n".join(out) + "\n"


def _md_sections(data: dict[str, Any]) -> list[str]:
    out = ["\n## Selection: validation vs test\n", selection_text(data["selection"]) + "\n"]
    out += ["\n## Convergence\n", _hv_text(data["hypervolume"]) + "\n"]
    imp = data["importances"]
    out += ["\n## Hyperparameter importances (fANOVA)\n",
            _importance_text(imp) + "\n", md_table(importance_rows(imp), importance_columns(imp))]
    out += ["\n## KD gain over training from scratch\n",
            md_table(data["kd_gain"], KD_COLUMNS) if data["kd_gain"] else _NO_BASELINE + "\n"]
    if data["latency_prediction"]:
        lp = data["latency_prediction"]
        out += ["\n## Predicted vs measured latency\n", _latency_text(lp) + "\n",
                md_table(lp["rows"], LATENCY_COLUMNS)]
    out += ["\n## Failed, pruned and infeasible trials\n"]
    for title, key in (("Failed", "failures"), ("Pruned", "pruned"), ("Infeasible", "infeasible")):
        out += [f"\n### {title}\n", md_table(data[key], REASON_COLUMNS)]
    return out


_NO_BASELINE = ("Not recorded: rerun the search with --baseline to train each front member "
                "from scratch and measure what distillation adds.")


def _hv_text(curve: list[dict[str, Any]]) -> str:
    if not curve:
        return "No finished trials yet."
    last = curve[-1]["hypervolume"]
    half = next((c["trial"] for c in curve if c["hypervolume"] >= 0.99 * last), None)
    return (f"Hypervolume (losses: 1 − accuracy, cost / teacher's cost) reached {last:.4f} after "
            f"{len(curve)} finished trials; 99 % of it by trial {half}.")


def _importance_text(imp: dict[str, Any]) -> str:
    parts = []
    for key, what in (("accuracy", "val accuracy"), ("cost", (f"{imp['cost_metric']} "
                                                             "(architecture parameters only)"))):
        entry = imp[key]
        parts.append(f"For {what}: " + (f"fANOVA over {entry['trials']} trials."
                                        if "values" in entry else f"unavailable, {entry['unavailable']}."))
    return " ".join(parts) + " With fewer than ~20 trials, read them as rough hints."


def _latency_text(lp: dict[str, Any]) -> str:
    return (f"{len(lp['rows'])} trials carry a predicted latency: mean absolute error "
            f"{lp['mean_abs_error_pct']:.1f} %, worst {lp['max_abs_error_pct']:.1f} %.")


# -- pareto.png (matplotlib) -----------------------------------------------------------------
def _axes_of(pair: tuple[str, str]) -> tuple[str, str]:
    """(x, y) objective names: accuracy goes on y, a cost on x."""
    a, b = pair
    return (b, a) if a == "accuracy" else (a, b)


def _values(points: Iterable[dict[str, Any]], name: str) -> list[float | None]:
    key = OBJECTIVES[name][0]
    return [p.get(key) for p in points]


def _complete(points: list[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    return [p for p in points if all(p.get(OBJECTIVES[n][0]) is not None for n in names)]


def pareto_png(data: dict[str, Any]) -> bytes:
    """The front in every pair of plotted objectives (plus 3-D when three), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = data["plot_objectives"]
    pairs = list(itertools.combinations(names, 2))
    panels = len(pairs) + (1 if len(names) == 3 else 0)
    ncols = 2 if panels == 4 else min(panels, 3)
    nrows = math.ceil(panels / ncols)
    fig = plt.figure(figsize=(5.6 * ncols, 4.6 * nrows), dpi=110)
    for i, pair in enumerate(pairs):
        _mpl_pair(fig.add_subplot(nrows, ncols, i + 1), data, _axes_of(pair), len(names) == 2)
    if len(names) == 3:
        _mpl_3d(fig.add_subplot(nrows, ncols, panels, projection="3d"), data, names)
    fig.suptitle(_png_title(data), fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _png_title(data: dict[str, Any]) -> str:
    n = len(data["front"])
    if not data["points"]:
        return f"{data['study']}: no complete trials yet"
    return f"{data['study']}: Pareto front ({n} of {len(data['points'])} usable trials)"


def _mpl_pair(ax: Any, data: dict[str, Any], axes: tuple[str, str], connect: bool) -> None:
    xn, yn = axes
    pts = _complete(data["points"], axes)
    rest = [p for p in pts if not p["on_front"]]
    front = sorted([p for p in pts if p["on_front"]], key=lambda p: p[OBJECTIVES[xn][0]])
    ax.scatter(_values(rest, xn), _values(rest, yn), s=22, c="#9aa5b1", label="other trials")
    if connect and front:
        ax.step(_values(front, xn), _values(front, yn), where="post", c="#d62728", lw=1, alpha=0.6)
    ax.scatter(_values(front, xn), _values(front, yn), s=44, c="#d62728", label="Pareto front",
               zorder=3)
    # labels go towards the better corner, which no trial occupies beyond a front point
    dx = -5 if OBJECTIVES[xn][1] == "minimize" else 5
    dy = 5 if OBJECTIVES[yn][1] == "maximize" else -12
    for p in front:
        ax.annotate(f"#{p['trial']}", (p[OBJECTIVES[xn][0]], p[OBJECTIVES[yn][0]]),
                    textcoords="offset points", xytext=(dx, dy), fontsize=8,
                    ha="right" if dx < 0 else "left")
    _mpl_teacher(ax, data["teacher"], xn, yn)
    _mpl_style(ax, xn, yn, bool(pts))


def _mpl_teacher(ax: Any, teacher: dict[str, Any], xn: str, yn: str) -> None:
    x, y = teacher.get(OBJECTIVES[xn][0]), teacher.get(OBJECTIVES[yn][0])
    if x is not None and y is not None:
        ax.scatter([x], [y], marker="*", s=160, c="#1f77b4", label="teacher", zorder=4)


def _mpl_style(ax: Any, xn: str, yn: str, has_points: bool) -> None:
    ax.set_xlabel(AXIS_LABELS[xn])
    ax.set_ylabel(AXIS_LABELS[yn])
    if xn in COST_OBJECTIVES and has_points:
        ax.set_xscale("log")
    if yn in COST_OBJECTIVES and has_points:
        ax.set_yscale("log")
    if not has_points:
        ax.text(0.5, 0.5, "no complete trials yet", ha="center", va="center",
                transform=ax.transAxes, fontsize=12)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _mpl_3d(ax: Any, data: dict[str, Any], names: list[str]) -> None:
    pts = _complete(data["points"], names)
    for on_front, colour, size in ((False, "#9aa5b1", 14), (True, "#d62728", 36)):
        sel = [p for p in pts if p["on_front"] == on_front]
        coords = [[_log10(v) if n in COST_OBJECTIVES else v for v in _values(sel, n)]
                  for n in names]
        ax.scatter(*coords, c=colour, s=size)
    for n, setter in zip(names, (ax.set_xlabel, ax.set_ylabel, ax.set_zlabel)):
        setter(("log10 " if n in COST_OBJECTIVES else "") + AXIS_LABELS[n], fontsize=8)
    ax.set_title("3-D front (red)", fontsize=9)


def _log10(v: float | None) -> float | None:
    return math.log10(v) if v else None


# -- report.html (plotly) --------------------------------------------------------------------
def _plotly_div(fig: Any) -> str:
    """A figure as a div + inline script; plotly.js itself is embedded once in <head>."""
    fig.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig.to_html(full_html=False, include_plotlyjs=False,
                       config={"displaylogo": False, "responsive": True})


def _hover(points: list[dict[str, Any]]) -> list[str]:
    return [f"trial {p['trial']} ({p.get('strategy')})<br>{html.escape(p['architecture'])}<br>"
            f"val {fmt(p.get('val_accuracy'), 'pct')}, test {fmt(p.get('test_accuracy'), 'pct')}"
            for p in points]


def pair_figure(data: dict[str, Any], axes: tuple[str, str]) -> Any:
    """One interactive 2-D view of the front: other trials grey, front red, teacher star."""
    import plotly.graph_objects as go

    xn, yn = axes
    pts = _complete(data["points"], axes)
    fig = go.Figure()
    for on_front, name, colour, size in ((False, "other trials", "#9aa5b1", 8),
                                         (True, "Pareto front", "#d62728", 11)):
        sel = sorted([p for p in pts if p["on_front"] == on_front],
                     key=lambda p: p[OBJECTIVES[xn][0]])
        fig.add_trace(go.Scatter(x=_values(sel, xn), y=_values(sel, yn), name=name,
                                 mode="markers+text" if on_front else "markers",
                                 text=[f"#{p['trial']}" for p in sel] if on_front else None,
                                 textposition="top right", hovertext=_hover(sel),
                                 hoverinfo="text", marker={"color": colour, "size": size}))
    _plotly_teacher(fig, data["teacher"], xn, yn)
    fig.update_layout(title=f"Pareto front: {AXIS_LABELS[yn]} vs {AXIS_LABELS[xn]}",
                      xaxis_title=AXIS_LABELS[xn], yaxis_title=AXIS_LABELS[yn], height=440,
                      xaxis_type="log" if xn in COST_OBJECTIVES else "linear",
                      yaxis_type="log" if yn in COST_OBJECTIVES else "linear")
    return fig


def _plotly_teacher(fig: Any, teacher: dict[str, Any], xn: str, yn: str) -> None:
    import plotly.graph_objects as go

    x, y = teacher.get(OBJECTIVES[xn][0]), teacher.get(OBJECTIVES[yn][0])
    if x is not None and y is not None:
        fig.add_trace(go.Scatter(x=[x], y=[y], name="teacher", mode="markers",
                                 marker={"symbol": "star", "size": 16, "color": "#1f77b4"}))


def figure_3d(data: dict[str, Any], names: list[str]) -> Any:
    import plotly.graph_objects as go

    pts = _complete(data["points"], names)
    fig = go.Figure()
    for on_front, name, colour in ((False, "other trials", "#9aa5b1"),
                                   (True, "Pareto front", "#d62728")):
        sel = [p for p in pts if p["on_front"] == on_front]
        x, y, z = (_values(sel, n) for n in names)
        fig.add_trace(go.Scatter3d(x=x, y=y, z=z, mode="markers", name=name,
                                   hovertext=_hover(sel), hoverinfo="text",
                                   marker={"color": colour, "size": 4 if not on_front else 6}))
    axis = {f"{a}axis": {"title": AXIS_LABELS[n], "type": "log" if n in COST_OBJECTIVES else
                         "linear"} for a, n in zip("xyz", names)}
    fig.update_layout(title="3-D Pareto front", scene=axis, height=560)
    return fig


def hypervolume_figure(curve: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[c["trial"] for c in curve], y=[c["hypervolume"] for c in curve],
                               mode="lines+markers", name="hypervolume", line={"shape": "hv"}))
    fig.update_layout(title="Hypervolume of the feasible front after each trial",
                      xaxis_title="trial", yaxis_title="hypervolume", height=340)
    return fig


def importance_figure(imp: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    rows = importance_rows(imp)[:12][::-1]
    fig = go.Figure()
    for key, label in (("accuracy", "val accuracy"), ("cost", imp["cost_metric"])):
        fig.add_trace(go.Bar(y=[r["parameter"] for r in rows], x=[r[key] or 0 for r in rows],
                             orientation="h", name=f"for {label}"))
    fig.update_layout(title="Hyperparameter importances (fANOVA)", barmode="group",
                      height=max(300, 28 * len(rows) + 120), xaxis_title="importance")
    return fig


def selection_figure(points: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go

    pts = [p for p in points if p.get("val_accuracy") is not None
           and p.get("test_accuracy") is not None]
    fig = go.Figure(go.Scatter(x=[p["val_accuracy"] for p in pts],
                               y=[p["test_accuracy"] for p in pts], mode="markers",
                               name="trials", hovertext=_hover(pts), hoverinfo="text",
                               marker={"color": ["#d62728" if p["on_front"] else "#9aa5b1"
                                                 for p in pts]}))
    lo = min([p["val_accuracy"] for p in pts] + [p["test_accuracy"] for p in pts], default=0)
    fig.add_trace(go.Scatter(x=[lo, 1], y=[lo, 1], mode="lines", name="test = val",
                             line={"dash": "dot", "color": "#555"}))
    fig.update_layout(title="Test vs validation accuracy (red: Pareto front)", height=380,
                      xaxis_title="val accuracy", yaxis_title="test accuracy")
    return fig


def latency_figure(lp: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    rows = lp["rows"]
    top = max(max(r["latency_ms"], r["predicted_latency_ms"]) for r in rows)
    fig = go.Figure(go.Scatter(x=[r["latency_ms"] for r in rows],
                               y=[r["predicted_latency_ms"] for r in rows], mode="markers",
                               text=[f"trial {r['trial']}" for r in rows], name="trials"))
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="exact",
                             line={"dash": "dot", "color": "#555"}))
    fig.update_layout(title="Predicted vs measured latency", xaxis_title="measured ms",
                      yaxis_title="predicted ms", height=380)
    return fig


def html_table(rows: list[dict[str, Any]], cols: list[Column], cls: str = "") -> str:
    if not rows:
        return "<p class='none'>none</p>"
    head = "".join(f"<th class='{kind}'>{html.escape(h)}</th>" for h, _, kind in cols)
    body = "".join("<tr>" + "".join(f"<td class='{kind}'>{html.escape(fmt(r.get(k), kind))}</td>"
                                    for _, k, kind in cols) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table class='kv'><tbody>{body}</tbody></table>"


def _section(title: str, anchor: str, *parts: str) -> str:
    return f"<section id='{anchor}'><h2>{html.escape(title)}</h2>{''.join(parts)}</section>"


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _front_section(data: dict[str, Any], png: bytes) -> str:
    names = data["plot_objectives"]
    figs = [_plotly_div(pair_figure(data, _axes_of(p))) for p in itertools.combinations(names, 2)]
    if len(names) == 3:
        figs.append(_plotly_div(figure_3d(data, names)))
    img = base64.b64encode(png).decode("ascii")
    static = (f"<details><summary>static image (pareto.png)</summary><img alt='Pareto front' "
              f"src='data:image/png;base64,{img}'></details>")
    note = _p("Members of the front: feasible, complete trials that no other trial beats on "
              "every objective. Retention = student / teacher accuracy; × = teacher / student.")
    table = html_table(_with_lr(data["front"]), front_columns(data["front"]), "front")
    recipes = ("<details><summary>full architecture, recipe and training settings</summary>"
               + html_table(data["front"], RECIPE_COLUMNS, "recipes") + "</details>")
    return _section("Pareto front", "pareto", *figs, static, note, table, recipes)


def _html_sections(data: dict[str, Any]) -> list[str]:
    imp, sel, lp = data["importances"], data["selection"], data["latency_prediction"]
    imp_rows = importance_rows(imp)
    out = [
        _section("Retention vs compression: the article's claims, measured", "claims",
                 _p("Bands by parameter compression (teacher / student). Each band's student is "
                    "chosen by validation retention; its test retention is compared."),
                 html_table(data["claim"], CLAIM_COLUMNS, "claim")),
        _section("Selection: validation vs test", "selection", _p(selection_text(sel)),
                 _plotly_div(selection_figure(data["points"])) if data["points"] else ""),
        _section("Convergence", "convergence", _p(_hv_text(data["hypervolume"])),
                 _plotly_div(hypervolume_figure(data["hypervolume"])) if data["hypervolume"]
                 else ""),
        _section("Hyperparameter importances", "importances",
                 _p(_importance_text(imp)),
                 _plotly_div(importance_figure(imp)) if imp_rows else "",
                 html_table(imp_rows, importance_columns(imp), "importances")),
        _section("KD gain over training from scratch", "kd-gain",
                 html_table(data["kd_gain"], KD_COLUMNS) if data["kd_gain"] else _p(_NO_BASELINE)),
    ]
    if lp:
        out.append(_section("Predicted vs measured latency", "latency", _p(_latency_text(lp)),
                            _plotly_div(latency_figure(lp)), html_table(lp["rows"],
                                                                        LATENCY_COLUMNS)))
    reasons = [f"<h3>{t}</h3>" + html_table(data[k], REASON_COLUMNS, "reasons") for t, k in
               (("Failed", "failures"), ("Pruned", "pruned"), ("Infeasible", "infeasible"))]
    out.append(_section("Failed, pruned and infeasible trials", "failures", *reasons))
    return out


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1280px;color:#1d2330;padding:0 16px}
h1{font-size:1.6em}h2{border-bottom:1px solid #dde;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:10px 0;font-size:13px}
th,td{border:1px solid #dde;padding:4px 8px;text-align:right}
th{background:#f3f5f9}.text,.list,.json{text-align:left}
td.json{font-family:monospace;font-size:12px}
table.kv th{text-align:left}table.kv td{text-align:left}
.status{padding:8px 12px;background:#fff6d9;border:1px solid #f0d98c;border-radius:4px}
img{max-width:100%}details{margin:8px 0}p.none{color:#777}
"""


def render_html(data: dict[str, Any], png: bytes) -> str:
    """report.html: self-contained (plotly.js inline, images as data URIs, no network)."""
    from plotly.offline import get_plotlyjs

    title = html.escape(f"autokd report: {data['study']}")
    parts = [
        f"<h1>{title}</h1><p>generated {html.escape(data['generated'])}</p>",
        f"<p class='status'>{html.escape(data['status']['note'])}</p>",
        _kv_table(summary_rows(data)),
        _section("Teacher", "teacher", html_table([data["teacher"]], TEACHER_COLUMNS, "teacher")),
        _front_section(data, png),
        *_html_sections(data),
    ]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script>"
            f"</head><body>{''.join(parts)}</body></html>")


# -- files -----------------------------------------------------------------------------------
def _check_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudyError(f"cannot create {root}: {exc.strerror}") from None
    if not os.access(root, os.W_OK):
        raise StudyError(f"cannot write the report to {root}: permission denied")

