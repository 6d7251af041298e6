"""Scale-out: end-to-end wall time of a search budget with 1 vs 2 ``autokd worker`` processes.

Each configuration gets a fresh study (SQLite, the ``--jobs`` default) whose search space fixes
the architecture and varies only the KD recipe, so every trial costs the same and the ratio
measures the workers, not the sampler's luck. Workers run with one torch thread each (2 workers
x 1 thread on a 2-core machine); the teacher and its outputs are cached before the timing, as
in any search after its first. Per repeat, round-robin (1 worker, then 2):

- **end to end** (the headline, ``workers_end_to_end_ratio``): from launching the worker
  processes to the last one's exit, for the whole budget (>= 40 trials);
- **steady state**: trials finished after every worker finished its first trial, over that
  span (process start-up and first-trial warm-up excluded), as trials per minute;
- where the difference goes: each worker's **start-up** (launch to its first trial's start),
  the **tail** (the last worker's exit minus the first's: one worker idles while the other
  finishes) and the median trial time with 1 and 2 workers (storage and core contention).

The machine's load average is recorded: other processes on the cores lower the ratio.
Prints JSON and writes results/benchmarks/workers.json (``--quick``: a temp directory).

Usage: ``python benchmarks/workers.py [--trials 40] [--epochs 20] [--repeats 3] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
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
                       strategy="optuna", sampler="random", settings=settings)
    return run_search(cfg).study


def _run(root: Path, workers: int, trials: int, epochs: int, tag: str) -> dict[str, Any]:
    name = f"w{workers}-{tag}"
    study = _study(root, name, epochs)
    record = SearchRecord.of(study)  # the workers read the budget from the search's record
    record.budget = {"trials": trials + 1, "seconds": None}
    study.set_user_attr(SEARCH_ATTR, record.to_dict())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "AUTOKD_STORAGE": f"sqlite:///{root / name / 'study.db'}"}
    cmd = [sys.executable, "-m", "autokd", "worker", name, "--results", str(root),
           "--device", "cpu", "--threads", "1", "--quiet"]
    launched, t0 = datetime.now(), time.perf_counter()
    procs = [subprocess.Popen([*cmd, "--seed", str(i)], env=env) for i in range(workers)]
    exits = []
    for p in procs:
        p.wait()
        exits.append(time.perf_counter() - t0)
    codes = [p.returncode for p in procs]
    if any(codes):
        raise SystemExit(f"a worker failed (exit codes {codes})")
    timed = [t for t in study.get_trials() if t.number > 0]
    firsts: dict[Any, datetime] = {}
    for t in sorted(timed, key=lambda t: t.datetime_start):
        firsts.setdefault(TrialRecord.of(t).get("worker"), t.datetime_start)
    return {"workers": workers, "threads_per_worker": 1,
            "end_to_end_s": round(max(exits), 2),
            "startup_s": sorted(round((f - launched).total_seconds(), 2)
                                for f in firsts.values()),
            "tail_s": round(max(exits) - min(exits), 2),
            **_throughput(timed)}


def _throughput(timed: list[Any]) -> dict[str, Any]:
    """Steady state: trials finished after every worker finished its first (warm-up) trial."""
    done = [t for t in timed if t.state == TrialState.COMPLETE]
    firsts: dict[str, Any] = {}
    for t in sorted(done, key=lambda t: t.datetime_complete):
        firsts.setdefault(TrialRecord.of(t).get("worker"), t.datetime_complete)
    start = max(firsts.values())
    steady = [t for t in done if t.datetime_complete > start]
    span = (max(t.datetime_complete for t in done) - start).total_seconds()
    durations = sorted(t.duration.total_seconds() for t in done)
    return {"trials": len(done), "failed": len(timed) - len(done),
            "workers_seen": len(firsts), "steady_trials": len(steady),
            "steady_span_s": round(span, 2),
            "trials_per_minute": round(len(steady) / span * 60, 2) if span > 0 else None,
            "trial_s_median": round(statistics.median(durations), 3) if durations else None}


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40, help="trials per configuration")
    ap.add_argument("--epochs", type=int, default=20, help="epochs per trial")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 trials of 1 epoch, once")
    args = ap.parse_args()
    trials, epochs, repeats = (2, 1, 1) if args.quick else (args.trials, args.epochs,
                                                            args.repeats)
    load_before = os.getloadavg()
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for workers in (1, 2):
                log(f"repeat {r + 1}/{repeats}: {workers} worker(s), {trials} trials of "
                    f"{epochs} epochs")
                runs[workers].append(_run(Path(tmp), workers, trials, epochs, str(r)))
    e2e = [a["end_to_end_s"] / b["end_to_end_s"] for a, b in zip(runs[1], runs[2])]
    steady = [b["trials_per_minute"] / a["trials_per_minute"]  # none in a 2-trial smoke run
              for a, b in zip(runs[1], runs[2])
              if a["trials_per_minute"] and b["trials_per_minute"]]
    one = {k: _spread([r[k] for r in runs[1]]) for k in ("end_to_end_s", "trial_s_median")}
    two = {k: _spread([r[k] for r in runs[2]])
           for k in ("end_to_end_s", "trial_s_median", "tail_s")}
    two["startup_s"] = _spread([s for r in runs[2] for s in r["startup_s"]])
    one["startup_s"] = _spread([s for r in runs[1] for s in r["startup_s"]])
    ratio = statistics.median(e2e)
    write_result("workers", {
        "workers_end_to_end_ratio": round(ratio, 3),
        "end_to_end_ratio_per_repeat": [round(x, 3) for x in e2e],
        "steady_state_ratio": round(statistics.median(steady), 3) if steady else None,
        "steady_state_ratio_per_repeat": [round(x, 3) for x in steady],
        "target_ratio": 1.8, "meets_target": ratio >= 1.8,
        "one_worker": one, "two_workers": two,
        "runs": {"one_worker": runs[1], "two_workers": runs[2]},
        "cores": len(os.sched_getaffinity(0)),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "storage": "sqlite (WAL)", "dataset": "digits", "trials": trials, "epochs": epochs,
        "repeats": repeats,
        "note": "end to end: launch to the last worker's exit; steady state: trials/min after "
                "each worker's first trial; a load average above 0 means other processes "
                "shared the cores",
    }, quick=args.quick)


if __name__ == "__main__":
    main()
