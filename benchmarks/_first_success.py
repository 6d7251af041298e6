"""The fixed DARTS protocol: FLOPs targets, success rule, and timing a search to its first success.

Why a module: the reference search (``darts_reference.py``) and the timed comparison
(``darts_vs_multitrial.py``) must share one definition of the targets, of the student settings
(data, teacher, epochs, threads) and of what counts as a success, or the thresholds the first
computes would not apply to the second.

The protocol, fixed before any compared run:

* targets: students at or under 1 %, 3 % and 10 % of the default teacher's FLOPs;
* threshold per (dataset, target): ``THRESHOLD_FACTOR`` x the best validation accuracy that the
  long reference search (seeds ``REFERENCE_SEEDS``, disjoint from the compared seeds) found
  among students at or under the target;
* success: a finished (not pruned, not infeasible) trial whose student has FLOPs <= the target
  and validation accuracy >= the threshold; a run stops at its first success or once its CPU
  time passes a cap (censored: "not reached", with the time spent).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from autokd.config import CostConfig, DataConfig, SearchConfig, SearchSettings
from autokd.controllers.base import Progress
from autokd.record import TrialRecord, feasible
from autokd.search import run_search

__all__ = [
    "COMPARED_SEEDS",
    "EPOCHS",
    "REFERENCE_SEEDS",
    "TARGETS",
    "THRESHOLD_FACTOR",
    "THRESHOLD_RULE",
    "Rule",
    "Stopwatch",
    "results_name",
    "run_to_success",
    "scratch_dir",
    "search_config",
    "settings_for",
    "trial_row",
]

TARGETS = (0.01, 0.03, 0.1)  # fractions of the teacher's FLOPs
EPOCHS = 10  # training epochs of every student, in the reference and in the timed runs
THRESHOLD_FACTOR = 0.98
THRESHOLD_RULE = (f"threshold = {THRESHOLD_FACTOR} x the best validation accuracy the reference "
                  "search found among students at or under the FLOPs target")
REFERENCE_SEEDS = (1000, 1001)  # the reference search; never used by a compared run
COMPARED_SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Rule:
    """What one timed run must reach: a student within ``max_flops`` at ``threshold``."""

    dataset: str
    target: float
    max_flops: float
    threshold: float

    def met(self, flops: float | None, val_accuracy: float | None) -> bool:
        return (flops is not None and val_accuracy is not None
                and flops <= self.max_flops and val_accuracy >= self.threshold)


class Stopwatch:
    """Wall and process-CPU seconds since ``start`` (CPU: barely stretched by other load)."""

    def __init__(self) -> None:
        self.t0: tuple[float, float] | None = None

    def start(self, *_: Any) -> None:
        self.t0 = (time.perf_counter(), time.process_time())

    def elapsed(self) -> tuple[float, float]:
        assert self.t0 is not None, "the stopwatch was never started"
        return time.perf_counter() - self.t0[0], time.process_time() - self.t0[1]


def settings_for(max_flops: float | None, epochs: int = EPOCHS) -> SearchSettings:
    """What a user with a FLOPs budget asks for: the best accuracy under ``--max-flops``.

    No latency measurement: its cost is the same per student for every method and would only
    add timing noise. Weights are not kept (nothing is exported).
    """
    return SearchSettings(objectives=["accuracy"], max_flops=max_flops, epochs=epochs,
                          cost=dataclasses.replace(CostConfig.for_search(), latency=False),
                          keep_weights=False)


def trial_row(t: FrozenTrial) -> dict[str, Any]:
    """The few fields of a finished trial the protocol reads."""
    rec = TrialRecord.of(t)
    trained = (t.state == TrialState.COMPLETE and feasible(t) and not rec.infeasible
               and rec.val_accuracy is not None)
    return {"number": t.number, "state": t.state.name, "trained": trained,
            "infeasible": bool(rec.infeasible), "val_accuracy": rec.val_accuracy,
            "test_accuracy": rec.get("test_accuracy"), "flops": rec.flops,
            "spec": rec.spec if trained else None,
            # wall seconds inside the trial: the supernet search (DARTS) and the training
            "search_seconds": rec.get("darts_search_seconds"),
            "train_seconds": rec.get("train_seconds")}


@contextmanager
def scratch_dir(prefix: str) -> Iterator[str]:
    """A results folder in memory when possible (SQLite commits on disk cost ~10 ms each)."""
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    root = tempfile.mkdtemp(prefix=prefix, dir=base)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


class _Stop(Exception):
    """Raised from the progress callback to end a search: success or the CPU cap."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def run_to_success(cfg: SearchConfig, rule: Rule, cap_cpu_s: float) -> dict[str, Any]:
    """Run ``cfg`` (a huge trial budget) until a trial meets ``rule`` or the CPU cap passes.

    The clock starts when the study is ready (data loaded, the cached teacher profiled), so it
    counts everything the method does: supernet searches, trials, retraining. It is read after
    each finished trial, so a run may pass its cap by one trial; a success found after the cap
    is still censored.
    """
    watch, rows = Stopwatch(), []
    outcome: dict[str, Any] = {"status": "budget spent", "reached": False}

    def on_trial(p: Progress) -> None:
        wall, cpu = watch.elapsed()
        row = {**trial_row(p.last), "wall_s": wall, "cpu_s": cpu}
        rows.append(row)
        if rule.met(row["flops"], row["val_accuracy"]) and row["trained"] and cpu <= cap_cpu_s:
            outcome.update(status="reached", reached=True, success=row)
            raise _Stop("reached")
        if cpu >= cap_cpu_s:
            outcome.update(status="censored: CPU cap")
            raise _Stop("capped")

    try:
        run_search(cfg, on_trial, on_ready=watch.start)
    except _Stop:
        pass
    wall, cpu = (rows[-1]["wall_s"], rows[-1]["cpu_s"]) if rows else watch.elapsed()
    return {**outcome, "wall_s": wall, "cpu_s": cpu, "trials": len(rows),
            "trained": sum(r["trained"] for r in rows),
            "best_val_under_target": _best_under(rows, rule.max_flops),
            "log": [_compact(r) for r in rows]}


