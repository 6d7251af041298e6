"""search_efficiency, summary: per-cell scores, the per-method table, the headline, the plot.

Why apart from the driver: everything here is a pure function of the recorded cells, the
dataset's scale and its horizon, so a resumed (or re-scored) run gives the same numbers.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from _efficiency_score import (
    Curve,
    auc,
    cpu_to_reach,
    curve,
    describe,
    dominated,
    paired_test,
    reference,
    value_at,
)

from autokd.pareto import FrontScale

__all__ = ["cell_scores", "dataset_scale", "headline", "plot", "summarise", "table"]

BASELINE = "random"


def dataset_scale(base: dict[str, Any], cells: list[dict[str, Any]]) -> tuple[FrontScale, str]:
    """The one scale a dataset's cells are scored on: the one computed before any search, or,
    when some study recorded another (a method with another space), the union of all."""
    scale = FrontScale.from_dict(base)
    others = [FrontScale.from_dict(c["scale"]) for c in cells if c.get("scale")]
    if all(o == scale for o in others):
        return scale, "every study recorded this scale (one space for all methods)"
    return scale.union(*others), "union of the studies' scales (their spaces differ)"


def _curves(cells: list[dict[str, Any]], scale: FrontScale) -> dict[tuple[str, int], Curve]:
    return {(c["cell"]["method"], c["cell"]["seed"]): curve(c["events"], scale) for c in cells}


def _sweep_points(events: list[list[Any]]) -> list[list[float]]:
    return [[float(e[2]), float(e[3]), float(e[4])] for e in events
            if e[1] == "C" and e[2] is not None and e[3] is not None]


def cell_scores(events: list[list[Any]], c: Curve, horizon: float,
                ref: dict[str, float] | None,
                sweep: tuple[list[list[float]], float] | None) -> dict[str, Any]:
    """One cell's numbers (see ``_efficiency_score``); ``ref``: random's reference point on
    the same seed; ``sweep``: the sweep's points and CPU seconds on the same seed."""
    trial_cpu = sum(e[7] or 0.0 for e in events)
    out: dict[str, Any] = {
        "trials": len(events), "pruned": sum(e[1] == "P" for e in events),
        "failed": sum(e[1] == "F" for e in events),
        # the CPU outside trials: sampler, storage reads, a DARTS supernet
        "outside_trials_cpu_fraction": 1.0 - trial_cpu / c.end if c.end > 0 else None,
        "auc_val": auc(c, horizon), "auc_test": auc(c, horizon, "test"),
        "hv_val_at_horizon": value_at(c, horizon), "hv_test_at_horizon": value_at(c, horizon,
                                                                                  "test"),
        "hv_val_end": float(c.hv_val[-1]) if len(c.cpu) else 0.0, "cpu_end_s": c.end,
    }
    if ref is not None:
        hit = cpu_to_reach(c, ref["hv_val"])
        out |= {"cpu_to_random_hv_s": hit, "censored": hit is None,
                "cpu_fraction_of_random": (hit if hit is not None else c.end) / ref["cpu_s"]}
    if sweep is not None:
        out |= _versus_sweep(c, *sweep)
    return out


def _versus_sweep(c: Curve, points: list[list[float]], sweep_cpu: float) -> dict[str, Any]:
    """How many sweep points the front dominates (test; validation) at the sweep's CPU and at
    the end, and the CPU (as a fraction of the sweep's) at which it first dominates all."""
    i = int(np.searchsorted(c.cpu, sweep_cpu, side="right")) - 1
    at = c.fronts[i] if i >= 0 else []
    first = next((k for k, f in enumerate(c.fronts) if dominated(f, points) == len(points)), None)
    return {
        "sweep_points": len(points),
        "dominated_test_at_sweep_cpu": dominated(at, points),
        "dominated_val_at_sweep_cpu": dominated(at, points, column=0),
        "dominated_test_end": dominated(c.fronts[-1], points) if c.fronts else 0,
        "cpu_to_dominate_sweep_test_fraction":
            None if first is None or sweep_cpu <= 0 else float(c.cpu[first]) / sweep_cpu,
    }


def summarise(state: dict[str, Any], reference_trials: int,
              default: str | None = None) -> dict[str, Any]:
    """Per-cell scores and the per-(dataset, method) table for every dataset with a horizon;
    every other method is also tested against ``default``, since choosing the default is
    what the benchmark is for and beating random is not enough to displace it."""
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in state["cells"].values():
        by_dataset[c["cell"]["dataset"]].append(c)
    out: dict[str, Any] = {"scores": {}, "rows": [], "scale_notes": {}}
    for dataset, cells in sorted(by_dataset.items()):
        horizon = (state["horizons"].get(dataset) or {}).get("cpu_s")
        if not horizon or dataset not in state["scales"]:
            continue
        scale, note = dataset_scale(state["scales"][dataset], cells)
        out["scale_notes"][dataset] = note
        scores = _dataset_scores(cells, scale, horizon, reference_trials)
        out["scores"].update({f"{dataset}/{m}/{s}": v for (m, s), v in scores.items()})
        out["rows"] += _rows(dataset, scores, default)
    return out


