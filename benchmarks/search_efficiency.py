"""How much CPU does each search method need for a good (accuracy, FLOPs) front?

Cost is measured in CPU seconds, not trials: a trial of one method (a DARTS supernet, a pruned
trial, a sampler that fits a model) costs what it costs. Methods (``--methods``; the ones whose
strategy this autokd lacks are recorded as not available): ``random`` (the baseline), ``sweep``
(a hand sweep: the default student at 6 widths with the default recipe, what users do without
autokd), ``tpe``, ``nsga2``, ``gp``, ``asha`` (the multi-fidelity strategy, default sampler),
``darts`` and NNI's ``nni_tpe`` / ``nni_evolution``. Each (dataset, method, seed) cell is one
search with ``--jobs`` cells in parallel, each in its own worker process with one torch thread,
so that process's CPU clock measures the search alone (``_efficiency_run``).

Protocol, per dataset (fixed before the comparison runs):

1. ``random`` runs first on every seed: ``--reference-trials`` (40) counted trials, then on to
   ``--cap`` x the CPU those took. Random's hypervolume after its 40th trial is the seed's
   target; the dataset's horizon H is the median over seeds of random's 40-trial CPU seconds,
   frozen in the JSON once computed (a later run with more seeds keeps it).
2. Every other search runs until its CPU reaches ``--cap`` x H (or ``--max-trials``).
3. Scores (``_efficiency_score``): the hypervolume of the validation front after each trial on
   ONE ``FrontScale`` per dataset (the space's cost range, from majority class to teacher);
   AUC = area under that step curve on [0, H] / H; the CPU to reach random's 40-trial
   hypervolume on the same seed, as a fraction of random's 40-trial CPU (censored at the
   search's end); test-accuracy hypervolume of the same members; how many of the sweep's
   points the front dominates on test at the sweep's CPU. Methods are compared with random
   by a two-sided Wilcoxon signed-rank test on per-seed AUC (paired by seed; "descriptive"
   below 6 pairs, where p < 0.05 is impossible).

Samplers get seeds derived from (seed, sampler name) (``sampler_seed``), so searches of
different samplers on one seed do not share their start-up trials. The data split and the
teacher are the same for every seed; a trial's training seed is ``seed + trial number``.

Resume and budgets: every finished cell is written to the JSON at once; a rerun with the same
protocol skips finished cells. ``--cpu-minutes`` stops starting new cells once this run's cells
have used that much CPU (cells in flight finish); the JSON lists what remains.

Usage: ``python benchmarks/search_efficiency.py [--datasets mnist1d] [--methods random tpe]
[--seeds 0 1 ...] [--epochs 10] [--cap 1.25] [--jobs 2] [--cpu-minutes 60] [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from _common import OUT_DIR, QUICK_OUT_DIR, log, set_threads, teacher_for
from _efficiency_run import DEFAULT_METHOD, EVENT_FIELDS, METHODS, Cell, availability, run_cell
from _efficiency_summary import BASELINE, headline, plot, summarise, table

from autokd.config import CostConfig, DataConfig
from autokd.data import dataset_names, load_data
from autokd.pipeline import teacher_profile
from autokd.scale import space_scale
from autokd.search import default_space_name
from autokd.space import load_space

__all__ = ["main", "parse_args"]

NAME = "search_efficiency"
DEFAULT_SEEDS = {"mnist1d": 8, "digits": 5, "mnist5k": 3}
PROTOCOL_KEYS = ("epochs", "reference_trials", "cap")
NOTES = [
    ("CPU seconds: the worker process's time.process_time from the moment the study is ready "
    "(data, teacher and scale loaded; that set-up is setup_cpu_s) to each finished trial: "
    "trials, sampler, storage reads and a DARTS supernet all count. One torch thread, one "
    "search per process."),
    ("horizon: median over seeds of random's CPU to its reference_trials-th counted trial; "
    "AUC = area under the HV step curve on [0, horizon] / horizon."),
    ("cpu_fraction_of_random: CPU to reach random's reference-trial HV (same seed) / random's "
    "CPU for those trials; a censored seed (never reached) counts at the CPU it ran, a lower "
    "bound, sorts last for the median and ranks as the largest loss in the signed-rank test "
    "of log(fraction) against 0 (wilcoxon_log_cpu_fraction: a win is a seed faster than "
    "random); medians that are lower bounds are under cpu_fraction_of_random_at_least."),
    ("wilcoxon_*: two-sided signed-rank test paired by seed against random (*_vs_default: "
    "against default_method, autokd's default strategy); descriptive when n < 6 (p < 0.05 "
    "unreachable)."),
    ("max_trials: a search's trial budget. asha cells run before the budget counted full "
    "trainings (autokd.record.trial_share) counted each rung evaluation as one trial, so some "
    "stopped at 160 rung evaluations before the CPU cap (their curve holds its last value); "
    "today's asha cells end at the CPU cap."),
    ("sweep: the family's default student (autokd distill's) at 6 widths spread over the "
    "space's width choices, default KD recipe and training settings, same epochs and seeds, "
    "no early stopping; dominance is counted on test accuracy and FLOPs."),
    ("gp: Optuna's GPSampler samples conditional parameters (per-stage widths, parameters under "
    "when:) at random, so on these spaces it is partly a random search."),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["mnist1d", "digits", "mnist5k"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--seeds", type=int, nargs="+",
                    help=f"default per dataset: {DEFAULT_SEEDS} (5 for others)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs per trial")
    ap.add_argument("--reference-trials", type=int, default=40,
                    help="random's trials that define the target and the horizon")
    ap.add_argument("--cap", type=float, default=1.25,
                    help="searches run to cap x the horizon (random: x its own reference CPU)")
    ap.add_argument("--max-trials", type=int, help="trial budget of a search (default 4 x ref)")
    ap.add_argument("--jobs", type=int, default=2, help="cells in parallel (one thread each)")
    ap.add_argument("--cpu-minutes", type=float, help="stop starting cells after this much CPU")
    ap.add_argument("--default-method", default=DEFAULT_METHOD,
                    help="the method the headline is about (default: autokd's default strategy)")
    ap.add_argument("--headline-dataset", default="mnist1d", help="the headline's dataset")
    ap.add_argument("--out", type=Path, help="the JSON (default results/benchmarks/...)")
    ap.add_argument("--fresh", action="store_true", help="ignore finished cells in --out")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: digits, 1 seed, random/the default/sweep, 4 trials of 1 epoch")
    args = ap.parse_args(argv)
    if args.quick:
        args.datasets, args.seeds = ["digits"], (args.seeds or [0])[:1]
        args.headline_dataset = "digits"
        if args.methods == list(METHODS):
            args.methods = ["random", DEFAULT_METHOD, "sweep"]
        args.epochs, args.reference_trials = 1, 4
    args.max_trials = args.max_trials or 4 * args.reference_trials
    args.out = args.out or (QUICK_OUT_DIR if args.quick else OUT_DIR) / f"{NAME}.json"
    if BASELINE not in args.methods:
        args.methods = [BASELINE, *args.methods]  # every score is relative to random's
    return args


# --------------------------------------------------------------------------- state (resume)


def load_state(args: argparse.Namespace) -> dict[str, Any]:
    """The finished cells, horizons and scales of earlier runs with the same protocol."""
    protocol = {k: getattr(args, k) for k in PROTOCOL_KEYS}
    empty = {"protocol": protocol, "cells": {}, "horizons": {}, "scales": {}, "teachers": {},
             "unavailable": {}, "runs": []}
    if args.fresh or not args.out.exists():
        return empty
    old = json.loads(args.out.read_text())
    if old.get("protocol") != protocol:
        raise SystemExit(f"{args.out} was written with protocol {old.get('protocol')}, not "
                         f"{protocol}: pass --fresh or another --out")
    return {**empty, **{k: old[k] for k in empty if k in old}}


def save_state(state: dict[str, Any], args: argparse.Namespace, final: bool = False) -> None:
    """Write the JSON (atomically; printed to stdout only at the end)."""
    summary = summarise(state, args.reference_trials, args.default_method)
    payload = {
        "benchmark": NAME,
        "quick": args.quick,
        **headline(summary["rows"], args.headline_dataset, args.default_method),
        "table": table(summary["rows"]),
        **state,
        "event_fields": EVENT_FIELDS,
        "notes": NOTES,
        "scale_notes": summary["scale_notes"],
        "summary": summary["rows"],
        "scores": summary["scores"],
        "loadavg_now": list(os.getloadavg()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    tmp.replace(args.out)
    if final:  # stdout: the headline and the table (the whole document is in the file)
        keys = ("default_cpu_fraction_of_random", "cpu_fraction_of_random", "table", "remaining")
        print(json.dumps({k: payload.get(k) for k in keys}, indent=1, default=str))
        log(f"wrote {args.out}")


# --------------------------------------------------------------------------- planning


def seeds_for(args: argparse.Namespace, dataset: str) -> list[int]:
    return list(args.seeds) if args.seeds else list(range(DEFAULT_SEEDS.get(dataset, 5)))


def prepare(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, str]:
    """Per dataset, before any worker starts: the teacher (trained once, cached), its profile
    and the hypervolume's scale; datasets this autokd cannot load are skipped and said so."""
    paths = {}
    for name in args.datasets:
        if name not in dataset_names():
            state["unavailable"][name] = "dataset not registered in this autokd"
            log(f"{name}: not available, skipped")
            continue
        data = load_data(DataConfig(source=name))
        teacher, path = teacher_for(data, quick=args.quick)
        profile = teacher_profile(teacher, data, CostConfig(latency=False))
        paths[name] = str(path)
        state["teachers"][name] = {k: profile[k] for k in ("val_accuracy", "test_accuracy",
                                                           "flops", "params")}
        if name not in state["scales"]:
            space = load_space(default_space_name(data))
            cost = dataclasses.replace(CostConfig.for_search(), latency=False)
            scale = space_scale(space, data, profile["val_accuracy"], ["accuracy", "flops"], cost)
            state["scales"][name] = scale.to_dict()
    return paths


