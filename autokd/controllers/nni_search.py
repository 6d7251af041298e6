"""``--strategy nni``: NNI's HPO tuners (TPE, evolution, anneal, random), run in-process.

No NNI manager, trial service or web UI: the tuner object proposes parameters and learns from
results, and every trial is claimed, evaluated and told through the same Optuna study as the
Optuna controller (``BaseController.next_trial`` / ``run_trial`` + ``Objective.evaluate``), so
budgets, heartbeats, reports, export and resume work unchanged. Trials carry
``strategy="nni"``, ``tuner``, ``nni_params`` (the tuner's full proposal) and ``nni_reward``.

Design decisions:

* **One space definition.** ``nni_space`` translates ``autokd.space.SearchSpace`` into NNI's
  search-space dict (``choice``, ``randint``, ``uniform``, ``loguniform``). Conditional parameters
  are *sampled always and ignored when inactive*: NNI's nested ``choice`` cannot express our
  ``when: {ne: ...}`` / ``in`` conditions or per-stage counts, so the tuner proposes every
  parameter (per-stage ones up to the largest depth) and the space's own
  ``sample(trial)`` decides which are active. Steps (``step:``) and integer log ranges are
  applied by snapping the tuner's continuous value (NNI's ``quniform``/``qloguniform`` break
  its anneal tuner with hyperopt 0.3).
* **Same parameter records as Optuna trials.** The study's sampler is a ``PinnedSampler`` that
  returns the tuner's values, and the space samples the trial as it does for Optuna, so
  ``trial.params`` and their distributions are exactly those of an Optuna trial.
* **One scalar for the tuner.** NNI tuners optimise one number. With ``--score`` it is the
  study's objective itself. In Pareto mode the study still records the real objective values
  (the front is computed from them); the tuner is fed the mean of normalised losses:
  the losses of the study's hypervolume scale (``autokd.pareto.FrontScale``: accuracy from the
  majority class to the teacher, costs log-scaled over the space's range), clipped to [0, 1].
  A study without a scale (written before it existed) uses ``1 - accuracy``;
  ``kd_loss / (1 + kd_loss)``; for costs ``(log10(cost / teacher cost) + 3) / 3`` clipped to
  [0, 1] (1000x smaller than the teacher = 0, teacher-sized = 1).
* **Failures, pruning, retries.** Failed and pruned trials end the tuner's trial without a
  result. A re-queued trial (a killed worker's) re-runs its original parameters. Before each
  proposal the tuner imports finished NNI trials it has not seen (other workers', or a resumed
  study's), for the tuners that can import (TPE, anneal).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from autokd.config import OBJECTIVES
from autokd.controllers.base import Budget, ProgressFn
from autokd.controllers.optuna_search import OptunaController
from autokd.errors import ConfigError
from autokd.objective import Objective
from autokd.pareto import FrontScale
from autokd.record import SearchRecord, TrialLog, TrialRecord
from autokd.registry import Registry
from autokd.space import Param, SearchSpace

__all__ = [
    "TUNERS",
    "NNIController",
    "PinnedSampler",
    "create_tuner",
    "make_controller",
    "nni_space",
    "open_for_search",
    "scalar_reward",
    "to_pins",
]

logger = logging.getLogger(__name__)
TunerFactory = Callable[[int, int | None], Any]
TUNERS: Registry[TunerFactory] = Registry("NNI tuner")
_INSTALL = "--strategy nni needs NNI: pip install 'autokd[nni]'"


def _require_nni() -> None:
    try:
        import nni  # noqa: F401  (only checks that the extra is installed)
    except ImportError:
        raise ConfigError(_INSTALL) from None
    # NNI sets its loggers to INFO on import; follow autokd's verbosity instead
    logging.getLogger("nni").setLevel(logging.getLogger("autokd").getEffectiveLevel())


@TUNERS.register("tpe")
def _tpe(seed: int, budget: int | None) -> Any:
    from nni.algorithms.hpo.tpe_tuner import TpeTuner

    return TpeTuner(optimize_mode="minimize", seed=seed)


@TUNERS.register("random")
def _random(seed: int, budget: int | None) -> Any:
    from nni.algorithms.hpo.random_tuner import RandomTuner

    return RandomTuner(seed=seed)


@TUNERS.register("evolution")
def _evolution(seed: int, budget: int | None) -> Any:
    """Population ~ a third of the budget (4..32): NNI's default 32 would never evolve in a
    20-trial search. Mutation uses Python's global ``random``, so runs are not bit-reproducible."""
    from nni.algorithms.hpo.evolution_tuner import EvolutionTuner

    size = max(4, min(32, (budget or 48) // 3))
    return EvolutionTuner(optimize_mode="minimize", population_size=size)


@TUNERS.register("anneal")
def _anneal(seed: int, budget: int | None) -> Any:
    try:
        from nni.algorithms.hpo.hyperopt_tuner import HyperoptTuner
    except ImportError as exc:
        raise ConfigError(f"--tuner anneal needs {exc.name}: pip install 'autokd[nni]'") from None
    return HyperoptTuner("anneal", optimize_mode="minimize")


def create_tuner(name: str, space: dict[str, Any], seed: int, budget: int | None) -> Any:
    """A tuner from ``TUNERS`` given ``space``, seeded where NNI lets us."""
    _require_nni()
    tuner = TUNERS.get(name)(seed, budget)
    tuner.update_search_space(space)
    if name == "anneal":  # NNI's hyperopt wrapper draws from an unseeded RandomState
        tuner.rval.rstate = np.random.RandomState(seed)
    elif name == "evolution":  # same: reseed and redraw the initial population
        tuner.random_state = np.random.RandomState(seed)
        tuner.population = []
        for _ in range(tuner.population_size):
            tuner._random_generate_individual()
    return tuner


# -- the space in NNI's terms ------------------------------------------------------------------
def _flat_params(space: SearchSpace) -> dict[str, Param]:
    """Every name a trial can suggest -> its parameter (per-stage ones up to the largest count)."""
    out: dict[str, Param] = {}
    for p in space.params:
        if p.kind == "fixed" or _single(p):
            continue
        if p.per_stage:
            count = next(q for q in space.params if q.name == p.per_stage)
            out.update({f"{p.name}_{i}": p for i in range(max(count.options()))})
        else:
            out[p.name] = p
    return out


def _single(p: Param) -> bool:
    """One possible value: Optuna records it without asking the sampler."""
    return len(p.choices) == 1 if p.kind == "choice" else (
        p.kind in ("int", "float") and p.low == p.high)


def _nni_dist(p: Param) -> dict[str, Any]:
    if p.kind == "choice":
        return {"_type": "choice", "_value": list(p.choices)}
    if p.kind == "int" and not p.log:
        if p.step and p.step != 1:
            return {"_type": "choice", "_value": p.options()}
        return {"_type": "randint", "_value": [int(p.low), int(p.high) + 1]}  # high exclusive
    return {"_type": "loguniform" if p.log else "uniform", "_value": [p.low, p.high]}


def nni_space(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """NNI search-space dict of ``space``: one flat entry per suggestable name."""
    return {name: _nni_dist(p) for name, p in _flat_params(space).items()}


def _snap(p: Param, value: Any) -> Any:
    if p.kind == "choice":
        return value
    v = min(max(float(value), float(p.low)), float(p.high))
    if p.step:
        v = float(p.low) + round((v - float(p.low)) / float(p.step)) * float(p.step)
        v = min(v, float(p.high))
    return round(v) if p.kind == "int" else v


def to_pins(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """The tuner's values as values Optuna's distributions of ``space`` accept."""
    flat = _flat_params(space)
    return {name: _snap(flat[name], v) for name, v in params.items() if name in flat}


def scalar_reward(values: float | list[float], names: list[str],
                  teacher: dict[str, Any], scale: FrontScale | None = None) -> float:
    """What the tuner minimises (see the module docstring); ``values`` as told to the study.

    With the study's ``FrontScale`` (every search since it existed) the losses are the ones its
    hypervolume is taken over, clipped to [0, 1]: the tuner then trades accuracy against cost on
    the same axes the front is judged on.
    """
    if not isinstance(values, (list, tuple)):
        return float(values)
    if scale is not None and scale.covers(names):
        return float(np.mean(np.clip(scale.losses([values], names)[0], 0.0, 1.0)))
    losses = []
    for name, v in zip(names, values, strict=True):
        if name == "accuracy":
            losses.append(1.0 - min(max(float(v), 0.0), 1.0))
        elif name == "kd_loss":
            losses.append(float(v) / (1.0 + float(v)))
        else:
            ref = teacher.get(OBJECTIVES[name][0]) or 0.0
            ratio = float(v) / float(ref) if ref else float(v)
            losses.append(min(max((math.log10(max(ratio, 1e-12)) + 3.0) / 3.0, 0.0), 1.0))
    return float(np.mean(losses))


# -- recording the tuner's choice as an ordinary trial -----------------------------------------
class PinnedSampler(optuna.samplers.BaseSampler):
    """Returns the values pinned for the current trial (the tuner's proposal).

    Why: the space's own ``sample(trial)`` then calls ``suggest_*`` as for an Optuna trial, so the
    same names and distributions are recorded. Names without a pin (none in practice) fall back
    to random sampling rather than failing the trial.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.pins: dict[str, Any] = {}
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if param_name in self.pins:
            return self.pins[param_name]
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)


class NNIController(OptunaController):
    """Ask an NNI tuner for each candidate; evaluate and record it as an Optuna trial."""

    def __init__(self, study: optuna.Study, objective: Objective, budget: Budget,
                 progress: ProgressFn | None, tuner: str = "tpe", seed: int = 0) -> None:
        super().__init__(study, objective, budget, progress)
        objective.strategy = "nni"
        if not isinstance(study.sampler, PinnedSampler):
            study.sampler = PinnedSampler(seed)
        self.sampler: PinnedSampler = study.sampler
        self.space: SearchSpace = objective.space
        self.tuner_name = tuner
        space = nni_space(self.space)
        self._keys = set(space)
        # a resumed study must not replay the first run's random proposals
        seed += len(study.get_trials(deepcopy=False))
        self.tuner = create_tuner(tuner, space, seed, budget.trials)
        self.names = SearchRecord.of(study).objectives or objective.settings.objective_names
        self._next_id = 0
        self._pending: tuple[int, dict[str, Any]] | None = None
        self._known: set[int] = set()  # trial numbers whose result the tuner has

    def _run(self) -> None:
        import nni

        while self.budget_left():
            self._import_finished()
            try:
                self._pending = self._pending or self._propose()
            except nni.NoMoreTrialError:
                logger.warning("the NNI tuner has proposed every point of this finite space")
                return
            trial = self.next_trial()
            if trial is None:
                return
            proposal = None if _is_fixed(self.study, trial) else self._pending
            if proposal is not None:
                self._pending = None  # else kept for the next trial the tuner may fill
            frozen = self.run_trial(trial, lambda t, p=proposal: self._evaluate(t, p))
            self._feed(proposal, frozen)
            self._after_trial()
            self.check_failures()

    def _cleanup(self) -> None:
        if self._pending is not None:  # proposed, never run
            self.tuner.trial_end(self._pending[0], False)
            self._pending = None

    def _propose(self) -> tuple[int, dict[str, Any]]:
        pid, self._next_id = self._next_id, self._next_id + 1
        return pid, self.tuner.generate_parameters(pid)

    def _evaluate(self, trial: optuna.Trial, proposal: tuple[int, dict[str, Any]] | None) -> Any:
        """Pin the proposal (None: a re-queued trial keeps its enqueued parameters)."""
        extra: dict[str, Any] = {"tuner": self.tuner_name}
        if proposal is not None:
            extra["nni_params"] = proposal[1]
            self.sampler.pins = to_pins(self.space, proposal[1])
        else:
            extra.update(self._original_proposal(trial))
        try:
            cand = self.space.sample(trial)
        finally:
            self.sampler.pins = {}
        values = self.objective.evaluate(trial, cand, extra)
        TrialLog(trial).flush(nni_reward=scalar_reward(values, self.names,
                                                       self.objective.teacher_profile,
                                                       self.objective.scale))
        return values

    def _original_proposal(self, trial: optuna.Trial) -> dict[str, Any]:
        number = TrialRecord.of(trial).retry_of
        if number is None:
            return {}
        original = self.study.get_trials(deepcopy=False)[int(number)]
        params = TrialRecord.of(original).extra.get("nni_params")
        return {"nni_params": params} if params else {}

    def _feed(self, proposal: tuple[int, dict[str, Any]] | None,
              frozen: FrozenTrial | None) -> None:
        if proposal is None:
            return
        pid, params = proposal
        reward = TrialRecord.of(frozen).extra.get("nni_reward") if frozen is not None else None
        ok = frozen is not None and frozen.state == TrialState.COMPLETE and reward is not None
        if ok:
            self.tuner.receive_trial_result(pid, params, reward)
            self._known.add(frozen.number)
        self.tuner.trial_end(pid, ok)

    def _import_finished(self) -> None:
        """Results of NNI trials this tuner did not run (other workers, a resumed study)."""
        rows = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            a = TrialRecord.of(t).extra
            if t.number in self._known or "nni_params" not in a or "nni_reward" not in a:
                continue
            self._known.add(t.number)
            if set(a["nni_params"]) != self._keys:  # recorded with another space: not comparable
                continue
            rows.append({"parameter": a["nni_params"], "value": a["nni_reward"]})
        if rows:
            self.tuner.import_data(rows)


def _is_fixed(study: optuna.Study, trial: optuna.Trial) -> bool:
    """A queued trial (a retry): its parameters are fixed, not the tuner's."""
    return bool(study._storage.get_trial_system_attrs(trial._trial_id).get("fixed_params"))


def open_for_search(name: str, url: str, cfg: Any, settings: Any) -> optuna.Study:
    """Create or resume the study; the sampler records the tuner's proposals."""
    from autokd.study import open_study

    _require_nni()
    TUNERS.get(getattr(cfg, "tuner", "tpe"))
    if cfg.pruner != "none":
        raise ConfigError("--pruner applies to --strategy optuna; NNI trials stop early by the "
                          "Pareto rule only")
    return open_study(name, url, directions=settings.directions, sampler=PinnedSampler(cfg.seed))


def make_controller(study: optuna.Study, objective: Objective, budget: Budget,
                    progress: ProgressFn | None, cfg: Any) -> NNIController:
    return NNIController(study, objective, budget, progress, getattr(cfg, "tuner", "tpe"),
                         cfg.seed)
