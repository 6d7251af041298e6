"""The Pareto front's members, with metrics, ratios against the teacher, recipe and KD gain.

Why: the front is the report's answer; each member carries everything the front table, the
recipe table and the KD-gain table show, so those tables only pick columns.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autokd.front import UsefulnessFloor, pareto_front
from autokd.record import BASELINE_ATTR, TrialRecord, repeat_summary
from autokd.report.trials import architecture, ratios
from autokd.runtime_front import runtime_latency
from autokd.study import StudyPaths
from autokd.tables import recipe_summary

__all__ = ["MEMBER_KEYS", "assistant_label", "chain_lines", "front_records", "kd_gain_rows",
           "relative_error"]

MEMBER_KEYS = ("val_accuracy", "test_accuracy", "val_nll", "test_nll", "retention",
               "val_retention", "params", "flops", "bytes", "latency_ms", "latency_ms_batch",
               "latency_cv", "params_compression", "flops_compression", "latency_speedup",
               "predicted_latency_ms", "best_epoch", "epochs_run", "train_seconds", "seed",
               "val_balanced_accuracy", "test_balanced_accuracy", "val_macro_f1",
               "test_macro_f1", "val_per_class_accuracy", "test_per_class_accuracy",
               "assistant_of", "assistant_seconds", "assistant_flops",
               "assistant_test_accuracy", "latency_runtime", "latency_fallback")


def front_records(study: optuna.Study, teacher: dict[str, Any], paths: StudyPaths | None = None,
                  epochs: int | None = None, floor: UsefulnessFloor | None = None,
                  ) -> list[dict[str, Any]]:
    """The Pareto members (students above ``floor``, default the study's) with metrics, ratios
    vs the teacher, recipe and KD gain.

    ``epochs`` is the search's epochs override: shown in each member's training settings
    instead of the space's nominal epochs, which the search did not use.
    """
    baseline = study.user_attrs.get(BASELINE_ATTR) or {}
    rows = [_member(t, teacher, baseline.get(str(t.number)), paths)
            for t in pareto_front(study, floor=floor)]
    deploy = runtime_latency(study)
    for row in rows:
        _deploy_latency(row, deploy)
        if epochs is not None and isinstance(row.get("train"), dict):
            row["train"] = {**row["train"], "epochs": epochs}
    return rows


def _member(t: FrozenTrial, teacher: dict[str, Any], base: dict[str, Any] | None,
            paths: StudyPaths | None) -> dict[str, Any]:
    """One front row; ``base`` is its scratch twin's record, when the search trained one."""
    a = TrialRecord.of(t).fields()
    row: dict[str, Any] = {"trial": t.number, "strategy": a.get("strategy"),
                           "family": a.get("family"), "architecture": architecture(a),
                           "spec": a.get("spec"), "recipe": a.get("recipe"),
                           "recipe_summary": recipe_summary(a.get("recipe")),
                           "train": a.get("train")}
    row.update({k: a.get(k) for k in MEMBER_KEYS})
    row.update(ratios(a, teacher))
    row["assistant"] = assistant_label(a)
    row["selection_gap"] = _diff(a.get("val_accuracy"), a.get("test_accuracy"))
    row["latency_error_pct"] = relative_error(a.get("predicted_latency_ms"), a.get("latency_ms"))
    if base:
        row["scratch_val_accuracy"] = base.get("val_accuracy")
        row["scratch_test_accuracy"] = base.get("test_accuracy")
        row["kd_gain"] = _diff(a.get("test_accuracy"), base.get("test_accuracy"))
        row["kd_gain_val"] = _diff(a.get("val_accuracy"), base.get("val_accuracy"))
        row.update(_seed_columns(base))
    if paths is not None:
        row["weights_kept"] = (paths.root / a.get("checkpoint", f"students/{t.number}/"
                                                                "student.pt")).exists()
    return row


def _deploy_latency(row: dict[str, Any], deploy: dict[str, Any]) -> None:
    """The member's latency in the search's deploy runtime, timed after the search
    (``autokd.runtime_front``), as ``deploy_*`` cells; the trial's own (eager) stay."""
    row["latency_runtime"] = row.get("latency_runtime") or "torch"  # recorded before runtimes
    got = (deploy.get("trials") or {}).get(str(row["trial"]))
    if not got:
        return
    row.update({"deploy_runtime": got.get("latency_runtime"),
                "deploy_latency_ms": got.get("latency_ms"),
                "deploy_latency_ms_batch": got.get("latency_ms_batch"),
                "deploy_latency_speedup": got.get("latency_speedup"),
                "deploy_latency_fallback": got.get("latency_fallback")})


def _seed_columns(base: dict[str, Any]) -> dict[str, Any]:
    """The N-seed comparison (``--baseline-seeds``) as flat cells; empty when not recorded."""
    s = repeat_summary(base)
    if s is None:
        skipped = ((base.get("repeats") or {}).get("skipped"))
        return {"seeds_note": skipped} if skipped else {}
    return {"seeds_n": s["n"], "seeds_kd_test": s["kd_mean"], "seeds_scratch_test":
            s["scratch_mean"], "scratch_lr_factor": s["scratch_lr_factor"],
            "seeds_gain": s["gain_mean"],
            "seeds_ci": f"[{100 * s['ci_low']:+.1f}, {100 * s['ci_high']:+.1f}] pp",
            "seeds_wilcoxon_p": s["wilcoxon_p"], "seeds_note": s["wilcoxon_note"],
            "seeds_requested": s["requested"]}


def assistant_label(a: dict[str, Any]) -> str | None:
    """Who taught a trial's student when it was not the teacher (recipe ``assistant: auto``):
    ``trial 3``, or ``trained inside: cnn d2 w8/16`` for an assistant trained in the trial."""
    if a.get("assistant_of") is not None:
        return f"trial {a['assistant_of']}"
    if a.get("assistant_seconds") is None:
        return None
    arch = architecture({"family": a.get("assistant_family"), "spec": a.get("assistant_spec")})
    return f"trained inside: {arch}"


def chain_lines(front: list[dict[str, Any]]) -> list[str]:
    """One line per front member taught through an assistant: teacher -> assistant -> member,
    with each link's test accuracy and FLOPs."""
    out = []
    for r in front:
        if not r.get("assistant"):
            continue
        mid = (f"{r['assistant']} (test acc {_pct(r.get('assistant_test_accuracy'))}, "
               f"{_int(r.get('assistant_flops'))} FLOPs)")
        out.append(f"teacher -> {mid} -> trial {r['trial']} (test acc "
                   f"{_pct(r.get('test_accuracy'))}, {_int(r.get('flops'))} FLOPs)")
    return out


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * float(v):.1f} %"


def _int(v: Any) -> str:
    return "-" if v is None else f"{round(float(v)):,}"


def _diff(a: Any, b: Any) -> float | None:
    """``a - b``, or None when either was not recorded."""
    return float(a) - float(b) if a is not None and b is not None else None


def relative_error(predicted: Any, measured: Any) -> float | None:
    """Percent error of a prediction; None when either is missing or nothing was measured."""
    if predicted is None or not measured:
        return None
    return 100.0 * (float(predicted) - float(measured)) / float(measured)


def kd_gain_rows(front: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Front members with a scratch twin; None when the search did not record baselines."""
    rows = [r for r in front if "kd_gain" in r]
    return rows or None