def plan(args: argparse.Namespace, state: dict[str, Any], teachers: dict[str, str]) -> list[Cell]:
    """Cells still to run: random's first (they fix the horizon), then seed by seed."""
    for m in args.methods:
        reason = availability(m)
        if reason:
            state["unavailable"][m] = reason
            log(f"{m}: {reason}")
    methods = [m for m in args.methods if not availability(m)]
    cells = []
    for d, path in teachers.items():
        for s in seeds_for(args, d):
            for m in methods:
                cells.append(Cell(d, m, s, args.epochs, path, args.max_trials,
                                  reference_trials=args.reference_trials if m == BASELINE
                                  else None, extend=args.cap))
    todo = [c for c in cells if c.key not in state["cells"]]
    return sorted(todo, key=lambda c: (c.method != BASELINE, c.seed, c.dataset, c.method))


def fix_horizon(state: dict[str, Any], dataset: str, unfinished: list[Cell], k: int) -> None:
    """Freeze the dataset's horizon once none of its random cells is waiting or running."""
    if dataset in state["horizons"] or any(c.dataset == dataset and c.method == BASELINE
                                           for c in unfinished):
        return
    cpus = {}
    for c in state["cells"].values():
        if c["cell"]["dataset"] == dataset and c["cell"]["method"] == BASELINE:
            ref = _reference_cpu(c["events"], k)
            if ref is not None:
                cpus[c["cell"]["seed"]] = ref
    if cpus:
        state["horizons"][dataset] = {
            "cpu_s": statistics.median(cpus.values()), "reference_trials": k,
            "from": "median over seeds of random's CPU seconds to its reference trial",
            "random_reference_cpu_s": cpus}
        log(f"{dataset}: horizon fixed at {state['horizons'][dataset]['cpu_s']:.1f} CPU s")


