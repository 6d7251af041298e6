"""search_efficiency, worker side: the methods compared and how one (dataset, method, seed) runs.

Why a separate module: a cell runs in a worker process of a pool (one torch thread, one search
at a time), so the process's CPU clock (``time.process_time``) is that search's alone: trials,
a DARTS supernet, the sampler and every storage read the controller makes. The clock starts
when the study is ready (data, teacher and the hypervolume's scale loaded; that set-up is
recorded apart as ``setup_cpu_s``) and is read after every finished trial through the
``progress`` callback of ``autokd.search.run_search``. Each trial's own ``cpu_seconds`` (as the
study recorded it) is kept beside it.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from _common import set_threads
from optuna.trial import FrozenTrial, TrialState

from autokd.config import (
    DEFAULT_STRATEGY,
    CostConfig,
    DataConfig,
    SearchConfig,
    SearchSettings,
    TrainConfig,
)
from autokd.controllers import STRATEGIES
from autokd.controllers.base import Progress
from autokd.data import load_data
from autokd.distill import KDConfig
from autokd.objective import Objective
from autokd.pipeline import teacher_profile
from autokd.record import SearchRecord, TrialRecord
from autokd.search import default_space_name, run_search
from autokd.space import Candidate, SearchSpace, load_space
from autokd.teachers import load_teacher

__all__ = ["DEFAULT_METHOD", "EVENT_FIELDS", "METHODS", "Cell", "Method", "availability", "run_cell",
           "sweep_widths"]

#: one finished trial, in the order trials finished (cpu_s / wall_s: cumulative, this search)
EVENT_FIELDS = ["trial", "state", "val", "test", "flops", "cpu_s", "wall_s", "trial_cpu_s",
                "trial_wall_s"]
SWEEP_POINTS = 6


@dataclass(frozen=True)
class Method:
    """How a method searches: an autokd strategy (+ sampler or NNI tuner), or the hand sweep."""

    strategy: str = "optuna"  # an autokd.controllers.STRATEGIES name, or "sweep"
    sampler: str = "tpe"
    tuner: str = "tpe"


METHODS: dict[str, Method] = {
    "random": Method(sampler="random"),
    "sweep": Method(strategy="sweep"),
    "tpe": Method(sampler="tpe"),
    "nsga2": Method(sampler="nsga2"),
    "gp": Method(sampler="gp"),
    "asha": Method(strategy="asha"),  # the multi-fidelity strategy, default sampler
    "darts": Method(strategy="darts"),
    "nni_tpe": Method(strategy="nni", tuner="tpe"),
    "nni_evolution": Method(strategy="nni", tuner="evolution"),
}


#: the method ``autokd search`` runs when given no --strategy/--sampler: what the headline is about
DEFAULT_METHOD = next(name for name, m in METHODS.items()
                      if (m.strategy, m.sampler) == (DEFAULT_STRATEGY, SearchConfig().sampler))


def availability(name: str) -> str | None:
    """Why ``name`` cannot run here (None: it can)."""
    if name not in METHODS:
        return f"unknown method; known: {', '.join(METHODS)}"
    strategy = METHODS[name].strategy
    if strategy == "sweep":
        return None
    if strategy not in STRATEGIES:
        return (f"not available: strategy {strategy!r} is not in autokd.controllers.STRATEGIES "
                f"(known: {', '.join(STRATEGIES.names())})")
    try:
        importlib.import_module(STRATEGIES.get(strategy))
        if strategy == "nni":
            importlib.import_module("nni")
    except Exception as exc:  # noqa: BLE001  (an optional extra missing or broken)
        return f"not available: {type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True)
class Cell:
    """One search of the matrix and when it stops (picklable: it crosses into a worker).

    Stop rules, checked after every finished trial: ``cpu_limit`` (CPU seconds since the study
    was ready); for the reference method, ``reference_trials`` counted trials and then on until
    ``extend`` x the CPU those took (the horizon, taken from them, is not known yet); and
    ``max_trials`` (the search's own budget) for both.
    """

    dataset: str
    method: str
    seed: int
    epochs: int
    teacher: str
    max_trials: int
    cpu_limit: float | None = None
    reference_trials: int | None = None
    extend: float = 1.0

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.method}/{self.seed}"


class StopSearch(Exception):
    """Raised from the progress callback once a stop rule holds (the study keeps every trial)."""


class Tracker:
    """Clocks a search from ``start`` and turns each finished trial into one event row."""

    def __init__(self, cell: Cell) -> None:
        self.cell, self.events, self.stopped = cell, [], "budget"
        self.t0 = (time.process_time(), time.perf_counter())
        self.setup = (0.0, 0.0)
        self.counted, self.reference_cpu = 0, None

    def start(self, *_: Any) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        self.setup = (cpu - self.t0[0], wall - self.t0[1])
        self.t0 = (cpu, wall)

    def elapsed(self) -> tuple[float, float]:
        return time.process_time() - self.t0[0], time.perf_counter() - self.t0[1]

    def progress(self, p: Progress) -> None:
        self.trial_done(p.last)

    def trial_done(self, t: FrozenTrial) -> None:
        cpu, wall = self.elapsed()
        rec = TrialRecord.of(t)
        state = {TrialState.COMPLETE: "C", TrialState.PRUNED: "P"}.get(t.state, "F")
        if rec.infeasible:
            state = "I"
        self.events.append([t.number, state, _r(rec.val_accuracy), _r(rec.test_accuracy),
                            rec.flops, _r(cpu, 3), _r(wall, 3), _r(rec.cpu_seconds, 3),
                            _r(rec.wall_seconds, 3)])
        self.counted += state in ("C", "P")
        reason = self._stop_reason(cpu)
        if reason is not None:
            self.stopped = reason
            raise StopSearch(reason)

    def _stop_reason(self, cpu: float) -> str | None:
        c = self.cell
        if c.reference_trials is not None and self.counted == c.reference_trials:
            self.reference_cpu = cpu
        if self.reference_cpu is not None and cpu >= c.extend * self.reference_cpu:
            return f"cpu >= {c.extend:g} x the {c.reference_trials}-trial cpu"
        if c.cpu_limit is not None and cpu >= c.cpu_limit:
            return f"cpu >= {c.cpu_limit:.1f} s"
        return None


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def _settings(cell: Cell, pareto_pruning: bool = True) -> SearchSettings:
    return SearchSettings(
        epochs=cell.epochs, keep_weights=False, pareto_pruning=pareto_pruning,
        cost=dataclasses.replace(CostConfig.for_search(), latency=False),
        train=TrainConfig(threads=1, seed=cell.seed, device="cpu"))


def run_cell(cell: Cell) -> dict[str, Any]:
    """Run one cell in this (worker) process; errors come back as text, not exceptions."""
    set_threads(1)
    tracker = Tracker(cell)
    root = Path(tempfile.mkdtemp(prefix="autokd-eff-", dir=_fast_tmp()))
    out: dict[str, Any] = {"key": cell.key, "cell": dataclasses.asdict(cell)}
    try:
        if METHODS[cell.method].strategy == "sweep":
            out["scale"] = None
            _run_sweep(cell, tracker)
        else:
            out["scale"] = _run_search(cell, tracker, root)
    except Exception:  # noqa: BLE001  (one broken cell must not sink the others)
        out["error"] = traceback.format_exc(limit=6)[-1500:]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    cpu, wall = tracker.elapsed()
    return out | {"events": tracker.events, "stopped": tracker.stopped, "cpu_s": _r(cpu, 3),
                  "wall_s": _r(wall, 3), "setup_cpu_s": _r(tracker.setup[0], 3),
                  "setup_wall_s": _r(tracker.setup[1], 3), "loadavg": list(os.getloadavg()),
                  "pid": os.getpid()}


def _fast_tmp() -> str | None:
    """``/dev/shm`` when writable: the disk under SQLite should not enter the CPU times."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _run_search(cell: Cell, tracker: Tracker, root: Path) -> dict[str, Any] | None:
    m = METHODS[cell.method]
    cfg = SearchConfig(data=DataConfig(source=cell.dataset), teacher=[cell.teacher],
                       budget=cell.max_trials, strategy=m.strategy, sampler=m.sampler,
                       tuner=m.tuner, settings=_settings(cell), name=cell.key.replace("/", "-"),
                       results=str(root), seed=cell.seed, device="cpu", jobs=1)
    holder: dict[str, Any] = {}

    def ready(outcome: Any) -> None:
        holder["study"] = outcome.study
        tracker.start()

    try:
        run_search(cfg, progress=tracker.progress, on_ready=ready)
    except StopSearch:
        pass
    study = holder.get("study")
    return SearchRecord.of(study).scale if study is not None else None


def sweep_widths(space: SearchSpace, points: int = SWEEP_POINTS) -> list[int]:
    """``points`` widths spread evenly (by index, so roughly geometrically) over the space's
    width choices, smallest to largest: what a user sweeping one knob would try."""
    choices = sorted(next(p.choices for p in space.params if p.name == "widths"))
    if len(choices) <= points:
        return list(choices)
    step = (len(choices) - 1) / (points - 1)
    return [choices[round(i * step)] for i in range(points)]


def _run_sweep(cell: Cell, tracker: Tracker) -> None:
    """The hand sweep: the family's default student at each width, the default KD recipe and
    training settings, the same epochs and seeds as a search's trials, through the same
    ``Objective`` (no early stopping: a hand-written loop has none)."""
    data = load_data(DataConfig(source=cell.dataset))
    space = load_space(default_space_name(data))
    teacher = load_teacher(cell.teacher, data=data)
    settings = _settings(cell, pareto_pruning=False)
    profile = teacher_profile(teacher, data, CostConfig(latency=False))
    objective = Objective(space, data, teacher, settings, None, profile, strategy="sweep")
    study = optuna.create_study(directions=settings.directions)
    tracker.start()
    for width in sweep_widths(space)[: cell.max_trials]:
        trial = study.ask()
        cand = Candidate(space.family, {"widths": width}, KDConfig(), {})
        try:
            study.tell(trial, objective.evaluate(trial, cand))
        except Exception:  # noqa: BLE001  (recorded by the Objective; the sweep goes on)
            study.tell(trial, state=TrialState.FAIL)
        try:
            tracker.trial_done(study.trials[trial.number])
        except StopSearch:  # the cell's CPU cap: a finished sweep, as for a search
            return
