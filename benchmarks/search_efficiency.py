"""Which sampler finds the best (accuracy, FLOPs) front for a given number of trials?

For every dataset x sampler x seed this runs one ``autokd.search.search`` of ``--budget``
trials (default 40) with a small ``--epochs`` budget, no latency measurement and the cached
default teacher, then scores the front after the first 10, 20 and 40 trials of that same run
(prefixes, not separate studies). Scores, per prefix:

* ``hv_val``: hypervolume of the feasible front, objectives normalised by
  ``autokd.pareto.normalised_losses`` (1 - validation accuracy; FLOPs / teacher FLOPs) with the
  reference point (1, 1): what the search optimised.
* ``hv_test``: the same members, scored with their test accuracy (never used for selection);
  ``hv_val - hv_test`` and ``val_test_gap`` show how much picking on validation overfits it.
* ``compression_at_99``: the largest FLOPs compression among front members whose validation
  accuracy is >= 99 % of the teacher's, with that member's test retention.

It also times every run (wall and CPU seconds; CPU seconds stay meaningful on a shared
machine) and, unless ``--no-pruning-ablation``, reruns TPE on digits with the Pareto
early-stopping rule switched off, to show how much time the rule saves and what it costs in
hypervolume. ``identical_leading_trials`` counts the first trials every sampler drew alike.

Studies live in a temporary directory, on ``/dev/shm`` when it exists, so the speed of the
disk under the SQLite storage does not enter the timings.

Usage: ``python benchmarks/search_efficiency.py [--datasets digits mnist1d]
[--samplers tpe nsga2 gp random] [--seeds 0 1 2] [--budget 40] [--epochs 10] [--jobs 2]
[--name search_efficiency] [--quick]``. The full default matrix (2 datasets x 4 samplers x 3
seeds x 40 trials of 10 epochs, plus the 3 ablation runs) used 1,670 CPU-seconds: 40 minutes
on two heavily shared cores, about 11-14 minutes on two free ones. ``--epochs`` scales it.

Optuna's GPSampler does not model conditional parameters (per-stage widths, parameters under
``when:``); it samples those at random, so on these spaces "gp" is partly a random search.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import multiprocessing
import operator
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _common import log, mean_std, pm, set_threads, teacher_for, write_result
from optuna.trial import TrialState

from autokd.config import CostConfig, DataConfig, SearchSettings
from autokd.data import load_data
from autokd.pareto import hypervolume, non_dominated, normalised_losses
from autokd.pipeline import teacher_profile
from autokd.record import TrialRecord
from autokd.search import search

__all__ = ["RunSpec", "main", "prefix_scores", "run_one"]

NAMES, DIRECTIONS = ["accuracy", "flops"], ["maximize", "minimize"]
COUNTED = (TrialState.COMPLETE.name, TrialState.PRUNED.name)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One search of the matrix (picklable: it crosses into a worker process)."""

    dataset: str
    sampler: str
    seed: int
    pruning: bool
    budget: int
    epochs: int
    teacher: str
    results: str

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.sampler}-s{self.seed}-{'prune' if self.pruning else 'full'}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    ap.add_argument("--samplers", nargs="+", default=["tpe", "nsga2", "gp", "random"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", type=int, default=40, help="trials per run")
    ap.add_argument(
        "--checkpoints",
        type=int,
        nargs="+",
        default=[10, 20, 40],
        help="score the front after this many trials (<= budget)",
    )
    ap.add_argument("--epochs", type=int, default=10, help="epochs per trial")
    ap.add_argument("--jobs", type=int, default=2, help="parallel runs (one thread each)")
    ap.add_argument(
        "--no-pruning-ablation",
        dest="ablation",
        action="store_false",
        help="skip the TPE-on-digits run with Pareto early stopping off",
    )
    ap.add_argument("--name", default="search_efficiency", help="output file stem")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 4 trials, 1 epoch")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.budget, args.epochs, args.checkpoints = args.seeds[:1], 4, 1, [2, 4]
    args.checkpoints = sorted({c for c in args.checkpoints if c <= args.budget} | {args.budget})
    return args


# --------------------------------------------------------------------------- one run (worker)


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Run one search in this process and return its trials as plain records."""
    set_threads(1)
    cost = dataclasses.replace(SearchSettings().cost, latency=False)
    t0, cpu0 = time.perf_counter(), time.process_time()
    study = search(
        spec.dataset,
        budget=spec.budget,
        epochs=spec.epochs,
        sampler=spec.sampler,
        seed=spec.seed,
        teacher=[spec.teacher],
        results=spec.results,
        name=spec.name,
        cost=cost,
        pareto_pruning=spec.pruning,
        keep_weights=False,
        device="cpu",
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    return {
        "spec": dataclasses.asdict(spec),
        "wall_s": wall,
        "cpu_s": cpu,
        "trials": [_record(t) for t in trials],
    }


def _record(t: Any) -> dict[str, Any]:
    a = TrialRecord.of(t).fields()
    end, start = t.datetime_complete, t.datetime_start
    seconds = (end - start).total_seconds() if end and start else 0.0
    return {
        "number": t.number,
        "state": t.state.name,
        "params": dict(t.params),
        "infeasible": bool(a.get("infeasible")),
        "val_accuracy": a.get("val_accuracy"),
        "test_accuracy": a.get("test_accuracy"),
        "flops": a.get("flops"),
        "train_seconds": a.get("train_seconds"),
        "trial_seconds": seconds,
        "pruned_at_epoch": a.get("pruned_at_epoch"),
    }


# --------------------------------------------------------------------------- scoring


def first_trials(trials: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The trials up to and including the k-th one that counts toward the budget."""
    counted = 0
    for i, t in enumerate(trials):
        counted += t["state"] in COUNTED and not t["infeasible"]
        if counted == k:
            return trials[: i + 1]
    return list(trials)


def prefix_scores(trials: list[dict[str, Any]], k: int, teacher: dict[str, Any]) -> dict[str, Any]:
    """Front quality after the first ``k`` counted trials (see the module docstring)."""
    done = [
        t
        for t in first_trials(trials, k)
        if t["state"] == "COMPLETE" and not t["infeasible"] and t["val_accuracy"] is not None
    ]
    if not done:
        return {"hv_val": 0.0, "hv_test": 0.0, "front_size": 0}
    ref = {"flops": teacher["flops"]}
    val = np.array([[t["val_accuracy"], t["flops"]] for t in done], dtype=float)
    front = [t for t, keep in zip(done, non_dominated(val * [-1.0, 1.0]), strict=True) if keep]
    test = [[t["test_accuracy"], t["flops"]] for t in front]
    best = max(front, key=lambda t: (t["val_accuracy"], -t["flops"]))
    return {
        "hv_val": hypervolume(normalised_losses(val, NAMES, DIRECTIONS, ref)),
        "hv_test": hypervolume(normalised_losses(test, NAMES, DIRECTIONS, ref)),
        "front_size": len(front),
        "best_val_accuracy": best["val_accuracy"],
        "best_val_member_test_accuracy": best["test_accuracy"],
        "val_test_gap": statistics.fmean(t["val_accuracy"] - t["test_accuracy"] for t in front),
        **_compression_at(front, teacher, 0.99),
    }


def _compression_at(
    front: list[dict[str, Any]], teacher: dict[str, Any], retention: float
) -> dict[str, Any]:
    """Largest FLOPs compression among members keeping ``retention`` of the teacher (val)."""
    keep = [t for t in front if t["val_accuracy"] >= retention * teacher["val_accuracy"]]
    if not keep:
        return {"compression_at_99": None, "test_retention_at_99": None}
    pick = min(keep, key=lambda t: t["flops"])
    return {
        "compression_at_99": teacher["flops"] / pick["flops"],
        "test_retention_at_99": pick["test_accuracy"] / teacher["test_accuracy"],
    }


def run_summary(
    run: dict[str, Any], checkpoints: list[int], teacher: dict[str, Any]
) -> dict[str, Any]:
    trials = run["trials"]
    counted = [t for t in trials if t["state"] in COUNTED and not t["infeasible"]]
    return {
        **run["spec"],
        "wall_s": run["wall_s"],
        "cpu_s": run["cpu_s"],
        "trial_seconds": sum(t["trial_seconds"] for t in trials),
        "train_seconds": sum(t["train_seconds"] or 0.0 for t in trials),
        "pruned": sum(t["state"] == "PRUNED" for t in trials),
        "failed": sum(t["state"] == "FAIL" for t in trials),
        "counted": len(counted),
        "at": {str(k): prefix_scores(trials, k, teacher) for k in checkpoints},
        "trials": [_compact(t) for t in trials],
    }


def _compact(t: dict[str, Any]) -> list[Any]:
    """[number, state, val accuracy, test accuracy, FLOPs, seconds]: enough to re-score."""
    acc = [None if t[k] is None else round(t[k], 4) for k in ("val_accuracy", "test_accuracy")]
    return [t["number"], t["state"], *acc, t["flops"], round(t["trial_seconds"], 2)]


# --------------------------------------------------------------------------- aggregation


def aggregate(runs: list[dict[str, Any]], checkpoints: list[int]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (dataset, sampler, pruning) and checkpoint."""
    rows = []
    key = operator.itemgetter("dataset", "sampler", "pruning")
    for (dataset, sampler, pruning), group in itertools.groupby(sorted(runs, key=key), key):
        group = list(group)
        row = {
            "dataset": dataset,
            "sampler": sampler,
            "pruning": pruning,
            "seeds": len(group),
            "wall_s": mean_std([r["wall_s"] for r in group]),
            "cpu_s": mean_std([r["cpu_s"] for r in group]),
            "pruned": mean_std([r["pruned"] for r in group]),
        }
        for k in map(str, checkpoints):
            scores = [r["at"][k] for r in group]
            row[k] = {
                m: mean_std([s.get(m) for s in scores])
                for m in (
                    "hv_val",
                    "hv_test",
                    "front_size",
                    "best_val_accuracy",
                    "best_val_member_test_accuracy",
                    "val_test_gap",
                    "compression_at_99",
                    "test_retention_at_99",
                )
            }
        rows.append(row)
    return rows


def verdicts(
    rows: list[dict[str, Any]], runs: list[dict[str, Any]], budget: int
) -> dict[str, Any]:
    """The issue's checks: guided samplers at half budget vs random at full; ranking; pruning."""
    out: dict[str, Any] = {}
    half, full = str(budget // 2), str(budget)
    for dataset in sorted({r["dataset"] for r in rows}):
        mine = {r["sampler"]: r for r in rows if r["dataset"] == dataset and r["pruning"]}
        entry: dict[str, Any] = {
            f"ranking_{m}_at_{full}": sorted(mine, key=lambda s: -mine[s][full][m]["mean"])
            for m in ("hv_val", "hv_test")
        }
        if "random" in mine and half in mine["random"]:
            rnd = mine["random"][full]["hv_val"]["mean"]
            for s in sorted(set(mine) - {"random"}):
                entry[f"{s}@{half} >= random@{full}"] = {
                    "on_means": mine[s][half]["hv_val"]["mean"] >= rnd,
                    "seeds_won": _paired_wins(runs, dataset, s, half, full),
                }
        out[dataset] = entry
    out["pruning_ablation"] = _ablation(rows, full)
    return out


def _paired_wins(
    runs: list[dict[str, Any]], dataset: str, sampler: str, half: str, full: str
) -> str:
    """Seeds where ``sampler`` after ``half`` trials reaches random's HV after ``full``."""

    def hv(name: str, k: str) -> dict[int, float]:
        return {
            r["seed"]: r["at"][k]["hv_val"]
            for r in runs
            if r["dataset"] == dataset and r["sampler"] == name and r["pruning"]
        }

    guided, rnd = hv(sampler, half), hv("random", full)
    seeds = sorted(set(guided) & set(rnd))
    return f"{sum(guided[s] >= rnd[s] for s in seeds)}/{len(seeds)}"


def _ablation(rows: list[dict[str, Any]], full: str) -> dict[str, Any] | None:
    pair = {r["pruning"]: r for r in rows if r["dataset"] == "digits" and r["sampler"] == "tpe"}
    if len(pair) < 2:
        return None
    on, off = pair[True], pair[False]
    return {
        "wall_s_on": on["wall_s"],
        "wall_s_off": off["wall_s"],
        "wall_saved_fraction": 1 - on["wall_s"]["mean"] / off["wall_s"]["mean"],
        "cpu_s_on": on["cpu_s"],
        "cpu_s_off": off["cpu_s"],
        "cpu_saved_fraction": 1 - on["cpu_s"]["mean"] / off["cpu_s"]["mean"],
        "hv_val_on": on[full]["hv_val"],
        "hv_val_off": off[full]["hv_val"],
        "hv_test_on": on[full]["hv_test"],
        "hv_test_off": off[full]["hv_test"],
        "pruned_trials_on": on["pruned"],
    }


def shared_prefix(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Per dataset: how many leading trials all samplers drew identically (mean over seeds)."""
    out: dict[str, float] = {}
    for dataset in sorted({r["spec"]["dataset"] for r in runs}):
        lengths = []
        for seed in sorted({r["spec"]["seed"] for r in runs}):
            params = [
                [t["params"] for t in r["trials"]]
                for r in runs
                if r["spec"]["dataset"] == dataset
                and r["spec"]["seed"] == seed
                and r["spec"]["pruning"]
            ]
            n = 0
            while params and all(len(p) > n and p[n] == params[0][n] for p in params):
                n += 1
            lengths.append(n)
        out[dataset] = statistics.fmean(lengths) if lengths else 0.0
    return out


# --------------------------------------------------------------------------- driver


def plan(args: argparse.Namespace, teachers: dict[str, str], results: str) -> list[RunSpec]:
    """The matrix, longest runs (MNIST-1D) first so parallel workers finish together."""
    specs = [
        RunSpec(d, s, seed, True, args.budget, args.epochs, teachers[d], results)
        for d in args.datasets
        for s in args.samplers
        for seed in args.seeds
    ]
    if args.ablation and "digits" in args.datasets and "tpe" in args.samplers:
        specs += [
            RunSpec(
                "digits", "tpe", seed, False, args.budget, args.epochs, teachers["digits"], results
            )
            for seed in args.seeds
        ]
    return sorted(specs, key=lambda s: (s.dataset != "mnist1d", s.seed, s.sampler))


def prepare_teachers(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, dict]]:
    """Train or load each dataset's teacher once, here, before the workers start."""
    paths, profiles = {}, {}
    for name in args.datasets:
        data = load_data(DataConfig(source=name))
        teacher, path = teacher_for(data, quick=args.quick)
        profile = teacher_profile(teacher, data, CostConfig(latency=False))
        paths[name] = str(path)
        profiles[name] = {
            k: profile[k] for k in ("val_accuracy", "test_accuracy", "flops", "params")
        } | {"split": data.sizes()}
    return paths, profiles


def results_root() -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and shm.stat().st_mode & 0o002 else None
    return Path(tempfile.mkdtemp(prefix="autokd-search-eff-", dir=base))


def execute(specs: list[RunSpec], jobs: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    ctx = multiprocessing.get_context("spawn")  # no fork after torch has started its threads
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx) as pool:
        for run in pool.map(run_one, specs):
            runs.append(run)
            s = run["spec"]
            log(
                f"[{len(runs)}/{len(specs)}] {s['dataset']} {s['sampler']} seed {s['seed']} "
                f"pruning={s['pruning']}: {run['wall_s']:.0f} s"
            )
    return runs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(1)
    teachers, profiles = prepare_teachers(args)
    root = results_root()
    t0 = time.perf_counter()
    try:
        runs = execute(plan(args, teachers, str(root)), args.jobs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summaries = [run_summary(r, args.checkpoints, profiles[r["spec"]["dataset"]]) for r in runs]
    rows = aggregate(summaries, args.checkpoints)
    payload = {
        "benchmark": "search_efficiency",
        "quick": args.quick,
        "setup": {
            k: getattr(args, k)
            for k in ("datasets", "samplers", "seeds", "budget", "checkpoints", "epochs", "jobs")
        }
        | {
            "latency": False,
            "teachers": profiles,
            "std": "sample std (ddof=1) over seeds",
            "total_wall_s": time.perf_counter() - t0,
            # CPU seconds barely depend on how busy the shared machine was: the time this
            # matrix would take with ``jobs`` free cores
            "total_cpu_s": sum(r["cpu_s"] for r in runs),
            "free_cores_wall_estimate_s": sum(r["cpu_s"] for r in runs) / max(1, args.jobs),
        },
        "verdicts": verdicts(rows, summaries, args.budget),
        "identical_leading_trials": shared_prefix(runs),
        "table": table(rows, args.checkpoints),
        "aggregate": rows,
        "runs": summaries,
    }
    write_result(args.name, payload, quick=args.quick)
    return payload


def table(rows: list[dict[str, Any]], checkpoints: list[int]) -> list[str]:
    """Human-readable lines: HV (val / test) at each checkpoint and wall time per run."""
    lines = []
    for r in rows:
        cells = [
            f"{k}: {pm(r[str(k)]['hv_val'], 1, 3)} / {pm(r[str(k)]['hv_test'], 1, 3)}"
            for k in checkpoints
        ]
        tag = "" if r["pruning"] else " (pruning off)"
        lines.append(
            f"{r['dataset']} {r['sampler']}{tag} | "
            + " | ".join(cells)
            + f" | wall {pm(r['wall_s'], 1, 0)} s"
        )
    return lines


if __name__ == "__main__":
    main()
