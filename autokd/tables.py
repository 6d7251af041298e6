"""trials.csv and pareto.csv: flat views of the study, rewritten from it whenever asked.

Every column comes from the Optuna storage, so the tables can always be regenerated and can
never disagree with the study.
"""

from __future__ import annotations

import json
from typing import Any

import optuna
import pandas as pd

from autokd.distill import recipe_summary
from autokd.front import UsefulnessFloor, pareto_front
from autokd.record import BASELINE_ATTR, TrialRecord, repeat_summary
from autokd.study import StudyPaths, atomic_write_text, trials_frame

__all__ = ["KEY_COLUMNS", "front_rows", "pareto_frame", "spec_summary", "write_tables"]

KEY_COLUMNS = ["trial", "val_accuracy", "test_accuracy", "retention", "flops", "params", "bytes",
               "latency_ms", "flops_compression", "params_compression", "latency_speedup"]


def spec_summary(spec: Any) -> str:
    """A short architecture label, e.g. ``d2 w8/16 k3 max relu`` (cnn),
    ``s16 d2/1 w16/24 e3/6 k7/3 se-/+ relu/hardswish`` (mbv2), ``L2 D32 H2 m2 p4 cls``
    (transformer) or ``L2 Dx1.0 Fx0.5`` (hf: layers, width scales): the keys a spec has."""
    if isinstance(spec, str):
        spec = json.loads(spec)
    if not isinstance(spec, dict):
        return ""
    parts = []
    for key, prefix in (("stem", ""), ("stem_width", "s"), ("depth", "d"), ("depths", "d"),
                        ("widths", "w"), ("expansion", "e"), ("kernel", "k"), ("se", "se"),
                        ("pool", ""), ("activation", ""), ("head_width", "h"),
                        ("layers", "L"), ("hidden", "D"), ("heads", "H"), ("mlp_ratio", "m"),
                        ("patch", "p"), ("pooling", ""), ("hidden_scale", "Dx"),
                        ("intermediate_scale", "Fx")):
        value = spec.get(key)
        if value is None or (key == "head_width" and not value):
            continue
        if key == "se":
            value = [value] if not isinstance(value, list) else value
            value = "/".join("+" if v else "-" for v in value)
        elif isinstance(value, list):
            value = "/".join(map(str, value))  # 8 == [8]*d
        parts.append(f"{prefix}{value}")
    return " ".join(parts)


def front_rows(study: optuna.Study, floor: UsefulnessFloor | None = None,
               ) -> list[dict[str, Any]]:
    """One dict per Pareto member (above ``floor``, default the study's): key metrics,
    architecture and recipe."""
    rows = []
    baseline = study.user_attrs.get(BASELINE_ATTR, {})
    for t in pareto_front(study, floor=floor):
        a = TrialRecord.of(t).fields()
        row = {k: a.get(k) for k in KEY_COLUMNS if k != "trial"}
        row = {"trial": t.number, **row, "strategy": a.get("strategy"),
               "architecture": f"{a.get('family')} {spec_summary(a.get('spec'))}",
               "recipe": recipe_summary(a.get("recipe")),
               "lr": (a.get("train") or {}).get("lr")}
        base = baseline.get(str(t.number))
        if base:
            row.update(scratch_test_accuracy=base.get("test_accuracy"),
                       kd_gain=(a.get("test_accuracy") or 0) - base.get("test_accuracy", 0))
        seeds = repeat_summary(base)
        if seeds:
            row["kd_gain_seeds"] = seeds
        rows.append(row)
    return rows


def pareto_frame(study: optuna.Study) -> pd.DataFrame:
    """Pareto members with every recorded column (same columns as trials.csv)."""
    frame = trials_frame(study)
    numbers = [t.number for t in pareto_front(study)]
    if frame.empty or not numbers:
        return frame.iloc[0:0]
    front = frame[frame["trial"].isin(numbers)].copy()
    extra = pd.DataFrame(front_rows(study))[["trial", "architecture", "recipe"]]
    return front.merge(extra, on="trial", how="left")


def write_tables(study: optuna.Study, paths: StudyPaths) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials, front = trials_frame(study), pareto_frame(study)
    atomic_write_text(paths.root / "trials.csv", trials.to_csv(index=False))
    atomic_write_text(paths.root / "pareto.csv", front.to_csv(index=False))
    return trials, front
