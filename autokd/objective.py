"""One trial: sample -> build -> check constraints -> distil -> measure -> objective values.

Every controller (Optuna, NNI, DARTS) records trials through ``Objective.evaluate`` so the
same user attributes land on every trial, and reports never care which controller ran.
Test accuracy is recorded but never used for selection.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autokd.checkpoints import TrialCheckpoints, run_key
from autokd.config import (
    CONSTRAINTS,
    MINIMA,
    OBJECTIVES,
    SCORE_TERMS,
    SearchSettings,
    TrainConfig,
    objective_key,
)
from autokd.cost import CostReport
from autokd.data import DataSplits
from autokd.errors import ConfigError, InitError, TrainingError
from autokd.pareto import FrontScale, as_losses, non_dominated
from autokd.pipeline import (
    RunResult,
    build_seeded,
    compare,
    init_student,
    measure_student_cost,
    run_distillation,
)
from autokd.record import TrialLog, TrialRecord, feasible, recorded
from autokd.space import Candidate, SearchSpace
from autokd.study import StudyPaths
from autokd.teachers import Teacher, save_checkpoint
from autokd.train_state import TrainState

__all__ = ["Objective", "ParetoStopper"]

logger = logging.getLogger(__name__)


class ParetoStopper:
    """Early stopping for multi-objective searches, where Optuna's pruners refuse to work.

    A candidate's costs are known before training, so after a warm-up the trial stops once an
    optimistic projection of its final validation accuracy would add less than ``min_gain`` to
    the normalised hypervolume of the finished feasible trials (``FrontScale``: 0.1 % of the box
    between the ideal and the reference point by default). Without a scale (a study from before
    scales, a replay) the rule is plain dominance: the projection is weakly dominated by a
    finished trial that is no more costly in every cost objective.
    Projection = best accuracy so far + recent gain per epoch x remaining epochs + ``slack``.
    """

    def __init__(self, front: list[tuple[dict[str, float], float]], costs: dict[str, float],
                 cost_keys: list[str], epochs: int, warmup: float = 0.3, slack: float = 0.02,
                 window: int = 3, scale: FrontScale | None = None,
                 names: list[str] | None = None, min_gain: float = 0.001) -> None:
        self.front = [(c, a) for c, a in front if all(c.get(k, math.inf) <= costs[k] for k in cost_keys)]
        self.epochs, self.warmup, self.slack, self.window = epochs, warmup, slack, window
        self.best: list[float] = []
        self.reason: str | None = None
        self.scale, self.min_gain = scale, min_gain
        self.names = ["accuracy", *(names or cost_keys)]
        self.costs = [costs[k] for k in cost_keys]
        self.points = [[a, *[c.get(k, math.inf) for k in cost_keys]] for c, a in front]
        if scale is not None and self.points:
            losses = as_losses(self.points, ["maximize"] + ["minimize"] * len(cost_keys))
            self.points = [p for p, keep in zip(self.points, non_dominated(losses)) if keep]
        self.base = scale.hypervolume(self.points, self.names) if scale and self.points else 0.0

    def optimistic(self) -> float:
        remaining = self.epochs - len(self.best)
        past = self.best[-1 - self.window] if len(self.best) > self.window else self.best[0]
        rate = max(0.0, (self.best[-1] - past) / self.window)
        return min(1.0, self.best[-1] + rate * remaining + self.slack)

    def should_stop(self, epoch: int, val_accuracy: float) -> bool:
        self.best.append(max(val_accuracy, self.best[-1] if self.best else 0.0))
        has_front = self.points if self.scale is not None else self.front
        if not has_front or epoch < max(3, int(self.warmup * self.epochs)) or epoch >= self.epochs:
            return False
        bound = self.optimistic()
        if self.scale is not None:
            gain = self.scale.hypervolume([*self.points, [bound, *self.costs]], self.names) - self.base
            if gain < self.min_gain:
                self.reason = (f"pareto: at epoch {epoch} even the optimistic accuracy {bound:.4f} "
                               f"would add {max(gain, 0.0):.2g} (< {self.min_gain:g}) to the "
                               "front's normalised hypervolume")
                return True
            return False
        beaten = [a for _, a in self.front if a >= bound]
        if beaten:
            self.reason = (f"pareto: at epoch {epoch} the optimistic accuracy {bound:.4f} is below "
                           f"{max(beaten):.4f} of a finished trial that costs no more")
            return True
        return False


class Objective:
    """Callable for ``study.optimize``; ``evaluate`` also serves ask/tell controllers."""

    def __init__(self, space: SearchSpace, data: DataSplits, teacher: Teacher,
                 settings: SearchSettings, paths: StudyPaths | None = None,
                 teacher_profile: dict[str, Any] | None = None, strategy: str = "optuna",
                 scale: FrontScale | dict[str, Any] | None = None,
                 artifacts: str | None = None) -> None:
        self.space, self.data, self.teacher = space, data, teacher
        self.scale = FrontScale.from_dict(scale) if isinstance(scale, dict) and scale else (
            scale if isinstance(scale, FrontScale) else None)
        self.settings = settings.validate()
        self.paths, self.strategy = paths, strategy
        self.teacher_profile = teacher_profile or {}
        self._costs: dict[str, CostReport] = {}
        # int8 and float students side by side: cost both as ONNX files under ONNX Runtime
        self._mixed_int8 = space.offers_int8()
        location = artifacts or (str(paths.root / "artifacts") if paths else None)
        every = self.settings.checkpoint_every
        self.checkpoints = TrialCheckpoints(location, every) if location and every > 0 else None

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        return self.evaluate(trial, self.space.sample(trial))

    # -- the trial ------------------------------------------------------------------------
    def evaluate(self, trial: optuna.Trial, cand: Candidate,
                 extra_attrs: dict[str, Any] | None = None) -> float | list[float]:
        """Run one candidate in ``trial``; its record is written before training and at the
        end (how it ended included), two storage writes in all."""
        log = TrialLog(trial).update(
            strategy=self.strategy, family=cand.family, spec=cand.spec, recipe=vars(cand.kd),
            train=cand.train, dataset_hash=self.data.split_hash, teacher_hash=self.teacher.hash,
            metric=self.settings.metric, **(extra_attrs or {}))
        self._clock = (time.perf_counter(), time.process_time())
        try:
            return self._run(trial, cand, log)
        except optuna.TrialPruned:
            log.flush(**self._spent())
            raise
        except KeyboardInterrupt:
            log.flush(fail_reason="interrupted", **self._spent())
            raise
        except TrainingError as exc:
            log.flush(fail_reason=f"training diverged: {exc}", **self._spent())
            raise
        except ConfigError as exc:
            log.flush(fail_reason=f"invalid candidate: {exc}", **self._spent())
            raise
        except Exception as exc:  # OOM, a bad architecture for this input, ...: record and go on
            log.flush(fail_reason=_exception_reason(exc), **self._spent())
            raise

    def _spent(self) -> dict[str, float]:
        """Wall and CPU seconds of this trial so far, whatever ended it: what a search costs is
        the sum over every trial, pruned and failed ones included. CPU time is this process's
        (one trial at a time per process; ``--jobs`` runs one process per worker)."""
        wall, cpu = self._clock
        return {"wall_seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}

    def _train_config(self, cand: Candidate, trial: optuna.Trial) -> TrainConfig:
        cfg = cand.train_config(self.settings.train)
        if self.settings.epochs is not None:
            cfg.epochs = self.settings.epochs
        cfg.seed = self.trial_seed(trial)
        cfg.metric = self.settings.metric
        return cfg

    def trial_seed(self, trial: optuna.Trial) -> int:
        """The training seed: the search's seed + the trial number, except that a retry of a
        killed trial keeps the seed of the trial it retries (the same run, so it can continue
        that trial's checkpoint and give the same student)."""
        own = self.settings.train.seed + trial.number
        retry_of, study = TrialRecord.of(trial).retry_of, getattr(trial, "study", None)
        if retry_of is None or study is None:
            return own
        trials = study.get_trials(deepcopy=False)
        seed = recorded(trials[int(retry_of)], "seed") if int(retry_of) < len(trials) else None
        return int(seed) if seed is not None else own

    def _run(self, trial: optuna.Trial, cand: Candidate, log: TrialLog) -> float | list[float]:
        t0 = time.perf_counter()
        cfg = self._train_config(cand, trial)
        model = build_seeded(cand.family, cand.spec, self.data, cfg.seed)
        cost = self._cost(cand, model)
        costs = cost.to_dict()
        violations = self._constraints(costs)
        for key, value in zip(CONSTRAINTS, violations):
            # what constraint-aware samplers read; only limits that exist (each set is a
            # storage read and write, and an unset limit is always 0)
            if getattr(self.settings, key) is not None:
                trial.set_constraint(key, value)
        log.update(**costs, seed=cfg.seed, constraints=violations,
                   pre_train_seconds=time.perf_counter() - t0)
        if any(v > 0 for v in violations):
            return self._infeasible(log, costs, violations)
        try:
            init_student(model, cand.kd, self.teacher)
        except InitError as exc:  # e.g. init: teacher with another width: nothing to train
            return self._infeasible(log, costs, violations, reason=str(exc))
        log.flush()  # the candidate and its costs are kept even if training dies
        teacher = self._assistant(trial, cand, cfg, costs, log)
        reporter = self._reporter(trial, log, costs, cfg.epochs)
        callbacks = {"on_epoch_end": [reporter]}
        key, state = self._checkpoint(cand, cfg, log, reporter, teacher.hash)
        if key is not None:
            callbacks["on_epoch_end"].append(self.checkpoints.saver(key))
        try:
            run = self._distil(trial, cand, cfg, callbacks, model, cost, state, teacher)
        except (optuna.TrialPruned, TrainingError, ConfigError):
            self._forget(key)  # finished for good: a retry would end the same way
            raise
        self._forget(key)
        metrics = run.metrics()
        metrics.update(compare(metrics, self.teacher_profile))
        log.update(**metrics)
        self._check_minima(trial, log, metrics, violations)
        if self.settings.score:
            log.update(score=self._score(metrics))
        log.update(checkpoint=self._keep_weights(trial, run.model, metrics, cand))
        log.flush(**self._spent())
        return self._values(metrics)

    def _distil(self, trial: optuna.Trial, cand: Candidate, cfg: TrainConfig,
                callbacks: dict[str, Any], model: Any, cost: CostReport,
                resume: TrainState | None = None, teacher: Teacher | None = None) -> RunResult:
        """Train the candidate, from ``resume`` (its checkpoint) when given (a multi-fidelity
        search also resumes and keeps state here); ``teacher`` is who teaches it (the
        search's teacher, or its assistant)."""
        return run_distillation(self.data, teacher or self.teacher, cand.family, cand.spec,
                                cand.kd, cfg, self.settings.cost, callbacks, model=model,
                                cost=cost, resume=resume)

    def _assistant(self, trial: optuna.Trial, cand: Candidate, cfg: TrainConfig,
                   costs: dict[str, Any], log: TrialLog) -> Teacher:
        """Who teaches this candidate: the teacher, or with ``assistant: auto`` a teacher
        assistant (``autokd.chains``): a completed trial of this study read from storage and
        its kept weights, else one trained here (its time is this trial's). Recorded in the
        trial (``assistant_of``, ``assistant_seconds``, ``assistant_*`` extras)."""
        if cand.kd.assistant == "none" or not cand.kd.uses_teacher:
            return self.teacher
        from autokd.chains import resolve_assistant

        study = getattr(trial, "study", None)  # FixedTrial (tests, replays) has no study
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if study else []
        root = self.paths.root if self.paths is not None and study is not None else None
        found = resolve_assistant(self.data, self.teacher, self.teacher_profile.get("flops"),
                                  cand.family, cand.spec, costs["flops"], cand.kd, cfg,
                                  space=self.space, trials=trials, root=root)
        log.update(**found.record())
        if found.parent is None and self.settings.keep_weights and self.paths:
            log.update(assistant_checkpoint=self._save_assistant(trial, found.teacher.module))
        log.flush()
        return found.teacher

    def _save_assistant(self, trial: optuna.Trial, module: Any) -> str:
        """Keep an assistant trained inside the trial next to the trial's student, so an
        export can retrain the student from the same assistant; its path in the study."""
        save_checkpoint(module, self.paths.student_dir(trial.number) / "assistant.pt",
                        data=self.data.describe(), teacher_hash=self.teacher.hash)
        return str(Path("students") / str(trial.number) / "assistant.pt")

    def _checkpoint(self, cand: Candidate, cfg: TrainConfig, log: TrialLog,
                    reporter: Any, teacher_hash: str | None = None,
                    ) -> tuple[str | None, TrainState | None]:
        """This run's checkpoint key and the state a killed earlier try of it left (replayed
        into the reporter, so pruning sees every epoch as an uninterrupted run would)."""
        if self.checkpoints is None:
            return None, None
        key = run_key(cand.family, cand.spec, vars(cand.kd), cand.train, cfg,
                      self.data.split_hash, teacher_hash or self.teacher.hash)
        state = self.checkpoints.load(key)
        if state is not None and (state.horizon != (cfg.schedule_epochs or cfg.epochs)
                                  or state.epoch > cfg.epochs or state.metric != cfg.metric):
            state = None  # cannot happen for a matching key; a hand-copied file is ignored
        if state is not None:
            logger.info("continuing run %s from its checkpoint after epoch %d", key, state.epoch)
            log.update(resumed_epoch=state.epoch)
            for row in state.history:
                reporter(None, int(row["epoch"]), row, replay=True)
        return key, state

    def _forget(self, key: str | None) -> None:
        if key is not None and self.checkpoints is not None:
            self.checkpoints.remove(key)

    def _cost(self, cand: Candidate, model: Any) -> CostReport:
        """Costs depend on the architecture (and, for an int8 recipe, on its INT8 file) only,
        so a repeated spec is measured once."""
        key = json.dumps([cand.family, model.spec, cand.kd.quantize], sort_keys=True, default=str)
        if key not in self._costs:
            self._costs[key] = measure_student_cost(model, self.data, cand.kd,
                                                    self.settings.cost, self._mixed_int8)
        return self._costs[key]

    def _constraints(self, costs: dict[str, Any]) -> list[float]:
        out = []
        for key, metric in CONSTRAINTS.items():
            limit = getattr(self.settings, key)
            value = costs.get(metric)
            out.append(0.0 if limit is None or value is None else (float(value) - limit) / limit)
        return out

    def _check_minima(self, trial: optuna.Trial, log: TrialLog, metrics: dict[str, Any],
                      violations: list[float]) -> None:
        """``--min-accuracy`` / ``--min-retention``: known only once trained, so they are set
        as constraints now (shortfall below the minimum; > 0 infeasible), before the trial is
        told, so samplers learn from them and the front leaves the student off. The trial
        stays trained (it counts towards the budget); its reason says what it missed."""
        given = {k: v for k, v in ((k, getattr(self.settings, k)) for k in MINIMA) if v is not None}
        if not given:
            return
        shortfall, missed = {}, []
        for key, minimum in given.items():
            metric = MINIMA[key]
            value = metrics.get(objective_key(metric, self.settings.metric)
                                if metric == "accuracy" else metric)
            # unknown (no teacher accuracy to divide by): nothing to hold it against
            shortfall[key] = 0.0 if value is None else float(minimum) - float(value)
            if shortfall[key] > 0:
                missed.append(f"{_label(key, self.settings.metric)} {float(value):.4f} < "
                              f"--{key.replace('_', '-')} {minimum:g}")
        for key, value in shortfall.items():
            trial.set_constraint(key, value)
        log.update(constraints=[*violations, *shortfall.values()])
        if missed:
            log.update(infeasible_reason=f"below the minimum after training: {'; '.join(missed)}")

    def _infeasible(self, log: TrialLog, costs: dict[str, Any], viol: list[float],
                    reason: str | None = None) -> Any:
        """Skip training: the sampler learns the region is infeasible from the constraints
        (or, for ``reason`` such as a failed teacher initialisation, from the worst values)."""
        if reason is None:
            names = [m for m, v in zip(CONSTRAINTS.values(), viol) if v > 0]
            reason = f"violates max {', '.join(names)} before training"
        log.flush(infeasible=True, **self._spent(), infeasible_reason=reason)
        worst = {"val_accuracy": 0.0, f"val_{self.settings.metric}": 0.0, "val_kd_loss": 1e9,
                 "score": 1e9}
        return self._values({**costs, **worst}, infeasible=True)

    def _reporter(self, trial: optuna.Trial, log: TrialLog, costs: dict[str, Any],
                  epochs: int) -> Any:
        """The trainer callback that prunes: Optuna's pruner (score mode) or the Pareto rule.

        A pruned trial's reason lands in ``log``, which ``evaluate`` writes on the way out.
        """
        start = time.perf_counter()
        if self.settings.score:
            penalty = self._penalty(costs)

            def report(_trainer: Any, epoch: int, m: dict[str, float],
                       replay: bool = False) -> None:
                trial.report(m.get("val_kd_loss", m["val_nll"]) + penalty, epoch)
                if not replay and trial.should_prune():
                    log.update(prune_reason=f"pruner stopped it at epoch {epoch}",
                               train_seconds=time.perf_counter() - start)
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

            return report
        stopper = self._stopper(trial, costs, epochs)
        key = f"val_{self.settings.metric}"

        def report_pareto(_trainer: Any, epoch: int, m: dict[str, float],
                          replay: bool = False) -> None:
            stop = stopper is not None and stopper.should_stop(epoch, m[key])
            if stop and not replay:
                log.update(prune_reason=stopper.reason, pruned_at_epoch=epoch,
                           train_seconds=time.perf_counter() - start)
                raise optuna.TrialPruned(stopper.reason)

        return report_pareto

    def _stopper(self, trial: optuna.Trial, costs: dict[str, Any], epochs: int) -> ParetoStopper | None:
        objs = self.settings.objectives
        if not self.settings.pareto_pruning or "accuracy" not in objs or "kd_loss" in objs:
            return None
        keys = [OBJECTIVES[o][0] for o in objs if o != "accuracy"]
        if any(costs.get(k) is None for k in keys):
            return None
        scale = self.scale if self.scale is not None and self.scale.covers(objs) else None
        study = getattr(trial, "study", None)  # FixedTrial (tests, replays) has no study
        if study is None:
            return None
        front = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            rec = TrialRecord.of(t)
            score = rec.get(objective_key("accuracy", self.settings.metric))
            if feasible(t) and not rec.infeasible and score is not None:
                front.append(({k: rec.get(k, math.inf) for k in keys}, score))
        return ParetoStopper(front, {k: costs[k] for k in keys}, keys, epochs, scale=scale,
                             names=[o for o in objs if o != "accuracy"])

    def _penalty(self, costs: dict[str, Any]) -> float:
        total = 0.0
        for term, weight in self.settings.score_weights.items():
            key = SCORE_TERMS[term]
            ref = self.teacher_profile.get(key)
            if weight and ref and costs.get(key) is not None:
                total += weight * float(costs[key]) / float(ref)
        return total

    def _score(self, metrics: dict[str, Any]) -> float:
        return float(metrics.get("val_kd_loss", metrics["val_nll"])) + self._penalty(metrics)

    def _values(self, metrics: dict[str, Any], infeasible: bool = False) -> float | list[float]:
        if self.settings.score:
            return float(metrics["score"]) if infeasible else self._score(metrics)
        out = []
        for name in self.settings.objectives:
            value = metrics.get(objective_key(name, self.settings.metric))
            if value is None:
                raise TrainingError(f"objective {name} could not be measured for this candidate")
            out.append(float(value))
        return out

    def _keep_weights(self, trial: optuna.Trial, model: Any, metrics: dict[str, Any],
                      cand: Candidate) -> str | None:
        """Save the student; returns its path relative to the study folder (or None)."""
        if not (self.settings.keep_weights and self.paths):
            return None
        path = self.paths.student_dir(trial.number) / "student.pt"
        save_checkpoint(model, path, data=self.data.describe(), recipe=vars(cand.kd),
                        train=cand.train, metrics=_jsonable(metrics),
                        teacher_hash=self.teacher.hash)
        return str(Path("students") / str(trial.number) / "student.pt")


def _label(key: str, metric: str) -> str:
    """What a minimum bounds, in words: ``val accuracy``, ``val macro_f1``, ``val retention``."""
    return f"val {metric}" if MINIMA[key] == "accuracy" else "val retention"


def _exception_reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    if "out of memory" in text.lower() or isinstance(exc, MemoryError):
        return f"out of memory: {text[:200]}"
    return f"{type(exc).__name__}: {text[:200]}"


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))

