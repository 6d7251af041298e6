"""Controller overhead: the share of each trial's time spent on anything but training and the
costs the user asked for.

A trial's span is the time from one trial's start to the next one's (the last: to the end of
the optimise loop), so it holds everything the search does for that trial: the sampler's
relative and independent sampling, building the student, measuring its cost, training
(``run_distillation``: ``Trainer.fit`` with per-epoch validation and the test evaluation),
storage writes, keeping its weights, ``tell`` and the controller's bookkeeping (the Pareto
early-stopping front). Overhead = span - training - cost measurement; the cost measurement
(FLOPs, params, bytes, latency) is reported beside it, not hidden in it. Pruned trials count.

Runs real searches on the default space and digits, one per sampler (tpe, nsga2, gp by
default), from a warm teacher cache, in one process with one training thread. Both wall clock
and this process's CPU time are reported (CPU time is robust to other load on the machine);
the load average is recorded. Target: median per-trial overhead share < 2 % of trial time.

Usage: ``python benchmarks/search_overhead.py [--trials 100] [--samplers tpe,nsga2,gp]
[--quick] [--out results/benchmarks]``; results are written sampler by sampler, and a rerun
skips the samplers already in the output file (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import autokd.objective as objective_module
from autokd.config import DataConfig, SearchConfig
from autokd.search import run_search

__all__ = ["main"]

TARGET = 0.02
Clock = tuple[float, float]  # (wall, CPU) seconds


def _clock() -> Clock:
    return time.perf_counter(), time.process_time()


class _Probe:
    """Per-trial clocks: when each trial starts, and the time spent training and costing."""

    def __init__(self) -> None:
        self.starts: list[tuple[int, Clock]] = []
        self.parts: dict[int, dict[str, list[float]]] = {}
        self.current = -1

    def part(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = _clock()
            try:
                return fn(*args, **kwargs)
            finally:
                wall, cpu = _clock()
                got = self.parts.setdefault(self.current, {}).setdefault(name, [0.0, 0.0])
                got[0] += wall - start[0]
                got[1] += cpu - start[1]
        return timed

    def install(self) -> Callable[[], None]:
        """Wrap the objective's entry, training and cost calls; returns the undo."""
        saved = (objective_module.Objective.__call__, objective_module.run_distillation,
                 objective_module.measure_student_cost)
        call = saved[0]

        def entry(obj: Any, trial: Any) -> Any:
            self.current = trial.number
            self.starts.append((trial.number, _clock()))
            return call(obj, trial)

        objective_module.Objective.__call__ = entry  # type: ignore[method-assign]
        objective_module.run_distillation = self.part("train", saved[1])
        objective_module.measure_student_cost = self.part("cost", saved[2])

        def undo() -> None:
            (objective_module.Objective.__call__, objective_module.run_distillation,
             objective_module.measure_student_cost) = saved
        return undo


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 4), "median": round(statistics.median(values), 4),
            "max": round(max(values), 4)}


def run_one(sampler: str, trials: int, epochs: int | None, tmp: str) -> dict[str, Any]:
    """One search of ``trials`` trials with ``sampler``; per-trial spans and their shares."""
    cfg = SearchConfig(data=DataConfig("digits"), budget=trials, results=tmp,
                       name=f"overhead-{sampler}", seed=0, device="cpu", sampler=sampler,
                       strategy="optuna")
    if epochs:
        cfg.settings.epochs = epochs
    probe = _Probe()
    undo = probe.install()
    load_before = os.getloadavg()
    try:
        study = run_search(cfg).study
        end = _clock()
    finally:
        undo()
    states = {t.number: t.state.name for t in study.trials}
    rows = []
    bounds = probe.starts + [(-1, end)]
    for (number, start), (_, nxt) in itertools.pairwise(bounds):
        parts = probe.parts.get(number, {})
        row: dict[str, Any] = {"trial": number, "state": states.get(number)}
        for i, clock in enumerate(("wall", "cpu")):
            span = nxt[i] - start[i]
            train = parts.get("train", [0.0, 0.0])[i]
            cost = parts.get("cost", [0.0, 0.0])[i]
            row[clock] = {"span_s": round(span, 4), "train_s": round(train, 4),
                          "cost_s": round(cost, 4), "overhead_s": round(span - train - cost, 4)}
        rows.append(row)
    return _summary(sampler, rows, load_before)


