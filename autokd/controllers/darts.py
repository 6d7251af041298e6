"""``--strategy darts``: search the space by gradient, one supernet per trial.

Each DARTS run is one trial of the study:

1. A trial is claimed like any other (``BaseController.next_trial``: exact budget, worker,
   heartbeats; an interrupted run is re-queued and, if it had derived its student, only
   retrained). The recipe, training and regulariser params (everything DARTS does not
   relax) are fixed for the run: the space's first choice / midpoint (``kd="fixed"``, the
   default, so runs at different targets differ only in their target) or sampled by the
   study's own sampler (``kd="sample"``: the outer Optuna loop over KD hyperparameters).
2. A supernet of the space's architecture decisions is trained first-order bilevel (DARTS,
   Liu et al. 2019) under an annealed Gumbel-softmax (FBNet; plain softmax on request):
   weights on the train split, alpha on the validation split; the task loss
   is the recipe's KD loss from cached teacher outputs, and every cost limit (the run's target
   plus ``--max-flops/--max-params/--max-latency-ms``) is a constraint on the expected cost,
   enforced by a multiplier that rises while it is violated (dual ascent), so users set a
   target, not a penalty weight.
3. The architecture is derived (argmax of each exclusive decision; for the nested ones, depth
   and widths, each stage / channel is kept when its probability is at least 1/2, see
   ``Supernet.marginal_choice``; ``derivation="argmax"`` takes the plain argmax), repaired
   greedily if it breaks a limit, checked with a real latency measurement when latency is
   limited, then pinned into the trial's params through ``suggest_*`` (same names and
   distributions as Optuna trials), so ``SearchSpace.from_params(trial.params)`` rebuilds it.
4. ``Objective.evaluate`` retrains the derived student with distillation and records exactly
   the attributes every other trial has, plus the ``darts_*`` and ``predicted_*`` ones.

Collapse guard: weights train alone for a warm-up, and while no cost constraint is active
(every multiplier is 0) the depth alpha is projected so that the probability of skipping
every optional stage stays <= ``skip_cap`` (default 1/2: the task loss alone, which favours
parameter-free skips while the blocks are undertrained, cannot make the collapsed network
the derived one; P-DARTS caps skips for the same reason; a cost target may still ask for the
shallowest network, since then the multiplier is active). The search also stops early once
every decision is nearly certain (mean normalised alpha entropy <= ``entropy_stop``) and the
expected cost meets the limits (DARTS+ stops early for the same reason).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from autokd.config import SearchSettings, TrainConfig
from autokd.controllers.base import Budget, ProgressFn
from autokd.controllers.distributed import in_flight
from autokd.controllers.optuna_search import OptunaController, create_sampler
from autokd.cost import measure_latency
from autokd.distill import KDConfig
from autokd.errors import ConfigError, SpaceError
from autokd.latency_table import LatencyTable, TableSettings, get_table
from autokd.models import build_student
from autokd.models.supernet import Relaxation, build_supernet
from autokd.nas import DartsOptions, DartsSearch, SearchResult, derive, midpoint, space_decisions
from autokd.nas.cost_model import CostModel
from autokd.objective import Objective
from autokd.record import TrialLog, TrialRecord, count_done
from autokd.space import recipe_from_values

__all__ = [
    "DartsController",
    "DartsSampler",
    "make_controller",
    "open_for_search",
]

logger = logging.getLogger(__name__)
_METRIC_KEY = {"flops": "flops", "params": "params", "latency": "latency_ms"}
_LIMITS = {"max_flops": "flops", "max_params": "params", "max_latency_ms": "latency_ms"}


# ---------------------------------------------------------------------------------------------
# Recording a derived architecture as an ordinary trial
# ---------------------------------------------------------------------------------------------


class DartsSampler(optuna.samplers.BaseSampler):
    """The study's sampler, except that held parameter names take pinned values.

    Why: a DARTS run decides the architecture itself; pinning it and letting the space's own
    ``sample(trial)`` call ``suggest_*`` records the same names and distributions as an
    Optuna trial. Held names never go through relative (multivariate) sampling, whose values
    would win over a pin.
    """

    def __init__(self, base: optuna.samplers.BaseSampler) -> None:
        self.base = base
        self.held: set[str] = set()
        self.pins: dict[str, Any] = {}

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        space = self.base.infer_relative_search_space(study, trial)
        return {k: v for k, v in space.items() if k not in self.held}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        out = self.base.sample_relative(study, trial, search_space)
        return {k: v for k, v in out.items() if k not in self.held}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if param_name in self.pins:
            return self.pins[param_name]
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


# ---------------------------------------------------------------------------------------------
# The controller
# ---------------------------------------------------------------------------------------------


class DartsController(OptunaController):
    """One DARTS run (supernet search + retraining of its student) per trial."""

    def __init__(self, study: optuna.Study, objective: Objective, budget: Budget,
                 progress: ProgressFn | None, options: DartsOptions) -> None:
        super().__init__(study, objective, budget, progress)
        objective.strategy = "darts"
        self.options, self.space = options, objective.space
        self.settings: SearchSettings = objective.settings
        if not isinstance(study.sampler, DartsSampler):
            study.sampler = DartsSampler(study.sampler)
        self.sampler: DartsSampler = study.sampler
        self.decisions, self.fixed_arch = space_decisions(self.space)
        self.target_metric = self._target_metric()
        self.sampler.held = self._held_names()
        self._cost: CostModel | None = None

    # -- set-up -------------------------------------------------------------------------------
    def _target_metric(self) -> str:
        metric = self.options.target_metric
        if metric == "auto":
            s = self.settings
            metric = "latency" if s.max_latency_ms is not None or "latency" in s.objectives \
                else "flops"
        if (metric == "latency" or self.settings.max_latency_ms is not None) \
                and not self.settings.cost.latency:
            raise ConfigError("DARTS latency targets and limits need latency measurement; "
                              "drop --no-latency")
        return _METRIC_KEY[metric]

    def _held_names(self) -> set[str]:
        held = set(self.decisions)
        if self.options.kd == "fixed":
            held |= {p.name for p in self.space.params}
        return held

    def cost_model(self, net: Any) -> CostModel:
        """Built once per controller: exact FLOPs/params, plus the device's latency table."""
        if self._cost is None:
            table = self._latency_table(net) if self.settings.cost.latency else None
            self._cost = CostModel(net, table)
        return self._cost

    def _latency_table(self, net: Any) -> LatencyTable:
        cfg = self.settings.cost
        settings = TableSettings.from_cost(cfg)
        return get_table(net, self.space.name, cfg.device, cfg.threads, settings,
                         batch_size=cfg.batch_size)

    # -- budget -------------------------------------------------------------------------------
    def _runs_done(self) -> int:
        """Finished runs: a run whose student broke a hard limit still spent a search."""
        infeasible = sum(1 for t in self._darts_trials((TrialState.COMPLETE,))
                         if TrialRecord.of(t).infeasible)
        return count_done(self.study) + infeasible

    def budget_left(self) -> bool:
        if self.budget.seconds is not None:
            return super().budget_left()
        return self._runs_done() < (self.budget.trials or 0)

    def _slot_free(self) -> bool:
        if self.budget.trials is None:
            return True
        return self._runs_done() + len(in_flight(self.study)) < self.budget.trials

    def _darts_trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False, states=states)
                if TrialRecord.of(t).strategy == "darts"]

    # -- runs ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            target = self.options.target_for(len(self._darts_trials()))
            trial = self.next_trial()
            if trial is None:
                break
            self.run_trial(trial, functools.partial(self._one_run, target=target))
            self._after_trial()
            self.check_failures()

    def _one_run(self, trial: optuna.Trial, target: float) -> Any:
        """One DARTS run in a claimed trial; failures before training get a ``fail_reason``."""
        try:
            return self._evaluate(trial, target)
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except Exception as exc:
            if TrialRecord.of(trial).fail_reason is None:
                TrialLog(trial).flush(fail_reason=f"darts: {type(exc).__name__}: {exc}"[:300])
            logger.warning("darts run in trial %d failed: %s", trial.number, exc)
            raise
        finally:
            self.sampler.pins = {}

    def _evaluate(self, trial: optuna.Trial, target: float) -> Any:
        TrialLog(trial).flush(strategy="darts")  # counts as a DARTS run while it searches
        original = self._retry_of(trial)
        if original is not None:  # re-queued after an interrupt: retrain the same student
            cand = self.space.sample(trial)
            extra = {k: v for k, v in TrialRecord.of(original).extra.items()
                     if k.startswith(("darts_", "predicted_"))}
            return self.objective.evaluate(trial, cand, extra)
        values = self._run_params(trial)
        kd, train = self._recipe(values, trial)
        net = self._supernet(values, trial.number)
        cost = self.cost_model(net)
        limits = self._limits(target, cost, net)
        deadline = self.started + self.budget.seconds if self.budget.seconds else None
        result = DartsSearch(net, cost, self.objective.data, self.objective.teacher, kd, train,
                             limits, self.options, deadline).run()
        choice, repairs, checks = self._derive(net, cost, limits)
        self.sampler.pins.update(net.active(choice))
        cand = self.space.sample(trial)
        self._check_params(trial, cand.spec)
        extra = self._attrs(target, limits, result, net, cost, choice, repairs, checks)
        return self.objective.evaluate(trial, cand, extra)

    def _retry_of(self, trial: optuna.Trial) -> FrozenTrial | None:
        """The interrupted run this trial retries, if that run had derived its student."""
        number = TrialRecord.of(trial).retry_of
        if number is None:
            return None
        original = self.study.get_trials(deepcopy=False)[int(number)]
        if "darts_alpha" not in TrialRecord.of(original).extra:
            return None  # interrupted during its supernet search: search again
        try:
            self.space.from_params(original.params)  # its params name a whole student
        except SpaceError:
            return None
        return original

    def _run_params(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest everything DARTS does not relax (pinned to the midpoint in fixed mode)."""
        values: dict[str, Any] = {}
        for p in self.space.params:
            if p.name in self.decisions or p.per_stage or not p.active(values):
                continue  # relaxed, per-stage on the depth, or conditional on a relaxed value
            if self.options.kd == "fixed":
                self.sampler.pins[p.name] = midpoint(p)
            values[p.name] = p.suggest(trial)
        return values

    def _recipe(self, values: dict[str, Any], trial: optuna.Trial) -> tuple[KDConfig, TrainConfig]:
        groups = {p.name: p.group for p in self.space.params}
        kd = recipe_from_values({k: v for k, v in values.items()
                                 if groups[k] == "distillation"}).validate()
        overrides = {k: v for k, v in values.items() if groups[k] == "training"}
        train = dataclasses.replace(self.settings.train, **overrides)
        train.seed = self.settings.train.seed + trial.number
        if self.options.batch_size is not None:
            train.batch_size = self.options.batch_size
        return kd, train.validate()

    def _supernet(self, values: dict[str, Any], seed: int) -> Any:
        arch = {p.name for p in self.space.group("architecture")}
        fixed = {**self.fixed_arch, **{k: v for k, v in values.items() if k in arch}}
        relax = Relaxation(self.options.relaxation, self.options.tau_start,
                           self.options.gumbel_hard, seed=self.settings.train.seed + seed)
        data = self.objective.data
        return build_supernet(self.space.family, self.decisions, fixed, data.input_shape,
                              data.num_classes, relax, seed=self.settings.train.seed + seed)

    def _limits(self, target: float, cost: CostModel, net: Any) -> dict[str, float]:
        """The run's target (fraction of the teacher's cost) and the user's hard limits."""
        limits = {metric: float(getattr(self.settings, key)) for key, metric in _LIMITS.items()
                  if getattr(self.settings, key) is not None}
        metric = self.target_metric
        reference = self.objective.teacher_profile.get(metric)
        if not reference:
            largest = {n: max(opts) if not isinstance(opts[0], str) else opts[0]
                       for n, opts in net.decisions.items()}
            reference = cost.of_choice(largest)[metric]
            logger.warning("the teacher has no measurable %s; DARTS targets are fractions of "
                           "the largest architecture's (%g)", metric, reference)
        limits[metric] = min(limits.get(metric, math.inf), target * float(reference))
        return limits

    def _derive(self, net: Any, cost: CostModel,
                limits: dict[str, float]) -> tuple[dict[str, Any], list[str], list[dict]]:
        """Derive and repair; under a latency limit, check it by real measurement."""
        opts = self.options
        choice, repairs = derive(net, cost, limits, opts.repair, opts.derivation)
        checks: list[dict[str, float]] = []
        if "latency_ms" not in limits or not self.options.repair:
            return choice, repairs, checks
        target = limits["latency_ms"]
        for _ in range(self.options.latency_checks):
            measured = self._measure(net, choice)
            checks.append({"predicted_ms": cost.of_choice(choice)["latency_ms"],
                           "measured_ms": measured, "table_limit_ms": limits["latency_ms"]})
            if measured <= target:
                break
            limits = {**limits, "latency_ms": limits["latency_ms"] * target / measured}
            choice, more = derive(net, cost, limits, True, opts.derivation)
            repairs = repairs + more
        return choice, repairs, checks

    def _measure(self, net: Any, choice: dict[str, Any]) -> float:
        cfg = self.settings.cost
        model = build_student(net.family, net.spec_for(choice), net.input_shape, net.num_classes)
        ms, _cv = measure_latency(model, net.input_shape, 1, warmup=cfg.warmup,
                                  repeats=cfg.repeats, threads=cfg.threads, device=cfg.device,
                                  min_block_s=getattr(cfg, "min_block_s", 0.02))
        return ms

    def _check_params(self, trial: optuna.Trial, spec: dict[str, Any]) -> None:
        """The recorded params must rebuild the same student (the contract with reports)."""
        rebuilt = self.space.from_params(trial.params).spec
        if rebuilt != spec:
            raise SpaceError(f"darts params {trial.params} rebuild {rebuilt}, not {spec}")

    def _attrs(self, target: float, limits: dict[str, float], result: SearchResult,
               net: Any, cost: CostModel, choice: dict[str, Any], repairs: list[str],
               checks: list[dict]) -> dict[str, Any]:
        predicted = cost.of_choice(choice)
        return {
            "darts_alpha": result.probabilities,
            "darts_choices": {n: list(opts) for n, opts in net.decisions.items()},
            "darts_search_seconds": result.seconds,
            "darts_target": target,
            "darts_target_metric": self.target_metric,
            "darts_limits": limits,
            "darts_expected": result.expected,
            "darts_multipliers": result.multipliers,
            "darts_epochs_run": result.epochs_run,
            "darts_stop_reason": result.stop_reason,
            "darts_relaxation": self.options.relaxation,
            "darts_skip_cap_hits": result.skip_cap_hits,
            "darts_argmax": net.active(result.argmax),
            "darts_repairs": repairs,
            "darts_latency_checks": checks,
            "darts_history": _compact_history(result.history),
            "darts_options": dataclasses.asdict(self.options),
            "predicted_flops": predicted["flops"],
            "predicted_params": predicted["params"],
            "predicted_latency_ms": predicted.get("latency_ms"),
            "latency_model": cost.table.error() if cost.table is not None else None,
        }


