"""Controller overhead: the share of each trial's wall time spent outside training.

Outside training = sampling, building the student, measuring its cost, storage writes and the
controller's own bookkeeping. Training = ``Trainer.fit`` (epochs + per-epoch validation).
Runs a real search on the default space and digits; prints JSON and writes
results/benchmarks/search_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from optuna.trial import TrialState

from autokd.config import DataConfig
from autokd.record import TrialRecord
from autokd.search import SearchConfig, run_search


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=None, help="override the space's epochs")
    ap.add_argument("--storage", default=None, help="Optuna storage URL (default SQLite)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SearchConfig(data=DataConfig("digits"), budget=args.trials, results=tmp,
                           name="overhead", seed=0, device="cpu", storage=args.storage)
        if args.epochs:
            cfg.settings.epochs = args.epochs
        run_search(cfg)  # warm: the default teacher is trained/cached outside the timing
        cfg.name, t0 = "overhead-timed", time.perf_counter()
        study = run_search(cfg).study
        wall = time.perf_counter() - t0
    trials = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    rows = []
    for t in trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds()
        train = TrialRecord.of(t).get("train_seconds") or 0.0
        rows.append({"trial": t.number, "duration_s": duration, "train_s": train,
                     "pre_train_s": TrialRecord.of(t).get("pre_train_seconds"),
                     "state": t.state.name})
    total_train = sum(r["train_s"] for r in rows if r["state"] == "COMPLETE")
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    in_trial = [(r["duration_s"] - r["train_s"]) / r["duration_s"] for r in complete]
    out = {
        "trials": len(rows),
        "complete": len(complete),
        "wall_s": round(wall, 2),
        "train_s_complete_trials": round(total_train, 2),
        "overhead_share_of_wall": round(1 - sum(r["train_s"] for r in rows) / wall, 4),
        "overhead_share_per_trial_median": round(statistics.median(in_trial), 4),
        "pre_train_s_median": round(statistics.median(r["pre_train_s"] for r in rows), 4),
        "trial_s_median": round(statistics.median(r["duration_s"] for r in rows), 3),
        "note": "overhead = wall time outside Trainer.fit (sampling, build, cost, storage)",
    }
    print(json.dumps(out, indent=2))
    dest = Path("results/benchmarks")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "search_overhead.json").write_text(json.dumps({**out, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