def _reference_cpu(events: list[list[Any]], k: int) -> float | None:
    counted = 0
    for e in events:
        counted += e[1] in ("C", "P")
        if counted == k:
            return float(e[5])
    return None


# --------------------------------------------------------------------------- running


def execute(args: argparse.Namespace, state: dict[str, Any], pending: list[Cell]) -> None:
    """Run the cells ``--jobs`` at a time; each finished one is saved before the next starts."""
    budget = args.cpu_minutes * 60 if args.cpu_minutes else float("inf")
    spent, running = 0.0, {}
    ctx = multiprocessing.get_context("spawn")  # no fork after torch has started its threads
    with ProcessPoolExecutor(max(1, args.jobs), mp_context=ctx, max_tasks_per_child=1) as pool:
        while pending or running:
            while len(running) < args.jobs and spent < budget:
                cell = _next_ready(pending, state, args)
                if cell is None:
                    break
                running[pool.submit(run_cell, cell)] = cell
                log(f"start {cell.key}")
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                cell = running.pop(fut)
                spent += _finish(fut, cell, state, args, [*pending, *running.values()])
    state["runs"].append({"cpu_s": spent, "cpu_minutes_budget": args.cpu_minutes,
                          "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                          "loadavg": list(os.getloadavg())})


def _next_ready(pending: list[Cell], state: dict[str, Any],
                args: argparse.Namespace) -> Cell | None:
    """The first pending cell that can start: random's always, others once the horizon is set."""
    for i, cell in enumerate(pending):
        horizon = state["horizons"].get(cell.dataset)
        if cell.method == BASELINE:
            return pending.pop(i)
        if horizon is not None:
            pending.pop(i)
            return dataclasses.replace(cell, cpu_limit=args.cap * horizon["cpu_s"])
    return None


def _finish(fut: Future, cell: Cell, state: dict[str, Any], args: argparse.Namespace,
            unfinished: list[Cell]) -> float:
    result = fut.result()
    cpu = float(result.get("cpu_s") or 0) + float(result.get("setup_cpu_s") or 0)
    if result.get("error"):
        log(f"FAILED {cell.key}: {result['error']}")
        state.setdefault("errors", {})[cell.key] = result["error"]
    else:
        state["cells"][cell.key] = result
        state.get("errors", {}).pop(cell.key, None)
        log(f"done {cell.key}: {len(result['events'])} trials, {result['cpu_s']:.0f} CPU s "
            f"({result['stopped']}), load {result['loadavg'][0]:.2f}")
    fix_horizon(state, cell.dataset, unfinished, args.reference_trials)
    save_state(state, args)
    return cpu


def remaining(state: dict[str, Any], pending: list[Cell], args: argparse.Namespace) -> dict:
    """Cells left after this run and their CPU estimate (cap x horizon plus set-up each)."""
    est = 0.0
    for c in pending:
        h = (state["horizons"].get(c.dataset) or {}).get("cpu_s")
        done = [v["cpu_s"] + v["setup_cpu_s"] for v in state["cells"].values()
                if v["cell"]["dataset"] == c.dataset and v["cell"]["method"] == c.method]
        est += statistics.median(done) if done else (args.cap * h + 10 if h else 0.0)
    failed = sorted(state.get("errors", {}))
    return {"cells": [c.key for c in pending] + failed, "cpu_minutes_estimate": est / 60,
            "note": "estimates: median CPU of the same method's finished cells, else cap x "
                    "horizon + 10 s; random cells without a horizon yet and failed cells "
                    "count 0"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(1)
    state = load_state(args)
    teachers = prepare(args, state)
    pending = plan(args, state, teachers)
    log(f"{len(pending)} cells to run ({len(state['cells'])} finished before)")
    for d in teachers:
        fix_horizon(state, d, pending, args.reference_trials)
    execute(args, state, pending)
    state["remaining"] = remaining(state, pending, args)
    save_state(state, args, final=True)
    png = plot(state, args.out.with_suffix(".png"))
    log(f"plot: {png}")
    return json.loads(args.out.read_text())


if __name__ == "__main__":
    main()
