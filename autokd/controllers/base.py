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
from autokd.front import best_values, pareto_front
from autokd.record import SearchRecord, TrialRecord, budget_used, count_done
from autokd.scale import study_scale

__all__ = ["BaseController", "Budget", "Progress", "count_done", "parse_budget"]

logger = logging.getLogger(__name__)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h)$")


@dataclass(frozen=True)
class Budget:
    """A number of finished trials (counted in the storage, in full trainings: an ASHA rung
    counts its share, see ``autokd.record.trial_share``), or wall time."""

    trials: int | None = None
    seconds: float | None = None

    def __str__(self) -> str:
        return f"{self.trials} trials" if self.trials is not None else f"{self.seconds:g} s"

    def spent(self, study: optuna.Study, elapsed: float = 0.0) -> bool:
        """Whether the budget is used up ``elapsed`` seconds after it started (the one check
        every controller, worker and monitor makes)."""
        if self.seconds is not None:
            return elapsed >= self.seconds
        return budget_used(study) >= (self.trials or 0)

    def eta(self, done: float, done_at_start: float, elapsed: float) -> float | None:
        """Seconds left: the clock for a time budget, the pace so far for trials."""
        if self.seconds is not None:
            return max(0.0, self.seconds - elapsed)
        ran = done - done_at_start
        return elapsed / ran * max(0, (self.trials or 0) - done) if ran > 0 else None


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


@dataclass
class Progress:
    """What the CLI shows after each trial."""

    done: float  # full trainings so far (see Budget)
    budget: Budget
    elapsed: float
    eta: float | None
    last: FrozenTrial
    best: dict[str, float] = field(default_factory=dict)
    front_size: int = 0
    hypervolume: float | None = None  # of the front, on the study's recorded scale

    @classmethod
    def of(cls, study: optuna.Study, trial: FrozenTrial, budget: Budget, elapsed: float,
           done_at_start: float) -> Progress:
        """The progress line after ``trial``, for a controller or a pool of workers alike."""
        done = budget_used(study)
        front = pareto_front(study)
        record = SearchRecord.of(study)
        best = best_values(study, record.objectives, front)
        hv = None
        if record.scale and front and "score" not in record.objectives:
            names = record.objectives
            hv = study_scale(study, names, [t.values for t in front]).hypervolume(
                [t.values for t in front], names)
        return cls(done, budget, elapsed, budget.eta(done, done_at_start, elapsed), trial, best,
                   len(front), hv)


ProgressFn = Callable[[Progress], None]


class BaseController(abc.ABC):
    """Run a search into an existing study; subclasses implement ``_run``."""

    max_initial_failures = 5
    max_infeasible_factor = 50
    poll_seconds = 2.0  # how often a waiting worker re-checks the budget

    def __init__(self, study: optuna.Study, budget: Budget, progress: ProgressFn | None = None) -> None:
        self.study, self.budget, self.progress = study, budget, progress
        self.started = time.monotonic()
        self._done_at_start = budget_used(study)
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
        return not self.budget.spent(self.study, time.monotonic() - self.started)

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
                    return self._ask()
            logger.info("budget filled by trials in flight elsewhere; waiting for them")
            time.sleep(self.poll_seconds)
        return None

    def _ask(self) -> optuna.Trial:
        """Claim the next trial; called under the study lock once a slot is free."""
        return ask_trial(self.study)

    def _slot_free(self) -> bool:
        if self.budget.trials is None:
            return True
        trials = self.study.get_trials(deepcopy=False)  # one read: done and running agree
        return budget_used(self.study, trials, running=True) < self.budget.trials

    def run_trial(self, trial: optuna.Trial,
                  fn: Callable[[optuna.Trial], Any]) -> FrozenTrial | None:
        """Evaluate and tell one claimed trial (heartbeats, pruning, failures, interrupts)."""
        return run_trial(self.study, trial, fn)

    def check_failures(self, trials: list[FrozenTrial] | None = None) -> None:
        """Stop when every early trial failed (the same cause would fail all of them);
        ``trials``: the study's trials just read, if the caller has them."""
        trials = self.study.get_trials(deepcopy=False) if trials is None else trials
        finished = [t for t in trials if t.state.is_finished()]
        if len(finished) < self.max_initial_failures:
            return
        if all(t.state == TrialState.FAIL for t in finished):
            reasons = Counter(TrialRecord.of(t).fail_reason or "unknown" for t in finished)
            reason, count = reasons.most_common(1)[0]
            raise StudyError(f"all {len(finished)} trials failed so far (most common reason, "
                             f"{count}x: {reason}); fix that and resume")
        infeasible = sum(1 for t in finished if TrialRecord.of(t).infeasible)
        limit = self.max_infeasible_factor * max(10, self.budget.trials or 10)
        if infeasible >= limit and count_done(self.study, trials) == 0:
            raise StudyError(f"{infeasible} candidates violated the constraints and none was "
                             "feasible: the limits are too tight for this search space")

    def report(self, trial: FrozenTrial) -> None:
        """Show the progress line after ``trial`` (no-op without a progress callback)."""
        if self.progress is not None:
            self.progress(Progress.of(self.study, trial, self.budget,
                                      time.monotonic() - self.started, self._done_at_start))