def _compact_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("epoch", "supernet_val_accuracy", "entropy", "expected", "multipliers")
    return [{k: h[k] for k in keep} for h in history]


# ---------------------------------------------------------------------------------------------
# Strategy entry points (see autokd.controllers.STRATEGIES)
# ---------------------------------------------------------------------------------------------


def open_for_search(name: str, url: str, cfg: Any, settings: SearchSettings) -> optuna.Study:
    """Create or resume the study; the study's sampler runs the outer loop (recipe params)."""
    from autokd.study import open_study

    DartsOptions.from_dict(cfg.strategy_options)  # fail on a bad option before any work
    if cfg.pruner != "none":
        raise ConfigError("--strategy darts records one trial per supernet search; Optuna's "
                          "pruners do not apply (keep --pruner none)")
    multi = len(settings.directions) > 1
    sampler = DartsSampler(create_sampler(cfg.sampler, cfg.seed, multi))
    return open_study(name, url, directions=settings.directions, sampler=sampler,
                      pruner=optuna.pruners.NopPruner())


def make_controller(study: optuna.Study, objective: Objective, budget: Budget,
                    progress: ProgressFn | None, cfg: Any) -> DartsController:
    return DartsController(study, objective, budget, progress,
                           DartsOptions.from_dict(cfg.strategy_options))