def _dataset_scores(cells: list[dict[str, Any]], scale: FrontScale, horizon: float,
                    k: int) -> dict[tuple[str, int], dict[str, Any]]:
    curves = _curves(cells, scale)
    events = {(c["cell"]["method"], c["cell"]["seed"]): c["events"] for c in cells}
    refs = {s: reference(events[(m, s)], cv, k) for (m, s), cv in curves.items() if m == BASELINE}
    sweeps = {s: (_sweep_points(events[(m, s)]), cv.end) for (m, s), cv in curves.items()
              if m == "sweep"}
    return {(m, s): cell_scores(events[(m, s)], cv, horizon, refs.get(s),
                                sweeps.get(s) if m != "sweep" else None)
            for (m, s), cv in sorted(curves.items())}


def _rows(dataset: str, scores: dict[tuple[str, int], dict[str, Any]],
          default: str | None = None) -> list[dict[str, Any]]:
    methods = sorted({m for m, _ in scores}, key=lambda m: (m != BASELINE, m))
    base = {s: v for (m, s), v in scores.items() if m == BASELINE}
    incumbent = {s: v for (m, s), v in scores.items() if m == default}
    rows = []
    for method in methods:
        mine = {s: v for (m, s), v in scores.items() if m == method}
        row: dict[str, Any] = {"dataset": dataset, "method": method, "seeds": sorted(mine)}
        for key in ("auc_val", "auc_test", "hv_val_at_horizon", "hv_test_at_horizon",
                    "cpu_fraction_of_random", "trials", "pruned", "cpu_end_s",
                    "outside_trials_cpu_fraction", "dominated_test_at_sweep_cpu",
                    "dominated_val_at_sweep_cpu", "dominated_test_end"):
            row[key] = describe([v.get(key) for v in mine.values()])
        row["censored"] = sum(bool(v.get("censored")) for v in mine.values())
        row["median_cpu_fraction_of_random"] = _censored_median(mine)
        row["sweep_all_dominated_test_at_sweep_cpu"] = sum(
            v.get("dominated_test_at_sweep_cpu") == v.get("sweep_points") for v in mine.values()
            if "sweep_points" in v)
        if method != BASELINE:
            row["wilcoxon_auc_val_vs_random"] = _test(mine, base, "auc_val")
            row["wilcoxon_auc_test_vs_random"] = _test(mine, base, "auc_test")
            logs = _censored_logs(mine)  # 0 - log(fraction): a win is a seed faster than random
            row["wilcoxon_log_cpu_fraction"] = paired_test(dict.fromkeys(logs, 0.0), logs)
        if incumbent and method not in (BASELINE, default):
            row["versus_default"] = default
            row["wilcoxon_auc_val_vs_default"] = _test(mine, incumbent, "auc_val")
            row["wilcoxon_auc_test_vs_default"] = _test(mine, incumbent, "auc_test")
        rows.append(row)
    return rows


def _censored_logs(mine: dict[int, dict[str, Any]]) -> dict[int, float]:
    """log(CPU fraction) per seed for a signed-rank test against 0 (= as fast as random); a
    censored seed (never reached) ranks as the largest loss, whatever its lower bound says."""
    logs = {s: math.log(v["cpu_fraction_of_random"]) for s, v in mine.items()
            if v.get("cpu_fraction_of_random") and not v.get("censored")}
    worst = 2.0 * max((abs(x) for x in logs.values()), default=1.0) + 1.0
    return logs | {s: worst for s, v in mine.items() if v.get("censored")}


def _test(mine: dict[int, dict], base: dict[int, dict], key: str) -> dict[str, Any]:
    return paired_test({s: v[key] for s, v in mine.items()}, {s: v[key] for s, v in base.items()})


