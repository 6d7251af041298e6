"""What every controller shares: the search request, budget accounting and the run lifecycle.

Subclasses implement ``_run`` (ask for candidates, tell results into the study); ``run`` checks
state, always calls ``_cleanup`` (write tables, drop non-front weights), and never loses a
finished trial: every trial is written to the Optuna storage the moment it ends.
"""

from __future__ import annotations

import abc
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autokd.controllers.distributed import ask_trial, run_trial, study_lock, sweep_stale
from autokd.errors import ConfigError, StudyError

__all__ = ["Budget", "parse_budget", "Progress", "BaseController", "count_done"]

logger = logging.getLogger(__name__)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h)$")


@dataclass(frozen=True)
class Budget:
    """A number of finished trials (counted in the storage), or wall time."""

    trials: int | None = None
    seconds: float | None = None

    def __str__(self) -> str:
        return f"{self.trials} trials" if self.trials is not None else f"{self.seconds:g} s"


def parse_budget(text: str | int) -> Budget:
    """``40`` -> 40 trials; ``15m`` / ``2h`` / ``90s`` -> wall time."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 1:
            raise ConfigError(f"budget must be >= 1, got {text}")
        return Budget(trials=text)
    s = str(text).strip().lower()
    if s.isdigit():
        return parse_budget(int(s))
    m = _DURATION.match(s)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"bad budget {text!r}: use a trial count (40) or a time (90s, 15m, 2h)")
    return Budget(seconds=float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)])


def count_done(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> int:
    """Finished trials that count towards the budget: trained (complete or pruned)."""
    n = 0
    for t in study.get_trials(deepcopy=False) if trials is None else trials:
        trained = t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        if trained and not t.user_attrs.get("infeasible"):
            n += 1
    return n


@dataclass
class Progress:
    """What the CLI shows after each trial."""

    done: int
    budget: Budget
    elapsed: float
    eta: float | None
    last: FrozenTrial
    best: dict[str, float] = field(default_factory=dict)
    front_size: int = 0


ProgressFn = Callable[[Progress], None]


class BaseController(abc.ABC):
    """Run a search into an existing study; subclasses implement ``_run``."""

    max_initial_failures = 5
    max_infeasible_factor = 50
    poll_seconds = 2.0  # how often a waiting worker re-checks the budget

    def __init__(self, study: optuna.Study, budget: Budget, progress: ProgressFn | None = None) -> None:
        self.study, self.budget, self.progress = study, budget, progress
        self.started = time.monotonic()
        self._done_at_start = count_done(study)
        self._ran = False

    def run(self) -> optuna.Study:
        if self._ran:
            raise StudyError("a controller runs once; create a new one to continue")
        self._ran = True
        try:
            self._run()
        finally:
            self._cleanup()
        return self.study

    @abc.abstractmethod
    def _run(self) -> None:
        """Ask, evaluate and tell until ``budget_left()`` is False."""

    def _cleanup(self) -> None:
        """Hook for subclasses; the default has nothing to release."""

    # -- budget -------------------------------------------------------------------------------
    def budget_left(self) -> bool:
        if self.budget.seconds is not None:
            return time.monotonic() - self.started < self.budget.seconds
        return count_done(self.study) < (self.budget.trials or 0)

    def next_trial(self) -> optuna.Trial | None:
        """Claim a new trial while the budget has room; None once it is spent.

        Why under the study lock: workers sharing the study count finished plus in-flight trials
        and claim in one step, so the total never exceeds the budget. While others' in-flight
        trials fill it, wait: one may fail or die and need a retry, which this worker then runs.
        """
        while self.budget_left():
            with study_lock(self.study):
                sweep_stale(self.study)
                if self._slot_free():
                    return ask_trial(self.study)
            logger.info("budget filled by trials in flight elsewhere; waiting for them")
            time.sleep(self.poll_seconds)
        return None

    def _slot_free(self) -> bool:
        if self.budget.trials is None:
            return True
        trials = self.study.get_trials(deepcopy=False)  # one read: done and running agree
        running = sum(1 for t in trials if t.state == TrialState.RUNNING)
        return count_done(self.study, trials) + running < self.budget.trials

    def run_trial(self, trial: optuna.Trial,
                  fn: Callable[[optuna.Trial], Any]) -> FrozenTrial | None:
        """Evaluate and tell one claimed trial (heartbeats, pruning, failures, interrupts)."""
        return run_trial(self.study, trial, fn)

    def check_failures(self) -> None:
        """Stop when every early trial failed (the same cause would fail all of them)."""
        trials = self.study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state.is_finished()]
        if len(finished) < self.max_initial_failures:
            return
        if all(t.state == TrialState.FAIL for t in finished):
            reasons = Counter(t.user_attrs.get("fail_reason", "unknown") for t in finished)
            reason, count = reasons.most_common(1)[0]
            raise StudyError(f"all {len(finished)} trials failed so far (most common reason, "
                             f"{count}x: {reason}); fix that and resume")
        infeasible = sum(1 for t in finished if t.user_attrs.get("infeasible"))
        limit = self.max_infeasible_factor * max(10, self.budget.trials or 10)
        if infeasible >= limit and count_done(self.study) == 0:
            raise StudyError(f"{infeasible} candidates violated the constraints and none was "
                             "feasible: the limits are too tight for this search space")

    def report(self, trial: FrozenTrial, front_size: int, best: dict[str, float]) -> None:
        if self.progress is None:
            return
        done = count_done(self.study)
        elapsed = time.monotonic() - self.started
        ran = done - self._done_at_start
        eta = None
        if self.budget.seconds is not None:
            eta = max(0.0, self.budget.seconds - elapsed)
        elif ran > 0:
            eta = elapsed / ran * max(0, (self.budget.trials or 0) - done)
        self.progress(Progress(done, self.budget, elapsed, eta, trial, best, front_size))

