"""Time to first success at fixed FLOPs targets: DARTS vs multi-trial search vs NNI's DARTS.

The protocol is fixed before any run (``_first_success.py``): for every dataset (MNIST-1D,
digits) x FLOPs target (1 %, 3 %, 10 % of the teacher's) x method x seed, a run succeeds at its
first finished student with FLOPs <= the target and validation accuracy >= the threshold that
the long reference search (``darts_reference.py``, other seeds) fixed: 0.98 x the best it found
at or under the target. The thresholds are frozen into this benchmark's JSON at its first run
and reused on every resume. Each run stops at its first success or once its process CPU time
passes ``--cap-cpu`` seconds (censored, "not reached", with the time spent).

Methods (pluggable, ``METHODS``): ``darts`` (``--strategy darts`` with the target as its only
DARTS target and ``--max-flops``: the user's stated budget, no oracle), ``tpe`` and ``random``
(the Optuna strategy, objective accuracy under ``--max-flops``), ``asha`` (the multi-fidelity
strategy; skipped and recorded "not available" while it is not registered) and ``nni_darts``
(NNI 3.0's DARTS on the same space, ``_nni_darts.py``). Every method gets the same cached
default teacher (its training is never timed), data, student epochs, one torch thread, no
latency measurement; the clock starts when the method starts and includes every supernet
search and every retraining. Each run is a fresh process, so none inherits warm caches.

Results are written after every run to ``results/benchmarks/darts_vs_multitrial.json``; a rerun
skips the (dataset, target, method, seed) cells already there. ``--cpu-minutes`` stops it from
starting new cells once this invocation's cells used that much CPU. The headline,
``darts_time_to_success_ratio``, is DARTS' median CPU time to success at the 3 % target on
MNIST-1D over the best multi-trial method's (censored runs at their cap; see
``_ttfs_summary.py``).

``--space mbv2`` (or a YAML file) runs the same protocol on another space: every method
searches it, the thresholds come from ``darts_reference.py --space mbv2``
(``darts_reference_mbv2.json``) and the cells go to ``darts_vs_multitrial_mbv2.json``, so the
bundled spaces' results stay as they are. ``nni_darts`` expresses the stack spaces only and is
recorded "not available" for another space.

Usage: ``python benchmarks/darts_vs_multitrial.py [--datasets mnist1d digits]
[--targets 0.03 0.01 0.1] [--methods darts tpe random asha nni_darts] [--seeds 0 1 2 3 4]
[--cap-cpu 300] [--cpu-minutes 40] [--jobs 2] [--space mbv2] [--threshold X] [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from _common import OUT_DIR, QUICK_OUT_DIR, log, set_threads, teacher_for, write_result
from _first_success import (
    COMPARED_SEEDS,
    EPOCHS,
    TARGETS,
    THRESHOLD_RULE,
    Rule,
    results_name,
    run_to_success,
    scratch_dir,
    search_config,
)
from _ttfs_summary import break_even, headline_ratio, paired_tests, summarise

from autokd.config import CostConfig, DataConfig
from autokd.controllers import STRATEGIES
from autokd.data import load_data
from autokd.errors import AutokdError, ConfigError
from autokd.nas import DartsOptions
from autokd.pipeline import teacher_profile

__all__ = ["METHODS", "Cell", "main", "run_cell"]

NAME = "darts_vs_multitrial"


def reference_path(space: str | None) -> Path:
    """The reference search whose thresholds this space's cells are judged by."""
    return OUT_DIR / f"{results_name('darts_reference', space)}.json"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One timed run (picklable: it crosses into a fresh worker process)."""

    dataset: str
    target: float
    method: str
    seed: int
    max_flops: float
    threshold: float
    cap_cpu_s: float
    epochs: int
    darts_epochs: int
    teacher: str
    space: str | None = None  # None: the dataset's bundled space

    @property
    def key(self) -> str:
        return f"{self.dataset}|{self.target:g}|{self.method}|{self.seed}"

    @property
    def rule(self) -> Rule:
        return Rule(self.dataset, self.target, self.max_flops, self.threshold)


# --------------------------------------------------------------------------- methods


def _autokd(strategy: str, sampler: str = "tpe", darts: bool = False) -> Callable[[Cell], Any]:
    def run(cell: Cell) -> dict[str, Any]:
        options = {"targets": [cell.target], "epochs": cell.darts_epochs} if darts else {}
        with scratch_dir("autokd-ttfs-") as root:
            cfg = search_config(cell.dataset, cell.teacher, cell.seed, cell.method, root,
                                strategy=strategy, sampler=sampler, max_flops=cell.max_flops,
                                epochs=cell.epochs, options=options, space=cell.space)
            return run_to_success(cfg, cell.rule, cell.cap_cpu_s)

    return run


def _nni(cell: Cell) -> dict[str, Any]:
    import _nni_darts

    _nni_darts.available()  # its imports happen before the clock starts
    return _nni_darts.run(cell.rule, cell.seed, cell.teacher, cell.cap_cpu_s, cell.epochs,
                          DartsOptions(epochs=cell.darts_epochs))


def _registered(strategy: str) -> Callable[[], str | None]:
    def check() -> str | None:
        if strategy in STRATEGIES:
            return None
        return f"strategy {strategy!r} is not registered in autokd.controllers.STRATEGIES"

    return check


def _nni_available() -> str | None:
    import _nni_darts

    return _nni_darts.available()


#: method -> (why it cannot run here or None, how to run one cell)
METHODS: dict[str, tuple[Callable[[], str | None], Callable[[Cell], Any]]] = {
    "darts": (_registered("darts"), _autokd("darts", darts=True)),
    "tpe": (_registered("optuna"), _autokd("optuna", "tpe")),
    "random": (_registered("optuna"), _autokd("optuna", "random")),
    "asha": (_registered("asha"), _autokd("asha")),
    "nni_darts": (_nni_available, _nni),
}


def run_cell(cell: Cell) -> dict[str, Any]:
    """One cell in this (fresh) process."""
    set_threads(1)
    code = _code_version()
    result = METHODS[cell.method][1](cell)
    return {**dataclasses.asdict(cell), "key": cell.key, **result, "code": code,
            "load_average": os.getloadavg()}


def _code_version() -> str | None:
    """The commit this cell ran (``+dirty`` with local changes to autokd/ or benchmarks/)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "autokd", "benchmarks"],
                               cwd=root, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty.strip() else "")


