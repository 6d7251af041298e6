"""The default controller: Optuna samplers (TPE, NSGA-II, GP, random) and pruners.

Each trial is claimed with ``BaseController.next_trial`` (the budget is re-read from the storage
before every trial, other workers' finished and in-flight trials count) and run with heartbeats by
``run_trial``, so Ctrl-C or a killed worker loses nothing. Trials set Optuna constraints
(``Trial.set_constraint``), which the TPE, NSGA-II and GP samplers read, so the sampler learns
where the infeasible region is.
"""

from __future__ import annotations

import logging
import warnings
import zlib
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from autokd.controllers.base import BaseController, Budget, ProgressFn
from autokd.errors import ConfigError
from autokd.objective import Objective
from autokd.record import TrialRecord
from autokd.registry import Registry

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "OptunaController",
    "create_pruner",
    "create_sampler",
    "make_controller",
    "open_for_search",
    "sampler_seed",
]

logger = logging.getLogger(__name__)
SamplerFactory = Callable[[int | None, bool], optuna.samplers.BaseSampler]
SAMPLERS: Registry[SamplerFactory] = Registry("sampler")
PRUNERS: Registry[Callable[[], optuna.pruners.BasePruner]] = Registry("pruner")


def _quiet(factory: Callable[[], optuna.samplers.BaseSampler]) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # multivariate/group are "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return factory()


@SAMPLERS.register("tpe")
def _tpe(seed: int | None, multi: bool) -> optuna.samplers.BaseSampler:
    return _quiet(lambda: optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True,
        n_startup_trials=8))


@SAMPLERS.register("nsga2")
def _nsga2(seed: int | None, multi: bool) -> optuna.samplers.BaseSampler:
    return _quiet(lambda: optuna.samplers.NSGAIISampler(
        seed=seed, population_size=10))


@SAMPLERS.register("gp")
def _gp(seed: int | None, multi: bool) -> optuna.samplers.BaseSampler:
    return _quiet(lambda: optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=8))


@SAMPLERS.register("random")
def _random(seed: int | None, multi: bool) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


PRUNERS.register("none", optuna.pruners.NopPruner)
PRUNERS.register("median", lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5))
PRUNERS.register("hyperband", lambda: optuna.pruners.HyperbandPruner(min_resource=5))


def sampler_seed(name: str, seed: int | None) -> int | None:
    """The seed a sampler is built with: a stable hash of (``seed``, sampler name).

    Why: TPE's and GP's start-up trials are drawn by a random sampler seeded like the random
    sampler itself, so with one shared seed every sampler drew the same first trials and
    comparisons of samplers were not independent. CRC-32 (not ``hash``, which is salted per
    process) keeps a search reproducible under its ``--seed``; ``None`` stays unseeded.
    """
    if seed is None:
        return None
    return zlib.crc32(f"{name}:{int(seed)}".encode()) & 0x7FFFFFFF


def create_sampler(name: str, seed: int | None, multi: bool) -> optuna.samplers.BaseSampler:
    """The registered sampler ``name``, seeded by ``sampler_seed(name, seed)``."""
    factory = SAMPLERS.get(name)
    return factory(sampler_seed(name, seed), multi)


def create_pruner(name: str) -> optuna.pruners.BasePruner:
    return PRUNERS.get(name)()


class OptunaController(BaseController):
    """Ask Optuna for candidates until the budget (counted in the storage) is spent."""

    def __init__(self, study: optuna.Study, objective: Objective, budget: Budget,
                 progress: ProgressFn | None = None) -> None:
        super().__init__(study, budget, progress)
        self.objective = objective

    def _run(self) -> None:
        while (trial := self.next_trial()) is not None:
            self.run_trial(trial, self.objective)
            trials = self.study.get_trials(deepcopy=False)  # one read for both checks
            self._after_trial(trials)
            self.check_failures(trials)

    def _after_trial(self, trials: list[Any] | None = None) -> None:
        """Log a failure and show progress after a trial (``trials``: just read, if known)."""
        trials = self.study.get_trials(deepcopy=False) if trials is None else trials
        last = max((t for t in trials if t.state.is_finished()), key=lambda t: t.number, default=None)
        if last is None:
            return
        if last.state == TrialState.FAIL:
            logger.warning("trial %d failed: %s", last.number, TrialRecord.of(last).fail_reason)
        self.report(last)


def open_for_search(name: str, url: str, cfg: Any, settings: Any) -> optuna.Study:
    """Create or resume the study with this controller's sampler and pruner."""
    from autokd.study import open_study

    multi = len(settings.directions) > 1
    if multi and cfg.pruner != "none":
        raise ConfigError("Optuna's pruners need a single objective (use --score), or keep "
                          "--pruner none: multi-objective searches stop hopeless trials with "
                          "the Pareto rule instead")
    sampler = create_sampler(cfg.sampler, cfg.seed, multi)
    return open_study(name, url, directions=settings.directions, sampler=sampler,
                      pruner=create_pruner(cfg.pruner))


def make_controller(study: optuna.Study, objective: Objective, budget: Budget,
                    progress: ProgressFn | None, cfg: Any) -> OptunaController:
    return OptunaController(study, objective, budget, progress)
