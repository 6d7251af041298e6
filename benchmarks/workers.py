"""Scale-out throughput: trials per minute with 1 vs 2 ``autokd worker`` processes.

Each configuration gets a fresh study (SQLite, the ``--jobs`` default) whose search space fixes
the architecture and varies only the KD recipe, so every trial costs the same and the ratio
measures the workers, not the sampler's luck. Workers run with one torch thread each (2 workers
x 1 thread on a 2-core machine). Throughput is steady-state, read from the study: trials that
finished after every worker had finished its first (warm-up) trial, over that time span, so
process start-up and first-trial warm-up are excluded.
The machine's load average is recorded: other processes on the cores lower the ratio.

Prints JSON and writes results/benchmarks/workers.json (``--quick``: a temp directory).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import log, write_result
from optuna.trial import TrialState

from autokd.config import CostConfig, SearchSettings
from autokd.record import SEARCH_ATTR, SearchRecord, TrialRecord
from autokd.search import SearchConfig, run_search

SPACE = {
    "family": "cnn",
    "description": "fixed architecture, KD recipe varies: every trial costs the same",
    "architecture": {"depth": 2, "widths": [16, 32], "kernel": 3},
    "distillation": {"temperature": {"float": [2.0, 6.0]}, "alpha": {"float": [0.5, 1.0]}},
    "training": {"lr": 0.005, "epochs": 20},
}


def _study(root: Path, name: str, epochs: int) -> Any:
    """Create the study (and warm the teacher cache) with one trial in this process."""
    space = root / "space.yaml"
    training = {**SPACE["training"], "epochs": epochs}
    space.write_text(yaml.safe_dump({**SPACE, "training": training}))
    settings = SearchSettings(cost=CostConfig.for_search(latency=False), pareto_pruning=False)
    cfg = SearchConfig(space=str(space), budget=1, name=name, results=str(root), device="cpu",
                       sampler="random", settings=settings)
    return run_search(cfg).study


def _run(root: Path, workers: int, trials: int, epochs: int) -> dict[str, Any]:
    name = f"w{workers}"
    study = _study(root, name, epochs)
    record = SearchRecord.of(study)  # the workers read the budget from the search's record
    record.budget = {"trials": trials + 1, "seconds": None}
    study.set_user_attr(SEARCH_ATTR, record.to_dict())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "AUTOKD_STORAGE": f"sqlite:///{root / name / 'study.db'}"}
    cmd = [sys.executable, "-m", "autokd", "worker", name, "--results", str(root),
           "--device", "cpu", "--threads", "1", "--quiet"]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([*cmd, "--seed", str(i)], env=env) for i in range(workers)]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - t0
    if any(codes):
        raise SystemExit(f"a worker failed (exit codes {codes})")
    return {"workers": workers, "threads_per_worker": 1, "wall_with_startup_s": round(wall, 2),
            **_throughput([t for t in study.get_trials() if t.number > 0])}


def _throughput(timed: list[Any]) -> dict[str, Any]:
    """Steady state: trials finished after every worker finished its first (warm-up) trial."""
    done = [t for t in timed if t.state == TrialState.COMPLETE]
    firsts: dict[str, Any] = {}
    for t in sorted(done, key=lambda t: t.datetime_complete):
        firsts.setdefault(TrialRecord.of(t).get("worker"), t.datetime_complete)
    start = max(firsts.values())
    steady = [t for t in done if t.datetime_complete > start]
    span = (max(t.datetime_complete for t in done) - start).total_seconds()
    durations = sorted(t.duration.total_seconds() for t in steady)
    return {"trials": len(done), "failed": len(timed) - len(done),
            "workers_seen": len(firsts), "steady_trials": len(steady),
            "steady_span_s": round(span, 2),
            "trials_per_minute": round(len(steady) / span * 60, 2) if span > 0 else None,
            "steady_trial_s_median": round(durations[len(durations) // 2], 3) if durations
            else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=16, help="timed trials per configuration")
    ap.add_argument("--epochs", type=int, default=20, help="epochs per trial")
    ap.add_argument("--quick", action="store_true", help="smoke test: 4 trials of 2 epochs")
    args = ap.parse_args()
    trials, epochs = (4, 2) if args.quick else (args.trials, args.epochs)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for workers in (1, 2):
            log(f"{workers} worker(s), {trials} trials of {epochs} epochs")
            runs.append(_run(Path(tmp), workers, trials, epochs))
    one, two = runs
    ratio = two["trials_per_minute"] / one["trials_per_minute"]
    write_result("workers", {
        "one_worker": one, "two_workers": two, "ratio": round(ratio, 3), "target_ratio": 1.8,
        "meets_target": ratio >= 1.8, "cores": len(os.sched_getaffinity(0)),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "storage": "sqlite (WAL)", "dataset": "digits", "epochs": epochs,
        "note": "steady-state trials/min (after each worker's first trial); a load average "
                "above 0 means other processes shared the cores",
    }, quick=args.quick)


if __name__ == "__main__":
    main()
