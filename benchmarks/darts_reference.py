"""The long reference search that fixes the DARTS protocol's accuracy thresholds in advance.

For every dataset x FLOPs target x sampler x seed this runs one multi-trial search
(``autokd.search``, Optuna strategy, objective: validation accuracy, ``max_flops`` = target x
the teacher's FLOPs) of ``--trials`` trained students of ``--epochs`` epochs each, on the same
cached default teacher, data, epochs and threads as the timed runs of
``darts_vs_multitrial.py``, with seeds (default 1000, 1001) that no timed run uses. The union of
all its trained students, per dataset, gives for each target the best validation accuracy at or
under the target, and the threshold is ``THRESHOLD_FACTOR`` (0.98) x that best (the rule in
``_first_success.py``, fixed before any timed run).

It writes ``results/benchmarks/darts_reference.json`` after every run and resumes: a rerun
skips the (dataset, target, sampler, seed) runs already there with the same trials and epochs.
``--cpu-minutes`` stops it from starting new runs once this invocation's runs used that much
CPU; rerun to continue. ``--space mbv2`` (or a YAML file) searches that space instead of each
dataset's bundled one and writes ``darts_reference_mbv2.json``, the thresholds
``darts_vs_multitrial.py --space mbv2`` uses.

Usage: ``python benchmarks/darts_reference.py [--datasets digits mnist1d]
[--targets 0.01 0.03 0.1] [--samplers tpe random] [--seeds 1000 1001] [--trials 60]
[--epochs 10] [--jobs 2] [--cpu-minutes 30] [--space mbv2] [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from _common import OUT_DIR, QUICK_OUT_DIR, log, set_threads, teacher_for, write_result
from _first_success import (
    EPOCHS,
    REFERENCE_SEEDS,
    TARGETS,
    THRESHOLD_FACTOR,
    THRESHOLD_RULE,
    results_name,
    scratch_dir,
    search_config,
    trial_row,
)

from autokd.config import CostConfig, DataConfig
from autokd.data import load_data
from autokd.errors import AutokdError
from autokd.pipeline import teacher_profile
from autokd.search import run_search

__all__ = ["RefRun", "main", "thresholds"]

NAME = "darts_reference"


@dataclasses.dataclass(frozen=True)
class RefRun:
    """One search of the reference (picklable: it crosses into a worker process)."""

    dataset: str
    target: float
    max_flops: float
    sampler: str
    seed: int
    trials: int
    epochs: int
    teacher: str
    space: str | None = None  # None: the dataset's bundled space

    @property
    def key(self) -> str:
        return f"{self.dataset}|{self.target:g}|{self.sampler}|{self.seed}|{self.trials}|{self.epochs}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["mnist1d", "digits"])
    ap.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    ap.add_argument("--samplers", nargs="+", default=["tpe", "random"])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(REFERENCE_SEEDS))
    ap.add_argument("--trials", type=int, default=60, help="trained students per search")
    ap.add_argument("--epochs", type=int, default=EPOCHS, help="epochs per student")
    ap.add_argument("--jobs", type=int, default=2, help="parallel searches (one thread each)")
    ap.add_argument("--cpu-minutes", type=float, default=None,
                    help="start no new search once this invocation used this much CPU")
    ap.add_argument("--space", default=None,
                    help="search this space (name or YAML) instead of each dataset's bundled "
                         "one; results go to a separate file")
    ap.add_argument("--quick", action="store_true", help="smoke test: digits, 1 tiny search")
    args = ap.parse_args(argv)
    if any(not 0 < t <= 1 for t in args.targets) or args.trials < 1 or args.epochs < 1:
        ap.error("targets must be fractions in (0, 1]; trials and epochs at least 1")
    if args.quick:
        args.datasets, args.targets, args.samplers = ["digits"], [0.1], ["tpe"]
        args.seeds, args.trials, args.epochs, args.jobs = args.seeds[:1], 3, 1, 1
    return args


# --------------------------------------------------------------------------- one run (worker)


def run_one(run: RefRun) -> dict[str, Any]:
    """One reference search in this process; returns its trained students compactly."""
    set_threads(1)
    with scratch_dir("autokd-ref-") as root:
        cfg = search_config(run.dataset, run.teacher, run.seed, "ref", root, sampler=run.sampler,
                            budget=run.trials, max_flops=run.max_flops, epochs=run.epochs,
                            space=run.space)
        t0, c0 = time.perf_counter(), time.process_time()
        study = run_search(cfg).study
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows = [trial_row(t) for t in study.get_trials(deepcopy=False)]
    trained = [r for r in rows if r["trained"]]
    return {**dataclasses.asdict(run), "key": run.key, "wall_s": wall, "cpu_s": cpu,
            "trials_total": len(rows), "infeasible": sum(r["infeasible"] for r in rows),
            "pruned": sum(r["state"] == "PRUNED" for r in rows),
            # [trial, val accuracy, test accuracy, FLOPs, spec] of every trained student
            "students": [[r["number"], r["val_accuracy"], r["test_accuracy"], r["flops"],
                          r["spec"]] for r in trained],
            "load_average": os.getloadavg()}


# --------------------------------------------------------------------------- thresholds


def thresholds(runs: list[dict[str, Any]], profiles: dict[str, dict[str, Any]],
               targets: list[float]) -> dict[str, dict[str, Any]]:
    """Per dataset and target: the best reference student at or under it and the threshold."""
    out: dict[str, dict[str, Any]] = {}
    for dataset, profile in profiles.items():
        mine = [r for r in runs if r["dataset"] == dataset]
        students = [(s, r) for r in mine for s in r["students"]]
        out[dataset] = {}
        for target in targets:
            limit = target * profile["flops"]
            under = [(s, r) for s, r in students if s[3] is not None and s[3] <= limit]
            entry: dict[str, Any] = {"max_flops": limit, "students_under_target": len(under),
                                     "runs": len(mine)}
            if under:
                (number, val, test, flops, spec), run = max(under, key=lambda x: x[0][1])
                entry.update(best_val_accuracy=val, best_test_accuracy=test, best_flops=flops,
                             best_spec=spec, best_from=f"{run['key']} trial {number}",
                             threshold=THRESHOLD_FACTOR * val)
            out[dataset][f"{target:g}"] = entry
    return out


# --------------------------------------------------------------------------- driver


def _profiles(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Train or load each dataset's teacher once, before any worker starts."""
    paths, profiles = {}, {}
    for name in args.datasets:
        data = load_data(DataConfig(source=name))
        teacher, path = teacher_for(data, quick=args.quick)
        prof = teacher_profile(teacher, data, CostConfig(latency=False))
        paths[name] = str(path)
        profiles[name] = {k: prof[k] for k in ("val_accuracy", "test_accuracy", "flops")}
    return paths, profiles


