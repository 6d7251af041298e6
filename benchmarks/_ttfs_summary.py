"""Summaries of time-to-first-success cells: spread per method, the headline ratio, a paired test.

Why separate: ``darts_vs_multitrial.py`` runs and resumes cells; what is reported from them
(and how censored runs enter it) is easier to check on its own.

Censored runs (no success within the CPU cap) enter every median, minimum and maximum at their
cap, which is a lower bound on their real time to success; a median that lands on a censored
value is flagged, and so is the ratio built from it.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

__all__ = ["MULTI_TRIAL", "break_even", "headline_ratio", "paired_tests", "summarise"]

MULTI_TRIAL = ("tpe", "random", "asha")
_MIN_PAIRS = 6  # below this a Wilcoxon signed-rank test cannot reach p < 0.05 two-sided


def _time(cell: dict[str, Any], kind: str) -> float:
    """Seconds to success; a censored run counts at its CPU cap (wall: the time it ran)."""
    if cell["reached"] or kind == "wall":
        return float(cell[f"{kind}_s"])
    return float(cell["cap_cpu_s"])


def _spread(values: list[float], censored: list[bool]) -> dict[str, Any]:
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    order = sorted(zip(values, censored))
    median = statistics.median(values)
    # the median is a lower bound when a censored run sits at or below it
    flagged = any(c and v <= median for v, c in order)
    return {"median": median, "min": order[0][0], "max": order[-1][0], "n": len(values),
            "median_censored": flagged}


def summarise(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per dataset x target x method: successes/n and time-to-success spread."""
    rows = []
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["dataset"], c["target"], c["method"]), []).append(c)
    for (dataset, target, method), group in sorted(groups.items()):
        group = sorted(group, key=lambda c: c["seed"])
        censored = [not c["reached"] for c in group]
        row = {"dataset": dataset, "target": target, "method": method,
               "successes": f"{sum(c['reached'] for c in group)}/{len(group)}",
               "seeds": [c["seed"] for c in group],
               "cap_cpu_s": sorted({c["cap_cpu_s"] for c in group})}
        for kind in ("cpu", "wall"):
            times = [_time(c, kind) for c in group]
            row[f"{kind}_s"] = _spread(times, censored)
            row[f"{kind}_s_per_seed"] = [round(t, 2) for t in times]
        row["runs_per_seed"] = [c["trials"] for c in group]
        rows.append(row)
    return rows


def _median_cpu(rows: list[dict[str, Any]], dataset: str, target: float,
                method: str) -> dict[str, Any] | None:
    for r in rows:
        if (r["dataset"], r["target"], r["method"]) == (dataset, target, method):
            return r["cpu_s"]
    return None


def best_multi_trial(rows: list[dict[str, Any]], dataset: str, target: float) -> str | None:
    """The multi-trial method with the lowest median CPU time to success."""
    have = [(m, _median_cpu(rows, dataset, target, m)) for m in MULTI_TRIAL]
    have = [(m, s) for m, s in have if s is not None and s["median"] is not None]
    return min(have, key=lambda x: x[1]["median"])[0] if have else None


def headline_ratio(rows: list[dict[str, Any]], dataset: str = "mnist1d",
                   target: float = 0.03) -> dict[str, Any]:
    """DARTS median CPU time to success / the best multi-trial method's, at one target."""
    best = best_multi_trial(rows, dataset, target)
    darts = _median_cpu(rows, dataset, target, "darts")
    if best is None or darts is None or darts["median"] is None:
        return {"ratio": None, "note": f"no darts and multi-trial cells yet at {dataset} "
                                       f"{target:g}"}
    other = _median_cpu(rows, dataset, target, best)
    assert other is not None
    ratio = darts["median"] / other["median"]
    if darts["median_censored"] and other["median_censored"]:
        note = "both medians are censored at the cap: the ratio says nothing"
    elif darts["median_censored"]:
        note = "DARTS' median is censored: the ratio is a lower bound"
    elif other["median_censored"]:
        note = f"{best}'s median is censored: the ratio is an upper bound"
    else:
        note = "both medians are observed successes"
    return {"ratio": ratio, "best_multi_trial": best, "darts_median_cpu_s": darts["median"],
            "best_multi_trial_median_cpu_s": other["median"], "darts_n": darts["n"],
            "best_multi_trial_n": other["n"], "note": note, "target_met": ratio <= 0.2
            and not darts["median_censored"]}


