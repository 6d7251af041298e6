"""The sentences both reports share: the summary facts and each section's plain-language reading.

Why: report.md and report.html must say the same thing; writing each sentence once keeps them
from drifting apart.
"""

from __future__ import annotations

from typing import Any

from autokd.metrics import metric_label
from autokd.report.format import fmt

__all__ = [
    "NO_BASELINE",
    "hypervolume_text",
    "importance_text",
    "kd_gain_text",
    "latency_text",
    "left_off_text",
    "limits_text",
    "selection_text",
    "summary_rows",
    "table_error_text",
]

NO_BASELINE = ("Not recorded: rerun the search with --baseline to train each front member "
               "from scratch and measure what distillation adds.")


def kd_gain_text(rows: list[dict[str, Any]]) -> str:
    """How the KD-gain table was measured, and how far each kind of gain can be trusted."""
    text = ("Single twin (--baseline): each member trained again from scratch with its own "
            "seed and the learning rate tuned for KD; the member was chosen on validation, so "
            "its validation gain is biased towards KD and even its test gain rests on one seed.")
    seeded = [r for r in rows if "seeds_gain" in r]
    if not seeded:
        return text + " Rerun the search with --baseline-seeds N for a gain over N seeds."
    text += (" N seeds (--baseline-seeds): KD and scratch re-trained on N seeds the search did "
             "not use, pair i sharing seed i; scratch's learning rate is the KD one × 0.3, 1 "
             "or 3, whichever scored best on validation with the first seed (test data is "
             "not read for the choice). The gain is the mean of the N paired test differences "
             "with a 95 % t interval.")
    notes = sorted({r["seeds_note"] for r in seeded if r.get("seeds_note")})
    if notes:
        text += " Wilcoxon signed-rank test: " + "; ".join(notes) + "."
    short = [r["trial"] for r in seeded if r.get("seeds_requested", 0) > r["seeds_n"]]
    if short:
        text += (f" Trials {', '.join(map(str, short))} have fewer finished seeds than asked "
                 "(an interrupted run; rerun the search to finish them).")
    return text


def summary_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Key facts shown at the top of both reports."""
    ds, counts, sel = data["dataset"], data["counts"], data["selection"]
    sizes = ds.get("sizes") or {}
    return [
        ("status", data["status"]["note"]),
        ("objectives", ", ".join(data["objectives"]) + f" ({data['mode']})"),
        ("dataset", (f"{ds.get('name', '?')} — train {sizes.get('train', '?')}"
                    f"{' synthesised from the teacher (--data-free)' if ds.get('data_free') else ''}, "
                    f"validation {sizes.get('val', '?')}, test {sizes.get('test', '?')} samples; "
                    f"split hash {ds.get('split_hash', '?')}")),
        ("trials", (f"{counts['complete']} complete, {counts['pruned']} pruned, "
                   f"{counts['fail']} failed, {counts['infeasible']} infeasible, "
                   f"{counts['running'] + counts['waiting']} running/waiting "
                   f"(budget {_budget_text(data['budget'])})")),
        ("controllers", ", ".join(f"{k}: {v}" for k, v in counts["strategies"].items()) or "-"),
        ("hard limits", limits_text(data)),
        ("usefulness floor", _floor_text(data.get("usefulness"))),
        ("epochs per trial", fmt(data["search_epochs"], "int") if data["search_epochs"]
         else "as set by the search space"),
        ("selection metric", metric_label(data.get("metric") or "accuracy")
         + " (best epochs, the accuracy objective and the hypervolume's accuracy axis)"),
        ("validation accuracy ±1 SE", fmt(sel["val_accuracy_se"], "pp").lstrip("+")),
        ("storage", data["storage"]),
    ]


def limits_text(data: dict[str, Any]) -> str:
    """Cost maxima (checked before training) and validation minima (after), or ``none``."""
    parts = [f"{k} ≤ {fmt(v)}" for k, v in data["limits"].items()]
    parts += [f"val {k.removeprefix('min_')} ≥ {fmt(v)}" for k, v in
              (data.get("minima") or {}).items()]
    return ", ".join(parts) or "none"


def left_off_text(usefulness: dict[str, Any] | None) -> str:
    """How many trained students the front leaves off as not useful, and by which rule."""
    if not usefulness or not usefulness.get("left_off"):
        return ""
    n = usefulness["left_off"]
    return (f"{n} student{'s' if n != 1 else ''} below the usefulness floor "
            f"({usefulness['rule']}) left off the front, its tables and plots; trials.csv keeps "
            "them.")


def _floor_text(usefulness: dict[str, Any] | None) -> str:
    if not usefulness:
        return "-"
    return f"{usefulness['rule']}: {usefulness.get('left_off', 0)} student(s) left off the front"


def _budget_text(budget: dict[str, Any]) -> str:
    """The search's budget: trials, else seconds, else ``-``."""
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


def hypervolume_text(curve: list[dict[str, Any]], scale: str | None = None) -> str:
    """Where the hypervolume ended, how early the search got close to it, and its scale."""
    if not curve:
        return "No finished trials yet."
    last = curve[-1]["hypervolume"]
    at = next((i for i, c in enumerate(curve, 1) if c["hypervolume"] >= 0.99 * last), None)
    text = (f"Normalised hypervolume reached {last:.4f} after {len(curve)} finished trials; "
            f"99 % of it after {at} of them.")
    return f"{text} {scale}" if scale else text


def importance_text(imp: dict[str, Any]) -> str:
    """What the importances rest on, or why they are missing, with a caution on few trials."""
    parts = []
    for key, what in (("accuracy", "val accuracy"), ("cost", (f"{imp['cost_metric']} "
                                                             "(architecture parameters only)"))):
        entry = imp[key]
        parts.append(f"For {what}: " + (f"fANOVA over {entry['trials']} trials." if "values"
                                        in entry else f"unavailable, {entry['unavailable']}."))
    return " ".join(parts) + " With fewer than ~20 trials, read them as rough hints."


def latency_text(lp: dict[str, Any]) -> str:
    """How far the latency predictions were from the measurements."""
    text = (f"{len(lp['rows'])} trials carry a predicted latency: mean absolute error "
            f"{lp['mean_abs_error_pct']:.1f} %, worst {lp['max_abs_error_pct']:.1f} %.")
    table = lp.get("table_error")
    return f"{text} {table_error_text(table)}" if table else text


def table_error_text(error: dict[str, Any]) -> str:
    """A latency table's held-out error per batch beside the measurement's own variation."""
    def pct(value: Any) -> str:
        return "-" if value is None else f"{value:.1f} %"

    parts = []
    for batch, label in (("1", "batch 1"), ("deploy", f"batch {error.get('batch_size')}")):
        e = error.get(batch) or {}
        parts.append(f"at {label} mean {pct(e.get('mean_abs_pct'))}, max "
                     f"{pct(e.get('max_abs_pct'))} (run-to-run variation "
                     f"{pct(e.get('run_to_run_cv_pct'))})")
    return (f"The latency table's error on {error.get('n', 0)} held-out calibration models "
            f"(each predicted by a fit without it): {'; '.join(parts)}.")