def _previous(quick: bool, space: str | None = None) -> list[dict[str, Any]]:
    path = (QUICK_OUT_DIR if quick else OUT_DIR) / f"{results_name(NAME, space)}.json"
    if quick or not path.exists():
        return []
    return list(json.loads(path.read_text()).get("runs", []))


def _plan(args: argparse.Namespace, teachers: dict[str, str],
          profiles: dict[str, dict[str, Any]]) -> list[RefRun]:
    return [RefRun(d, t, t * profiles[d]["flops"], s, seed, args.trials, args.epochs, teachers[d],
                   args.space)
            for seed in args.seeds for d in args.datasets for t in args.targets
            for s in args.samplers]


def _payload(args: argparse.Namespace, runs: list[dict[str, Any]], plan: list[RefRun],
             profiles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    done = {r["key"] for r in runs}
    return {
        "benchmark": results_name(NAME, args.space),
        "quick": args.quick,
        "rule": THRESHOLD_RULE,
        "threshold_factor": THRESHOLD_FACTOR,
        "how": ("union, per dataset, of multi-trial searches (Optuna strategy, objective "
                "validation accuracy, --max-flops = target x teacher FLOPs, Pareto early "
                "stopping on, no latency, 1 torch thread) on the cached default teacher"),
        "setup": {"space": args.space or "each dataset's bundled space",
                  "datasets": args.datasets, "targets": args.targets, "samplers": args.samplers,
                  "seeds": args.seeds, "trials": args.trials, "epochs": args.epochs,
                  "jobs": args.jobs, "cpu_count": os.cpu_count(), "teachers": profiles},
        "complete": all(p.key in done for p in plan),
        "remaining": [p.key for p in plan if p.key not in done],
        "total_cpu_s": sum(r["cpu_s"] for r in runs),
        "thresholds": thresholds(runs, profiles, args.targets),
        "runs": runs,
    }


def _execute(todo: list[RefRun], jobs: int, budget_s: float | None,
             on_done: Any) -> None:
    """Run ``todo`` on ``jobs`` workers; start nothing new once ``budget_s`` CPU is spent."""
    spent, queue = 0.0, list(todo)
    ctx = multiprocessing.get_context("spawn")  # no fork after torch has started its threads
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx) as pool:
        running: set[Future] = set()
        while queue or running:
            while queue and len(running) < jobs and (budget_s is None or spent < budget_s):
                running.add(pool.submit(run_one, queue.pop(0)))
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
    teachers, profiles = _profiles(args)
    runs = _previous(args.quick, args.space)
    plan = _plan(args, teachers, profiles)
    todo = [p for p in plan if p.key not in {r["key"] for r in runs}]
    log(f"reference: {len(plan) - len(todo)} of {len(plan)} searches already done")

    def on_done(result: dict[str, Any]) -> None:
        runs.append(result)
        log(f"[{len(runs)}/{len(plan)}] {result['key']}: {result['cpu_s']:.0f} CPU s, "
            f"{len(result['students'])} students")
        _write(_payload(args, runs, plan, profiles), args.quick, args.space)

    budget = args.cpu_minutes * 60 if args.cpu_minutes is not None else None
    _execute(todo, args.jobs, budget, on_done)
    payload = _payload(args, runs, plan, profiles)
    write_result(results_name(NAME, args.space), payload, quick=args.quick)
    return payload


def _write(payload: dict[str, Any], quick: bool, space: str | None = None) -> None:
    """The file only (the final ``write_result`` also prints it): a crash keeps every run."""
    out = (QUICK_OUT_DIR if quick else OUT_DIR) / f"{results_name(NAME, space)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    tmp.replace(out)


if __name__ == "__main__":
    try:
        main()
    except AutokdError as exc:  # a bad dataset name, target, ...: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