def paired_tests(cells: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset x target: DARTS vs the best multi-trial method, seed by seed (CPU s)."""
    out = []
    for dataset, target in sorted({(r["dataset"], r["target"]) for r in rows}):
        best = best_multi_trial(rows, dataset, target)
        if best is None:
            continue
        by = {m: {c["seed"]: _time(c, "cpu") for c in cells
                  if (c["dataset"], c["target"], c["method"]) == (dataset, target, m)}
              for m in ("darts", best)}
        seeds = sorted(set(by["darts"]) & set(by[best]))
        if not seeds:
            continue
        diffs = [by["darts"][s] - by[best][s] for s in seeds]
        entry: dict[str, Any] = {"dataset": dataset, "target": target, "versus": best,
                                 "seeds": seeds, "darts_minus_best_cpu_s": diffs,
                                 "darts_faster_on": f"{sum(d < 0 for d in diffs)}/{len(seeds)}"}
        entry.update(_wilcoxon(diffs))
        out.append(entry)
    return out


def _trained(cell: dict[str, Any]) -> int:
    """Candidates a run trained (cells written before ``trained`` was recorded: its trials)."""
    return int(cell.get("trained", cell["trials"]))


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def break_even(cells: list[dict[str, Any]], rows: list[dict[str, Any]],
               factor: float = 0.2) -> list[dict[str, Any]]:
    """Why DARTS does or does not reach ``factor`` x the best multi-trial CPU, per dataset x
    target, in the methods' own units: one DARTS candidate (supernet search + retraining)
    costs as much as ``darts_candidate_in_trials`` multi-trial trials, so the ratio can reach
    ``factor`` only where the best multi-trial method needs at least
    ``trials_needed_for_factor`` trained trials to its first success; it needed
    ``best_trials_to_success`` (median)."""
    out = []
    for dataset, target in sorted({(r["dataset"], r["target"]) for r in rows}):
        best = best_multi_trial(rows, dataset, target)
        darts = [c for c in cells if (c["dataset"], c["target"], c["method"])
                 == (dataset, target, "darts")]
        if best is None or not darts:
            continue
        mine = [c for c in cells if (c["dataset"], c["target"], c["method"])
                == (dataset, target, best)]
        # CPU s per trained candidate over the runs that succeeded (a DARTS candidate
        # includes its supernet search)
        per_darts, per_trial = (_median([c["cpu_s"] / max(1, _trained(c)) for c in group
                                         if c["reached"]]) for group in (darts, mine))
        darts_cpu = _median_cpu(rows, dataset, target, "darts")
        if per_darts is None or not per_trial or darts_cpu is None:
            continue
        out.append({
            "dataset": dataset, "target": target, "versus": best,
            "darts_cpu_s_per_candidate": per_darts,
            "darts_candidates_to_success": _median([_trained(c) for c in darts if c["reached"]]),
            "best_cpu_s_per_trial": per_trial,
            "darts_candidate_in_trials": per_darts / per_trial,
            "best_trials_to_success": _median([_trained(c) for c in mine if c["reached"]]),
            "trials_needed_for_factor": darts_cpu["median"] / factor / per_trial,
            "factor": factor})
    return out


def _wilcoxon(diffs: list[float]) -> dict[str, Any]:
    if len(diffs) < _MIN_PAIRS:
        return {"test": f"descriptive only: {len(diffs)} pairs (< {_MIN_PAIRS})"}
    from scipy.stats import wilcoxon

    if all(math.isclose(d, 0.0) for d in diffs):
        return {"test": "wilcoxon signed-rank, two-sided", "p_value": 1.0}
    res = wilcoxon(diffs, alternative="two-sided")
    return {"test": "wilcoxon signed-rank, two-sided", "statistic": float(res.statistic),
            "p_value": float(res.pvalue)}