# --------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["mnist1d", "digits"])
    ap.add_argument("--targets", type=float, nargs="+",  # the headline target first
                    default=sorted(TARGETS, key=lambda t: t != 0.03))
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(COMPARED_SEEDS))
    ap.add_argument("--cap-cpu", type=float, default=300.0, help="CPU seconds per run")
    ap.add_argument("--cpu-minutes", type=float, default=None,
                    help="start no new run once this invocation's runs used this much CPU")
    ap.add_argument("--epochs", type=int, default=EPOCHS, help="epochs per student")
    ap.add_argument("--darts-epochs", type=int, default=DartsOptions().epochs,
                    help="supernet epochs (ours and NNI's)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel runs (one thread each)")
    ap.add_argument("--threshold", type=float, default=None,
                    help="override the reference thresholds (smoke tests, what-ifs)")
    ap.add_argument("--space", default=None,
                    help="search this space (name or YAML) instead of each dataset's bundled "
                         "one; results go to a separate file")
    ap.add_argument("--quick", action="store_true", help="smoke test: digits, tiny budgets")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    if any(not 0 < t <= 1 for t in args.targets) or args.cap_cpu <= 0:
        ap.error("targets must be fractions in (0, 1] and --cap-cpu positive")
    if args.threshold is not None and not args.quick:
        ap.error("--threshold is for smoke tests: use it with --quick (real runs use the "
                 "reference's frozen thresholds)")
    if args.quick:
        args.datasets, args.targets, args.seeds = ["digits"], [0.1], args.seeds[:1]
        args.epochs, args.darts_epochs, args.jobs = 1, 2, 1
        args.cap_cpu = min(args.cap_cpu, 6.0)
        args.threshold = 0.3 if args.threshold is None else args.threshold
    return args


# --------------------------------------------------------------------------- protocol


