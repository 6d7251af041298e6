"""Cells and columns: how each value is written, and which columns each table shows.

Why: report.html and report.md show the same tables; one ``fmt`` and one column list per table
keep the two reports cell-for-cell identical.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from autokd.metrics import metric_label

__all__ = [
    "CLAIM_COLUMNS",
    "KD_COLUMNS",
    "KD_SEED_COLUMNS",
    "LATENCY_COLUMNS",
    "REASON_COLUMNS",
    "RECIPE_COLUMNS",
    "TEACHER_COLUMNS",
    "Column",
    "fmt",
    "front_columns",
    "importance_columns",
    "importance_rows",
    "kd_columns",
    "metric_columns",
    "teacher_columns",
    "with_lr",
]

Column = tuple[str, str, str]  # (header, key, kind of formatting)


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
KD_SEED_COLUMNS: list[Column] = [
    ("seeds", "seeds_n", "int"), ("KD test acc (mean)", "seeds_kd_test", "pct"),
    ("scratch test acc (mean)", "seeds_scratch_test", "pct"),
    ("scratch lr ×", "scratch_lr_factor", "num"),
    ("KD gain (test, paired mean)", "seeds_gain", "pp"), ("95 % CI", "seeds_ci", "text"),
    ("Wilcoxon p", "seeds_wilcoxon_p", "num")]
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


def kd_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """The KD-gain table's columns: the single twin's, and the N-seed ones when recorded."""
    return KD_COLUMNS + (KD_SEED_COLUMNS if any("seeds_gain" in r for r in rows) else [])


def _runtime_of(rows: list[dict[str, Any]], key: str) -> str:
    """The runtime(s) named by ``key`` over ``rows`` (``a+b`` when they differ)."""
    return "+".join(sorted({str(r[key]) for r in rows if r.get(key)})) or "torch"


def teacher_columns(teacher: dict[str, Any]) -> list[Column]:
    """The teacher table's columns, latency named by the runtime it was timed in."""
    rt = teacher.get("latency_runtime") or "torch"
    cols = [(f"latency ms ({rt})", k, f) if k == "latency_ms" else
            (f"latency ms (batch, {rt})", k, f) if k == "latency_ms_batch" else (n, k, f)
            for n, k, f in TEACHER_COLUMNS]
    if teacher.get("deploy_latency_ms") is not None:
        cols.insert(-1, (f"latency ms ({teacher.get('deploy_runtime')})", "deploy_latency_ms",
                         "ms"))
    for key in ("latency_fallback", "deploy_latency_fallback"):  # speed-ups then mix runtimes
        if teacher.get(key):
            cols.insert(-1, ("latency timed in torch because", key, "text"))
    return cols


def front_columns(front: list[dict[str, Any]], metric: str | None = None) -> list[Column]:
    """The front table's columns; optional ones only when some member has them, and the
    selection metric's when it is not plain accuracy. Latency columns name their runtime;
    members re-timed in the deploy runtime after the search get those columns too."""
    rt = _runtime_of(front, "latency_runtime")
    cols: list[Column] = [
        ("trial", "trial", "int"), ("strategy", "strategy", "text"),
        *metric_columns(metric or "accuracy"),
        ("val acc", "val_accuracy", "pct"), ("test acc", "test_accuracy", "pct"),
        ("val−test", "selection_gap", "pp"), ("retention", "retention", "pct"),
        ("val retention", "val_retention", "pct"), ("params", "params", "int"),
        ("params ×", "params_compression", "x"), ("FLOPs", "flops", "int"),
        ("FLOPs ×", "flops_compression", "x"), (f"latency ms ({rt})", "latency_ms", "ms"),
        (f"speed-up ({rt})", "latency_speedup", "x")]
    if any(r.get("deploy_latency_ms") is not None for r in front):
        deploy = _runtime_of(front, "deploy_runtime")
        cols += [(f"latency ms ({deploy})", "deploy_latency_ms", "ms"),
                 (f"speed-up ({deploy})", "deploy_latency_speedup", "x")]
    if any(r.get("predicted_latency_ms") is not None for r in front):
        cols += [("predicted ms", "predicted_latency_ms", "ms"),
                 ("latency error %", "latency_error_pct", "signed")]
    if any("kd_gain" in r for r in front):
        cols.append(("KD gain", "kd_gain", "pp"))
    if any(r.get("assistant") for r in front):
        cols.append(("taught by", "assistant", "text"))
    return cols + [("architecture", "architecture", "text"), ("recipe", "recipe_summary", "text"),
                   ("lr", "lr", "num")]


def metric_columns(metric: str) -> list[Column]:
    """The front table's extra columns for a selection metric other than accuracy."""
    if metric == "accuracy":
        return []
    label = metric_label(metric)
    return [(f"val {label}", f"val_{metric}", "pct"), (f"test {label}", f"test_{metric}", "pct")]


def with_lr(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Front rows with the learning rate lifted out of the training settings, for its column."""
    return [{**r, "lr": (r.get("train") or {}).get("lr")} for r in rows]


def importance_rows(imp: dict[str, Any]) -> list[dict[str, Any]]:
    """Parameters with their importance for accuracy and for the cost, most important first."""
    acc, cost = imp["accuracy"].get("values") or {}, imp["cost"].get("values") or {}
    names = sorted(set(acc) | set(cost), key=lambda n: -(acc.get(n, 0.0) + cost.get(n, 0.0)))
    return [{"parameter": n, "accuracy": acc.get(n), "cost": cost.get(n)} for n in names]


def importance_columns(imp: dict[str, Any]) -> list[Column]:
    """The importance table's columns; the cost column is named after the study's cost."""
    return [("parameter", "parameter", "text"), ("importance for val accuracy", "accuracy", "num"),
            (f"importance for {imp['cost_metric']}", "cost", "num")]
