"""``--strategy asha``: multi-objective asynchronous successive halving (MO-ASHA).

Trials cost very different amounts, so most candidates should be judged on a few epochs and
only the promising ones trained on. ASHA (Li et al. 2020) does that without synchronisation
barriers; MO-ASHA (Schmucker et al. 2021) ranks a rung by non-dominated sorting, so "promising"
means near the accuracy/cost front rather than best on one number.

* **Rungs.** A candidate's full run is its ``R`` epochs (``--epochs``, else the space's). Rung
  ``k`` trains it to ``min(R, r * eta**k)`` epochs in all; ``r`` is ``--asha-min-epochs``
  (default ``R / eta**2``, so about three rungs) and ``eta`` is ``--asha-eta`` (default 3).
* **Promotion.** Whenever a worker needs work it looks from the top rung down: among the
  candidates that completed rung ``k``, the top ``floor(n_k / eta)`` by Pareto layer (ties by
  NSGA-II crowding distance) that are not yet promoted and not yet at ``R`` are promotable; it
  promotes one, else the study's sampler (``--sampler``) proposes a new candidate at rung 0.
  Cost objectives are fixed per architecture; accuracy is the best validation accuracy so far.
  Infeasible and failed trials are never promoted.
* **One trial per rung evaluation.** Every result is told to the study at once (Optuna's
  ``trial.report`` refuses multi-objective studies, so promotion lives here). A promotion is a
  new trial with its parent's params (``enqueue_trial`` + ``ask`` under the study lock, so two
  workers never promote the same parent: a parent with a child in any state is promoted);
  its record carries ``rung``, ``resumed_from`` and ``epochs_total``.
* **Resume, not restart.** A rung below ``R`` saves its full training state; the promoted trial
  continues it (identical to training straight through, since the schedules span ``R``) and its
  ``train_seconds`` cover only the increment. A worker that cannot get the state (another
  machine, no shared artifact store) trains the candidate from scratch to the rung's epochs
  with the same seed and records why (``resume_fallback``).
* **Budget and clean-up.** ``--budget N`` counts full trainings: a rung counts the epochs it
  trained over the candidate's full epochs (``autokd.record.trial_share``), so N buys about
  the training of N plain trials; time budgets work as for other strategies. A state is
  deleted once a complete continuation supersedes it (the superseded trial also leaves the
  front, see ``autokd.front``), and all are deleted when the budget is spent.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autokd.artifacts import store_location
from autokd.config import SearchSettings
from autokd.controllers._asha_trial import RungObjective, RungPlan, StateStore
from autokd.controllers.base import Budget, ProgressFn
from autokd.controllers.distributed import ask_trial
from autokd.controllers.optuna_search import OptunaController, create_sampler
from autokd.errors import ConfigError, SpaceError
from autokd.objective import Objective
from autokd.pareto import as_losses, rank_order
from autokd.record import RECORD_ATTR, SearchRecord, TrialLog, TrialRecord, feasible, recorded

__all__ = ["AshaController", "AshaOptions", "RungResult", "make_controller", "open_for_search",
           "promotable", "read_rungs"]

logger = logging.getLogger(__name__)
_FLAGS = {"eta": "--asha-eta", "min_epochs": "--asha-min-epochs"}


@dataclass(frozen=True)
class AshaOptions:
    """The rung schedule: reduction factor ``eta`` and the first rung's epochs."""

    eta: int = 3
    min_epochs: int | None = None  # None: R / eta**2 per candidate (about three rungs)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> AshaOptions:
        raw = dict(raw or {})
        unknown = sorted(set(raw) - set(_FLAGS))
        if unknown:
            raise ConfigError(f"unknown asha option(s) {unknown}; known: {', '.join(_FLAGS)}")
        opts = cls(**raw)
        if not isinstance(opts.eta, int) or isinstance(opts.eta, bool) or opts.eta < 2:
            raise ConfigError(f"--asha-eta must be an integer >= 2, got {opts.eta!r}")
        if opts.min_epochs is not None and (not isinstance(opts.min_epochs, int)
                                            or opts.min_epochs < 1):
            raise ConfigError(f"--asha-min-epochs must be an integer >= 1, got "
                              f"{opts.min_epochs!r}")
        return opts

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        return " ".join(f"{_FLAGS[k]} {v}" for k, v in self.to_dict().items() if v is not None)

    def first_epochs(self, max_epochs: int) -> int:
        r = self.min_epochs or max(1, round(max_epochs / self.eta ** 2))
        return min(max_epochs, r)

    def rung_epochs(self, max_epochs: int, rung: int) -> int:
        """Epochs trained in all by the end of ``rung`` for a candidate of ``max_epochs``."""
        return min(max_epochs, self.first_epochs(max_epochs) * self.eta ** rung)

    def schedule(self, max_epochs: int) -> list[int]:
        """Epochs of every rung, the last one the full run: ``[1, 3, 9]`` for 9 and eta 3."""
        out = [self.rung_epochs(max_epochs, 0)]
        while out[-1] < max_epochs:
            out.append(self.rung_epochs(max_epochs, len(out)))
        return out