def _reference_thresholds(datasets: list[str], targets: list[float],
                          space: str | None = None) -> dict[str, Any]:
    """``{"dataset|target": {threshold, where it came from}}`` from the reference search."""
    reference = reference_path(space)
    flag = "" if space is None else f" --space {space}"
    if not reference.exists():
        raise ConfigError(f"{reference} is missing; run benchmarks/darts_reference.py{flag} "
                          "first (or give --threshold)")
    ref = json.loads(reference.read_text())
    out = {}
    for d in datasets:
        for t in targets:
            entry = ref["thresholds"].get(d, {}).get(f"{t:g}", {})
            if "threshold" not in entry:
                raise ConfigError(f"the reference has no threshold for {d} at {t:g}; run "
                                  f"benchmarks/darts_reference.py{flag} for it")
            out[f"{d}|{t:g}"] = {"threshold": entry["threshold"],
                                 "best_val_accuracy": entry["best_val_accuracy"],
                                 "best_from": entry["best_from"],
                                 "reference_runs_at_freeze": entry["runs"],
                                 "reference_students_under_target":
                                     entry["students_under_target"],
                                 "reference_complete_at_freeze": ref["complete"]}
    return out


def _protocol(args: argparse.Namespace, previous: dict[str, Any],
              profiles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Thresholds frozen at their first use: the reference may grow later, and every cell of
    one (dataset, target) must be judged by the same threshold."""
    before = previous.get("protocol", {})
    frozen = dict(before.get("frozen", {}))
    needed = [f"{d}|{t:g}" for d in args.datasets for t in args.targets]
    if args.threshold is not None:  # --quick only
        frozen = {k: {"threshold": args.threshold, "source": "--threshold"} for k in needed}
    elif any(k not in frozen for k in needed):
        fresh = _reference_thresholds(args.datasets, args.targets, args.space)
        frozen.update({k: v for k, v in fresh.items() if k not in frozen})
    return {"rule": THRESHOLD_RULE, "reference": str(reference_path(args.space)),
            "space": args.space or "the dataset's bundled space", "frozen": frozen,
            "teachers": {**before.get("teachers", {}), **profiles},
            "thresholds": {k: v["threshold"] for k, v in frozen.items()},
            "max_flops": {**before.get("max_flops", {}),
                          **{f"{d}|{t:g}": t * profiles[d]["flops"] for d in args.datasets
                             for t in args.targets}},
            "success": "a finished, trained student with FLOPs <= max_flops and validation "
                       "accuracy >= threshold, within the CPU cap",
            "censoring": "no success within --cap-cpu CPU seconds: counted at the cap in "
                         "medians, min and max (a lower bound)"}


def _profiles(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    paths, profiles = {}, {}
    for name in args.datasets:
        data = load_data(DataConfig(source=name))
        teacher, path = teacher_for(data, quick=args.quick)
        prof = teacher_profile(teacher, data, CostConfig(latency=False))
        paths[name] = str(path)
        profiles[name] = {k: prof[k] for k in ("val_accuracy", "test_accuracy", "flops")}
    return paths, profiles


def _plan(args: argparse.Namespace, protocol: dict[str, Any],
          teachers: dict[str, str]) -> list[Cell]:
    """Priority order: the headline (MNIST-1D at 3 %) first, seed by seed across methods."""
    cells = []
    for t in args.targets:
        for d in args.datasets:
            key = f"{d}|{t:g}"
            cells += [Cell(d, t, m, s, protocol["max_flops"][key], protocol["thresholds"][key],
                           args.cap_cpu, args.epochs, args.darts_epochs, teachers[d],
                           args.space)
                      for s in args.seeds for m in args.methods]
    return cells


# --------------------------------------------------------------------------- driver


def _out_path(quick: bool, space: str | None = None) -> Path:
    return (QUICK_OUT_DIR if quick else OUT_DIR) / f"{results_name(NAME, space)}.json"


def _previous(quick: bool, space: str | None = None) -> dict[str, Any]:
    path = _out_path(quick, space)
    return {} if quick or not path.exists() else json.loads(path.read_text())


def _invocation(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("datasets", "targets", "methods", "seeds", "cap_cpu", "cpu_minutes", "epochs",
            "darts_epochs", "jobs", "space")
    return {**{k: getattr(args, k) for k in keys}, "load_average_at_start": os.getloadavg()}


def _full_matrix(methods: list[str]) -> list[str]:
    """Every cell of the default matrix (both datasets, three targets, five seeds)."""
    return [f"{d}|{t:g}|{m}|{s}" for t in TARGETS for d in ("mnist1d", "digits")
            for m in methods for s in COMPARED_SEEDS]


def _payload(args: argparse.Namespace, cells: list[dict[str, Any]], plan: list[Cell],
             protocol: dict[str, Any], history: list[dict[str, Any]],
             unavailable: dict[str, str]) -> dict[str, Any]:
    rows = summarise(cells)
    head = headline_ratio(rows)
    done = {c["key"] for c in cells}
    every = [m for m in METHODS if m not in unavailable]
    return {
        "benchmark": results_name(NAME, args.space),
        "quick": args.quick,
        "darts_time_to_success_ratio": head["ratio"],
        "headline": head,
        "protocol": protocol,
        "setup": {"threads": 1, "latency": False, "cpu_count": os.cpu_count(),
                  "space": args.space or "each dataset's bundled space",
                  "students": f"{args.epochs} epochs, the space's midpoint recipe for DARTS",
                  "teacher": "the cached default teacher (autokd.teachers.default_teacher)",
                  "load_average_at_write": os.getloadavg()},
        "invocations": history,
        "methods_unavailable": unavailable,
        "remaining_in_this_invocation": [c.key for c in plan if c.key not in done],
        "remaining_in_full_matrix": [k for k in _full_matrix(every) if k not in done],
        "total_cpu_s": sum(c["cpu_s"] for c in cells),
        "summary": rows,
        "paired": paired_tests(cells, rows),
        "break_even": break_even(cells, rows),
        "cells": cells,
    }


def _execute(todo: list[Cell], jobs: int, budget_s: float | None,
             on_done: Callable[[dict[str, Any]], None], fresh: bool = True) -> None:
    """Each cell in a fresh spawned process (``fresh=False``: here, for smoke tests); start
    nothing new once ``budget_s`` CPU seconds are spent."""
    if not fresh:
        for cell in todo:
            on_done(run_cell(cell))
        return
    spent, queue = 0.0, list(todo)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx,
                             max_tasks_per_child=1) as pool:
        running: set[Future] = set()
        while queue or running:
            while queue and len(running) < jobs and (budget_s is None or spent < budget_s):
                running.add(pool.submit(run_cell, queue.pop(0)))
            if not running:
                break
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                result = fut.result()
                spent += result["cpu_s"]
                on_done(result)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(1)
    unavailable = {m: why for m in args.methods if (why := METHODS[m][0]()) is not None}
    if args.space is not None and "nni_darts" in args.methods:
        unavailable["nni_darts"] = "the NNI DARTS port expresses the bundled stack spaces only"
    args.methods = [m for m in args.methods if m not in unavailable]
    teachers, profiles = _profiles(args)
    previous = _previous(args.quick, args.space)
    protocol = _protocol(args, previous, profiles)
    plan = _plan(args, protocol, teachers)
    # every earlier cell is kept (other datasets, targets, methods too), judged by its frozen
    # threshold; a cell run under another threshold would not be comparable
    cells = [c for c in previous.get("cells", [])
             if c["threshold"] == protocol["thresholds"].get(f"{c['dataset']}|{c['target']:g}")]
    todo = [c for c in plan if c.key not in {x["key"] for x in cells}]
    log(f"{len(plan) - len(todo)} of {len(plan)} runs already done; unavailable: {unavailable}")
    history = [*previous.get("invocations", []), _invocation(args)]

    ran: list[str] = []

    def on_done(result: dict[str, Any]) -> None:
        cells.append(result)
        ran.append(result["key"])
        state = "reached" if result["reached"] else result["status"]
        log(f"[{len(ran)}/{len(todo)}] {result['key']}: {state} after "
            f"{result['cpu_s']:.0f} CPU s ({result['trials']} runs/trials)")
        _write(_payload(args, cells, plan, protocol, history, unavailable), args.quick,
               args.space)

    budget = args.cpu_minutes * 60 if args.cpu_minutes is not None else None
    _execute(todo, args.jobs, budget, on_done, fresh=not args.quick)
    payload = _payload(args, cells, plan, protocol, history, unavailable)
    write_result(results_name(NAME, args.space), payload, quick=args.quick)
    return payload


def _write(payload: dict[str, Any], quick: bool, space: str | None = None) -> None:
    """The file only, after every run (the final ``write_result`` also prints it)."""
    out = _out_path(quick, space)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    tmp.replace(out)


if __name__ == "__main__":
    try:
        main()
    except AutokdError as exc:  # a bad dataset name, ...: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