def _summary(sampler: str, rows: list[dict[str, Any]],
             load_before: tuple[float, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"sampler": sampler, "trials": len(rows),
                           "states": {s: sum(r["state"] == s for r in rows)
                                      for s in sorted({r["state"] for r in rows})}}
    for clock in ("wall", "cpu"):
        spans = [r[clock] for r in rows if r[clock]["span_s"] > 0]
        share = [p["overhead_s"] / p["span_s"] for p in spans]
        cost_share = [p["cost_s"] / p["span_s"] for p in spans]
        total = sum(p["span_s"] for p in spans)
        out[clock] = {
            "overhead_share_per_trial": _spread(share),
            "overhead_share_of_total": round(sum(p["overhead_s"] for p in spans) / total, 4),
            "cost_share_per_trial": _spread(cost_share),
            "overhead_s_per_trial": _spread([p["overhead_s"] for p in spans]),
            "trial_s": _spread([p["span_s"] for p in spans]),
            # does the controller slow down as the study grows? first vs last fifth
            "overhead_s_first_fifth_median": round(statistics.median(
                p["overhead_s"] for p in spans[:max(1, len(spans) // 5)]), 4),
            "overhead_s_last_fifth_median": round(statistics.median(
                p["overhead_s"] for p in spans[-max(1, len(spans) // 5):]), 4),
        }
    out["load_average_before"] = [round(x, 2) for x in load_before]
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out["rows"] = rows
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--samplers", default="tpe,nsga2,gp")
    ap.add_argument("--epochs", type=int, default=None, help="override the space's epochs")
    ap.add_argument("--quick", action="store_true", help="tpe only, 3 trials of 1 epoch")
    ap.add_argument("--fresh", action="store_true", help="ignore samplers already measured")
    ap.add_argument("--out", default="results/benchmarks")
    args = ap.parse_args(argv)
    samplers = ["tpe"] if args.quick else [s.strip() for s in args.samplers.split(",")]
    trials, epochs = (3, 1) if args.quick else (args.trials, args.epochs)
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "search_overhead.json"
    done: dict[str, Any] = {}
    if path.exists() and not args.fresh and not args.quick:
        old = json.loads(path.read_text())
        if old.get("setup", {}).get("trials") == trials:
            done = old.get("samplers", {})
    with tempfile.TemporaryDirectory() as tmp:
        # warm: the default teacher is trained (or read from the cache) and its outputs
        # cached outside the timing
        warm = SearchConfig(data=DataConfig("digits"), budget=1, results=tmp, name="warm",
                            seed=0, device="cpu", strategy="optuna")
        warm.settings.epochs = epochs
        run_search(warm)
        for sampler in samplers:
            if sampler not in done:
                done[sampler] = run_one(sampler, trials, epochs, tmp)
                path.write_text(json.dumps(_result(done, trials, epochs, args.quick),
                                           indent=2) + "\n")
    result = _result(done, trials, epochs, args.quick)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samplers"}, indent=2))
    return result


def _result(done: dict[str, Any], trials: int, epochs: int | None,
            quick: bool) -> dict[str, Any]:
    medians = {s: r["wall"]["overhead_share_per_trial"]["median"] for s, r in done.items()}
    cpu = {s: r["cpu"]["overhead_share_per_trial"]["median"] for s, r in done.items()}
    worst = max(medians.values()) if medians else None
    return {
        # the headline: the worst sampler's median per-trial share, by wall clock
        "overhead_share_per_trial_median": worst,
        "overhead_share_per_trial_median_by_sampler": medians,
        "overhead_share_per_trial_median_cpu_by_sampler": cpu,
        "cost_share_per_trial_median_by_sampler": {
            s: r["wall"]["cost_share_per_trial"]["median"] for s, r in done.items()},
        "target": TARGET,
        "meets_target": worst is not None and worst < TARGET,
        "setup": {"dataset": "digits", "space": "default", "trials": trials, "epochs": epochs,
                  "quick": quick, "pruned_included": True,
                  "definition": "overhead = trial span - run_distillation - cost measurement"},
        "samplers": done,
    }


if __name__ == "__main__":
    main()