# -- the promotion rule ------------------------------------------------------------------------
@dataclass(frozen=True)
class RungResult:
    """A complete, feasible rung evaluation: what promotion ranks."""

    number: int
    rung: int
    values: tuple[float, ...]
    final: bool = False  # trained its full epochs: there is no rung above


def promotable(results: Sequence[RungResult], promoted: set[int], directions: Sequence[str],
               eta: int) -> RungResult | None:
    """The result to promote next, looking from the top rung down; None: start a new one.

    At rung k with ``n_k`` results, the top ``floor(n_k / eta)`` by non-dominated sorting
    (Pareto layer, then crowding distance) are promotable unless already promoted or final.
    """
    by_rung: dict[int, list[RungResult]] = defaultdict(list)
    for r in results:
        by_rung[r.rung].append(r)
    for rung in sorted(by_rung, reverse=True):
        done = by_rung[rung]
        top = len(done) // eta
        if top == 0:
            continue
        order = rank_order(as_losses([r.values for r in done], directions))
        for i in order[:top]:
            if done[i].number not in promoted and not done[i].final:
                return done[i]
    return None


def read_rungs(trials: Sequence[FrozenTrial]) -> tuple[list[RungResult], set[int]]:
    """Rung results of a study's trials, and the trials already promoted.

    A trial counts as promoted once any trial (waiting, running, finished, failed) names it in
    ``resumed_from``: a failed continuation is not promoted again, a killed one is retried.
    """
    results, promoted = [], set()
    for t in trials:
        rung = recorded(t, "rung")
        if rung is None:
            continue
        parent = recorded(t, "resumed_from")
        if parent is not None:
            promoted.add(int(parent))
        if t.state != TrialState.COMPLETE or t.values is None or recorded(t, "infeasible"):
            continue
        if not feasible(t) or not all(math.isfinite(v) for v in t.values):
            continue
        epochs, horizon = recorded(t, "epochs_total"), recorded(t, "schedule_epochs")
        final = epochs is None or horizon is None or epochs >= horizon
        results.append(RungResult(t.number, int(rung), tuple(t.values), final))
    return results, promoted


# -- the controller ----------------------------------------------------------------------------
class AshaController(OptunaController):
    """Promote by non-dominated sorting at each rung; otherwise sample a new candidate."""

    def __init__(self, study: optuna.Study, objective: Objective, budget: Budget,
                 progress: ProgressFn | None, options: AshaOptions,
                 store: str | None = None) -> None:
        if objective.paths is None:
            raise ConfigError("--strategy asha keeps training states in the study's results "
                              "folder; give the objective its StudyPaths")
        self.states = StateStore(study, objective.paths, store)
        super().__init__(study, RungObjective.adopt(objective, self.states), budget, progress)
        self.objective: RungObjective
        self.options = options
        self.settings: SearchSettings = self.objective.settings
        self.directions = [d.name for d in study.directions]
        self._cleaned: set[int] = set()

    def _run(self) -> None:
        while (trial := self.next_trial()) is not None:
            self.run_trial(trial, self._evaluate)
            self._after_trial()
            self._sweep(final=not self.budget_left())
            self.check_failures()

    def _cleanup(self) -> None:
        try:
            self._sweep(final=not self.budget_left())
        except Exception as exc:  # noqa: BLE001 - never hide what ended the run
            logger.warning("training states not cleaned up: %s", exc)

    # -- claiming: a promotion or a new candidate (under the study lock) ----------------------
    def _ask(self) -> optuna.Trial:
        trials = self.study.get_trials(deepcopy=False)
        results, promoted = read_rungs(trials)
        pick = promotable(results, promoted, self.directions, self.options.eta)
        if pick is not None:
            attrs = {RECORD_ATTR: {"rung": pick.rung + 1, "resumed_from": pick.number}}
            self.study.enqueue_trial(trials[pick.number].params, user_attrs=attrs)
        trial = ask_trial(self.study)
        if self._label(trial, trials) is not None:
            # pin the parent's params in the storage now: a worker killed before training must
            # leave a trial its retry can rebuild (retries re-queue recorded params)
            try:
                self.objective.space.sample(trial)
            except SpaceError as exc:  # the space changed since: the trial fails when it runs
                logger.warning("trial %d: %s", trial.number, exc)
        return trial

    def _label(self, trial: optuna.Trial, trials: Sequence[FrozenTrial]) -> int | None:
        """Record a claimed trial's rung at once and return the trial it continues: a new
        candidate is rung 0, a retry of a killed trial (queued with ``retry_of`` only)
        continues what that trial continued."""
        rec = TrialRecord.of(trial)
        if rec.rung is not None:
            return rec.resumed_from
        rung, parent = 0, None
        if rec.retry_of is not None and int(rec.retry_of) < len(trials):
            original = TrialRecord.of(trials[int(rec.retry_of)])
            rung, parent = original.rung or 0, original.resumed_from
        TrialLog(trial).flush(rung=rung, resumed_from=parent)
        return parent

    # -- one rung evaluation ------------------------------------------------------------------
    def _evaluate(self, trial: optuna.Trial) -> Any:
        rec = TrialRecord.of(trial)
        cand = self.objective.space.sample(trial)
        horizon = self.objective.max_epochs(cand)
        rung = int(rec.rung or 0)
        plan = RungPlan(rung, self.options.rung_epochs(horizon, rung), horizon,
                        seed=self.objective.trial_seed(trial))
        if rec.resumed_from is not None:
            parent = self.study.get_trials(deepcopy=False)[int(rec.resumed_from)]
            plan.parent = parent.number
            seed = TrialRecord.of(parent).seed
            plan.seed = int(seed) if seed is not None else plan.seed
            plan.state, plan.fallback = self.states.load(parent, horizon, plan.epochs)
            if plan.fallback:
                logger.warning("trial %d trains from scratch to %d epochs: %s", trial.number,
                               plan.epochs, plan.fallback)
        return self.objective.evaluate_rung(trial, cand, plan)

    # -- clean-up -----------------------------------------------------------------------------
    def _sweep(self, final: bool) -> None:
        """Delete training states nobody will continue: superseded by a complete continuation
        (its student folder too: it has left the front), of a failed trial, or all of them once
        the budget is spent."""
        trials = self.study.get_trials(deepcopy=False)
        continued = {recorded(t, "resumed_from") for t in trials
                     if t.state == TrialState.COMPLETE} - {None}
        for t in trials:
            if t.number in self._cleaned or not t.state.is_finished():
                continue
            if recorded(t, "rung") is None:
                continue
            superseded = t.number in continued
            if superseded or final or t.state != TrialState.COMPLETE:
                self.states.remove(t, whole_folder=superseded)
                self._cleaned.add(t.number)