def _best_under(rows: list[dict[str, Any]], max_flops: float) -> float | None:
    vals = [r["val_accuracy"] for r in rows
            if r["trained"] and r["flops"] is not None and r["flops"] <= max_flops]
    return max(vals) if vals else None


def _compact(r: dict[str, Any]) -> list[Any]:
    """[number, state, val accuracy, FLOPs, CPU s]: enough to re-score another threshold."""
    acc = None if r["val_accuracy"] is None else round(r["val_accuracy"], 4)
    state = "INFEASIBLE" if r["infeasible"] else r["state"]
    return [r["number"], state, acc, r["flops"], round(r["cpu_s"], 2)]


def search_config(dataset: str, teacher: str, seed: int, name: str, root: str,
                  strategy: str = "optuna", sampler: str = "tpe", budget: int = 100_000,
                  max_flops: float | None = None, epochs: int = EPOCHS,
                  options: dict[str, Any] | None = None,
                  space: str | None = None) -> SearchConfig:
    """One search on the shared cached teacher, CPU, ``space`` (None: the dataset's bundled
    space)."""
    return SearchConfig(data=DataConfig(dataset), space=space, teacher=[teacher], budget=budget,
                        strategy=strategy, sampler=sampler, settings=settings_for(max_flops, epochs),
                        name=name, results=root, seed=seed, device="cpu",
                        strategy_options=options or {})


def results_name(benchmark: str, space: str | None) -> str:
    """``benchmark`` for the datasets' bundled spaces, ``benchmark_<space>`` for another one
    (``darts_vs_multitrial_mbv2``): its thresholds and cells never mix with the default's."""
    return benchmark if space is None else f"{benchmark}_{Path(space).stem}"