def _censored_median(mine: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    """Median CPU fraction where a censored seed counts as never reaching (+inf): the median
    is then a lower bound only if it lands on a censored seed, which ``lower_bound`` says."""
    vals = [(v["cpu_fraction_of_random"], v["censored"]) for v in mine.values()
            if v.get("cpu_fraction_of_random") is not None]
    if not vals:
        return None
    ordered = sorted(vals, key=lambda x: (x[1], x[0]))  # censored ones last
    n = len(ordered)
    mid = ordered[(n - 1) // 2: n // 2 + 1]
    return {"value": statistics.fmean(v for v, _ in mid), "lower_bound": any(c for _, c in mid),
            "n": n}


def headline(rows: list[dict[str, Any]], dataset: str, method: str) -> dict[str, Any]:
    """The benchmark's target numbers: median CPU fraction of random per method and dataset,
    and the default method's on ``dataset`` as a top-level float."""
    fractions: dict[str, dict[str, Any]] = defaultdict(dict)
    bounds: dict[str, dict[str, Any]] = defaultdict(dict)
    for r in rows:
        med = r["median_cpu_fraction_of_random"]
        if r["method"] != BASELINE and med is not None:  # a censored median is a lower bound
            (bounds if med["lower_bound"] else fractions)[r["dataset"]][r["method"]] = \
                med["value"]
    row = next((r for r in rows if r["dataset"] == dataset and r["method"] == method), None)
    med = (row or {}).get("median_cpu_fraction_of_random") or {}
    return {"default_cpu_fraction_of_random": med.get("value"),
            "default_cpu_fraction_is_lower_bound": med.get("lower_bound"),
            "default_method": method, "headline_dataset": dataset,
            "headline_test": (row or {}).get("wilcoxon_auc_val_vs_random"),
            "cpu_fraction_of_random": dict(fractions),
            "cpu_fraction_of_random_at_least": dict(bounds)}


def _p(test: dict[str, Any] | None) -> str:
    if not test or test.get("p") is None:
        return "p n/a"
    tag = " descriptive (n < 6)" if test["descriptive"] else ""
    return f"p={test['p']:.3g} (n={test['n']}, {test['wins']}W/{test['losses']}L){tag}"


def _ms(d: dict[str, Any], digits: int = 3) -> str:
    if not d or d["mean"] is None:
        return "n/a"
    return (f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f} (med {d['median']:.{digits}f}, "
            f"{d['min']:.{digits}f}-{d['max']:.{digits}f})")


def table(rows: list[dict[str, Any]]) -> list[str]:
    """One readable line per (dataset, method)."""
    lines = []
    for r in rows:
        med = r["median_cpu_fraction_of_random"]
        frac = "n/a" if med is None else \
            f"{'>=' if med['lower_bound'] else ''}{med['value']:.2f} ({r['censored']} censored)"
        dom = r["dominated_test_at_sweep_cpu"]
        sweep = "" if not dom["n"] else \
            f" | sweep pts dominated on test at sweep CPU {_ms(dom, 1)}"
        versus = "" if "versus_default" not in r else \
            f" | vs {r['versus_default']}: val {_p(r['wilcoxon_auc_val_vs_default'])}, test " \
            f"{_p(r['wilcoxon_auc_test_vs_default'])}"
        lines.append(f"{r['dataset']} {r['method']} n={len(r['seeds'])} | AUC val "
                     f"{_ms(r['auc_val'])} {_p(r.get('wilcoxon_auc_val_vs_random'))} | AUC test "
                     f"{_ms(r['auc_test'])} | CPU to random's HV / random's: {frac}{sweep}"
                     f"{versus}")
    return lines


def plot(state: dict[str, Any], path: Path) -> Path | None:
    """HV (validation) against cumulative CPU seconds per dataset: median and min-max band over
    seeds (a search that ended keeps its last value); the dashed line is the horizon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in sorted(state["horizons"]) if d in state["scales"]]
    if not datasets:
        return None
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        _plot_dataset(ax, state, dataset)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_dataset(ax: Any, state: dict[str, Any], dataset: str) -> None:
    cells = [c for c in state["cells"].values() if c["cell"]["dataset"] == dataset]
    scale, _ = dataset_scale(state["scales"][dataset], cells)
    horizon = state["horizons"][dataset]["cpu_s"]
    curves = _curves(cells, scale)
    end = max((cv.end for cv in curves.values()), default=horizon)
    grid = np.linspace(0.0, max(end, horizon), 300)
    for method in sorted({m for m, _ in curves}, key=lambda m: (m != BASELINE, m)):
        mine = [cv for (m, _), cv in curves.items() if m == method]
        # a search that ended keeps its last value, as in the AUC
        ys = np.array([[value_at(cv, t) for t in grid] for cv in mine])
        med, lo, hi = (f(ys, axis=0) for f in (np.median, np.min, np.max))
        (line,) = ax.plot(grid, med, label=f"{method} (n={len(mine)})")
        ax.fill_between(grid, lo, hi, alpha=0.15, color=line.get_color())
    ax.axvline(horizon, color="grey", ls="--", lw=0.8)
    ax.set(title=f"{dataset}: hypervolume (val) vs CPU", xlabel="cumulative CPU seconds",
           ylabel="normalised hypervolume")
    ax.set_ylim(bottom=max(0.0, ax.get_ylim()[0]))
    ax.legend(fontsize=7)