# -- strategy entry points (see autokd.controllers.STRATEGIES) ---------------------------------
def _options_for(study: optuna.Study, given: dict[str, Any]) -> AshaOptions:
    """A resumed study keeps the options it ran with; different ones given again are refused."""
    mine = AshaOptions.from_dict(given)
    record = SearchRecord.of(study)
    if not (record.exists and record.strategy == "asha" and record.strategy_options):
        return mine
    recorded_opts = AshaOptions.from_dict(record.strategy_options)
    if any(getattr(recorded_opts, k) != v for k, v in given.items()):
        raise ConfigError(f"study {study.study_name!r} runs asha with "
                          f"{recorded_opts.describe()}; resume it with the same options "
                          "(or use another --name)")
    return recorded_opts


def open_for_search(name: str, url: str, cfg: Any, settings: SearchSettings) -> optuna.Study:
    """Create or resume the study with the sampler that proposes new candidates."""
    from autokd.study import open_study

    AshaOptions.from_dict(cfg.strategy_options)  # fail on a bad option before any work
    if cfg.pruner != "none":
        raise ConfigError("--strategy asha (the default) stops candidates at its rungs; "
                          "Optuna's pruners do not apply: add --strategy optuna to use "
                          f"--pruner {cfg.pruner}")
    sampler = create_sampler(cfg.sampler, cfg.seed, len(settings.directions) > 1)
    study = open_study(name, url, directions=settings.directions, sampler=sampler,
                       pruner=optuna.pruners.NopPruner())
    cfg.strategy_options = _options_for(study, cfg.strategy_options).to_dict()
    return study


def _shared_store(study: optuna.Study, cfg: Any, objective: Objective) -> str | None:
    """Where training states are shared with workers on other machines: the study's artifact
    store, unless the study lives in a local SQLite file (its workers share this disk)."""
    backend = getattr(study._storage, "_backend", study._storage)
    url = str(getattr(backend, "url", ""))
    if not url or url.startswith("sqlite") or objective.paths is None:
        return None
    if cfg.artifacts:
        return store_location(cfg.artifacts, objective.paths)
    return SearchRecord.of(study).artifacts or store_location(None, objective.paths)


def make_controller(study: optuna.Study, objective: Objective, budget: Budget,
                    progress: ProgressFn | None, cfg: Any) -> AshaController:
    return AshaController(study, objective, budget, progress,
                          AshaOptions.from_dict(cfg.strategy_options),
                          _shared_store(study, cfg, objective))
