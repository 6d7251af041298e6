"""N local ``autokd worker`` processes on one study (``--jobs N``), shown as one progress stream.

Children get ``cores // N`` torch threads each and the storage URL in ``AUTOKD_STORAGE`` (never
on a command line, where ``ps`` would show credentials); their output goes to
results/<name>/workers/<i>.log. The default SQLite file is safe for several writers (WAL
journal, 30 s busy timeout, claims serialised by a file lock; see tests/test_distributed.py).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna

from autokd.artifacts import store_location
from autokd.config import SearchConfig
from autokd.controllers.base import Budget, Progress, ProgressFn
from autokd.errors import StudyError
from autokd.record import budget_used
from autokd.study import StudyPaths

__all__ = ["run_pool", "search_worker_args", "worker_threads"]

logger = logging.getLogger(__name__)


def worker_threads(jobs: int, cores: int | None = None) -> int:
    """Torch threads per local worker so that ``jobs x threads <= cores``."""
    cores = cores or len(os.sched_getaffinity(0))
    return max(1, cores // max(1, jobs))


def search_worker_args(cfg: SearchConfig, paths: StudyPaths) -> list[str]:
    """``autokd worker`` options that make a local worker match ``cfg`` (``--jobs``)."""
    args = ["--results", str(cfg.results), "--artifacts", store_location(cfg.artifacts, paths),
            "--device", cfg.device]
    return args + (["--trust"] if cfg.trust else [])


@dataclass
class _Child:
    index: int
    log: Path
    proc: subprocess.Popen[bytes]
    restarts: int = 0


def run_pool(study: optuna.Study, paths: StudyPaths, url: str, jobs: int, worker_args: list[str],
             progress: ProgressFn | None = None, budget: Budget | None = None,
             seed: int = 0) -> None:
    """Run ``jobs`` ``autokd worker`` processes on this machine until the budget is spent.

    A child killed by a signal is restarted (its trial is retried through the heartbeat sweep);
    one that exits with an error is not, and if no child finishes the budget, the first error
    is raised.
    """
    threads = worker_threads(jobs)
    if jobs > len(os.sched_getaffinity(0)):
        logger.warning("%d jobs on %d cores: each worker gets 1 thread and they share cores",
                       jobs, len(os.sched_getaffinity(0)))
    env = {**os.environ, "AUTOKD_STORAGE": url, "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    (paths.root / "workers").mkdir(parents=True, exist_ok=True)

    def spawn(i: int) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "autokd", "worker", study.study_name, *worker_args,
               "--threads", str(threads), "--seed", str(seed + i), "--quiet"]
        with open(paths.root / "workers" / f"{i}.log", "ab") as log:
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    children = [_Child(i, paths.root / "workers" / f"{i}.log", spawn(i)) for i in range(jobs)]
    monitor = _Monitor(study, budget or Budget(), progress)
    try:
        _supervise(children, spawn, monitor)
    except KeyboardInterrupt:
        _stop(children)
        raise
    monitor.poll()
    _check_children(children, study, budget)


def _supervise(children: list[_Child], spawn: Callable[[int], subprocess.Popen[bytes]],
               monitor: _Monitor) -> None:
    while any(c.proc.poll() is None for c in children):
        time.sleep(1.0)
        monitor.poll()
        for c in children:
            rc = c.proc.poll()
            if rc is not None and rc < 0 and c.restarts < 3 and not monitor.spent():
                logger.warning("worker %d was killed (signal %d); restarting it", c.index, -rc)
                c.proc, c.restarts = spawn(c.index), c.restarts + 1


def _stop(children: list[_Child], grace: float = 30.0) -> None:
    """Ctrl-C: workers fail their trial as interrupted and re-queue it; give them time to."""
    deadline = time.monotonic() + 3.0  # a terminal's Ctrl-C reached them already
    for sig in (signal.SIGINT, signal.SIGKILL):
        for c in children:
            while c.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if c.proc.poll() is None:
                c.proc.send_signal(sig)
        deadline = time.monotonic() + grace
    for c in children:
        c.proc.wait()


def _check_children(children: list[_Child], study: optuna.Study, budget: Budget | None) -> None:
    failed = [c for c in children if c.proc.returncode not in (0, None)]
    if not failed:
        return
    if budget is not None and budget.trials is not None and budget_used(study) >= budget.trials:
        return
    c = failed[0]
    raise StudyError(f"{len(failed)} of {len(children)} workers failed; worker {c.index} "
                     f"(exit {c.proc.returncode}): {_last_line(c.log)} (log: {c.log})")


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    return lines[-1][:300] if lines else "no output"


class _Monitor:
    """Turns trials finished by any worker into the same progress lines a single search shows."""

    def __init__(self, study: optuna.Study, budget: Budget,
                 progress: ProgressFn | None) -> None:
        self.study, self.budget, self.progress = study, budget, progress
        self.started = time.monotonic()
        self.seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        self.done_at_start = budget_used(study)

    def spent(self) -> bool:
        return self.budget.spent(self.study, time.monotonic() - self.started)

    def poll(self) -> None:
        new = [t for t in self.study.get_trials(deepcopy=False)
               if t.state.is_finished() and t.number not in self.seen]
        for t in sorted(new, key=lambda t: t.datetime_complete or t.datetime_start):
            self.seen.add(t.number)
            if self.progress is not None:
                self.progress(Progress.of(self.study, t, self.budget,
                                          time.monotonic() - self.started, self.done_at_start))
