"""The report's analyses: the article's claim table, convergence, importances, selection, latency.

Why the claim table selects by validation: each band's student is the one with the best
validation retention and its test retention is what is compared with the claim, so the table
does not reward luck on the test split, which selection never saw.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autokd.config import OBJECTIVES
from autokd.front import hypervolume_history, usable_trials
from autokd.record import SearchRecord, TrialRecord
from autokd.report.axes import COST_OBJECTIVES
from autokd.report.front import relative_error
from autokd.report.snapshot import quiet_optuna
from autokd.scale import study_scale

__all__ = ["CLAIM_BANDS", "claim_table", "hypervolume_curve", "importances",
           "latency_prediction", "selection_summary"]

# compression band by params (low, high, article's retention claim, claim low, claim high)
CLAIM_BANDS: list[tuple[float, float, str, float, float]] = [
    (2.0, 4.0, "95-98 %", 0.95, 0.98),
    (4.0, 8.0, "90-95 %", 0.90, 0.95),
    (8.0, 16.0, "80-90 %", 0.80, 0.90),
    (16.0, math.inf, "<80 %", 0.0, 0.80),
]


def _band_label(low: float, high: float) -> str:
    """A band's name, e.g. ``2-4×`` or ``>16×``."""
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
    """How a test retention compares with the article's claimed range."""
    if retention is None:
        return "no test retention recorded"
    if retention > high:
        return "better than claimed"
    return "as claimed" if retention >= low else "worse than claimed"


def hypervolume_curve(study: optuna.Study) -> dict[str, Any]:
    """Normalised hypervolume of the feasible front after each finished trial, and the scale
    it was taken on (``autokd.pareto.FrontScale``: the space's cost ranges, accuracy from the
    majority class to the teacher), described in one sentence for the report."""
    names = list(SearchRecord.of(study).get("objectives") or [])
    if not names or len(names) != len(study.directions) or "score" in names:
        return {"curve": [], "scale": None}
    scale = study_scale(study, names, [t.values for t in usable_trials(study)])
    curve = [{"trial": n, "hypervolume": float(hv)}
             for n, hv in hypervolume_history(study, names, scale)]
    return {"curve": curve, "scale": scale.describe(names)}


def importances(study: optuna.Study) -> dict[str, Any]:
    """fANOVA importances of the sampled parameters for accuracy and for the main cost.

    The cost's importances consider architecture parameters only: a recipe parameter (alpha,
    lr) cannot change FLOPs or size, and with few trials a forest would still credit it noise.
    """
    trials = usable_trials(study)
    cost = _cost_metric(SearchRecord.of(study).get("objectives") or [])
    return {"accuracy": _importance(trials, "val_accuracy"),
            "cost": _importance(trials, cost, _architecture_params(trials)),
            "cost_metric": cost}


def _cost_metric(objectives: Sequence[str]) -> str:
    """The trial attribute of the study's first cost objective; FLOPs when it has none."""
    costs = [o for o in objectives if o in COST_OBJECTIVES]
    return OBJECTIVES[costs[0]][0] if costs else "flops"


def _architecture_params(trials: list[FrozenTrial]) -> list[str]:
    """Sampled names that set the spec (``widths_1`` sets ``widths``), common to all trials."""
    common = set.intersection(*(set(t.params) for t in trials)) if trials else set()
    specs = [TrialRecord.of(t).spec or {} for t in trials]
    return sorted(p for p in common if all(re.sub(r"_\d+$", "", p) in spec for spec in specs))


def _importance(trials: list[FrozenTrial], key: str,
                params: list[str] | None = None) -> dict[str, Any]:
    """Importances on a throwaway in-memory study holding only trials that measured ``key``."""
    values = {t.number: TrialRecord.of(t).get(key) for t in trials}
    ok = [t for t in trials if isinstance(values[t.number], (int, float)) and t.params]
    if len(ok) < 3:
        return {"unavailable": f"needs at least 3 complete trials with sampled parameters "
                               f"(have {len(ok)})"}
    if params is not None and not params:
        return {"unavailable": "no sampled architecture parameter common to all trials"}
    with quiet_optuna():
        tmp = optuna.create_study(direction="maximize")
        tmp.add_trials([optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                  value=float(values[t.number])) for t in ok])
        try:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            values = optuna.importance.get_param_importances(tmp, evaluator=evaluator,
                                                             params=params)
        except (RuntimeError, ValueError) as exc:  # e.g. no parameter common to all trials
            return {"unavailable": str(exc).splitlines()[0][:200]}
    return {"values": {k: float(v) for k, v in values.items()}, "trials": len(ok)}


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
    """Predicted (e.g. a DARTS latency model) vs measured latency, when trials recorded both,
    and the latency table's own held-out error (``latency_model``, ``LatencyTable.error()``)
    recorded by the run that used it, so the per-trial error can be read against it."""
    rows = []
    model = None
    for t in usable_trials(study):
        rec = TrialRecord.of(t)
        model = model or t.user_attrs.get("latency_model")
        pred, meas = rec.get("predicted_latency_ms"), rec.latency_ms
        if pred is not None and meas:
            rows.append({"trial": t.number, "strategy": rec.strategy,
                         "predicted_latency_ms": float(pred), "latency_ms": float(meas),
                         "error_ms": float(pred) - float(meas),
                         "error_pct": relative_error(pred, meas)})
    if not rows:
        return None
    errors = [abs(r["error_pct"]) for r in rows]
    return {"rows": rows, "mean_abs_error_pct": sum(errors) / len(errors),
            "max_abs_error_pct": max(errors), "table_error": model}
