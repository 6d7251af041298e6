"""One rung of an ASHA search: train a candidate to the rung's epochs, continuing its parent.

Why a subclass of ``Objective``: a rung trial is an ordinary trial (same record, costs,
constraints and told values) that trains part of a run: to the rung's epochs, on the schedule
of the candidate's full epochs, from its parent's saved training state. The states live in the
trial's student folder and, for studies that workers on other machines may join, also in the
study's artifact store, from which such a worker fetches them.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autokd.artifacts import fetch_artifact, remove_artifact
from autokd.config import TrainConfig
from autokd.cost import CostReport
from autokd.objective import Objective
from autokd.pipeline import RunResult, run_distillation
from autokd.space import Candidate
from autokd.study import StudyPaths
from autokd.teachers import Teacher
from autokd.train_state import TrainState

__all__ = ["RungObjective", "RungPlan", "StateStore"]

logger = logging.getLogger(__name__)
_ARTIFACT_PREFIX = "artifacts:"  # how Optuna names a trial's artifact attributes
STATE_FILE = "resume.pt"


@dataclass
class RungPlan:
    """What one rung trial trains.

    Attributes:
        rung: Rung index (0: a new candidate).
        epochs: Epochs trained in all once this rung is done (the parent's included).
        horizon: The candidate's full epochs; the LR and temperature schedules span them.
        seed: The training seed of the candidate's first rung (kept by every continuation).
        parent: The trial continued, if any.
        state: The parent's training state; None trains from scratch to ``epochs``.
        fallback: Why a continuation trains from scratch (its parent's state was unavailable).
    """

    rung: int
    epochs: int
    horizon: int
    seed: int
    parent: int | None = None
    state: TrainState | None = None
    fallback: str | None = None

    @property
    def keeps_state(self) -> bool:
        """Whether a later rung may continue this one (not yet at the full epochs)."""
        return self.epochs < self.horizon

    def attrs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rung": self.rung, "resumed_from": self.parent,
                               "epochs_total": self.epochs, "schedule_epochs": self.horizon}
        if self.fallback:
            out["resume_fallback"] = self.fallback
        return out


class StateStore:
    """Training states of rung trials: a file per trial, optionally shared as an artifact."""

    def __init__(self, study: optuna.Study, paths: StudyPaths, location: str | None) -> None:
        self.study, self.paths, self.location = study, paths, location

    def save(self, trial: optuna.Trial, state: TrainState) -> None:
        """Keep the state here and, when shared, in the store (a failed upload costs only a
        restart on another machine, never the trial)."""
        path = state.save(self.paths.resume_state(trial.number))
        if self.location is None:
            return
        from optuna.artifacts import upload_artifact

        from autokd.artifacts import artifact_store

        try:
            upload_artifact(artifact_store=artifact_store(self.location), file_path=str(path),
                            study_or_trial=trial)
        except Exception as exc:  # noqa: BLE001 - any store's error; the local copy stays
            logger.warning("trial %d's training state not shared through %s (%s); workers on "
                           "other machines would restart it", trial.number, self.location, exc)

    def load(self, parent: FrozenTrial, horizon: int,
             epochs: int) -> tuple[TrainState | None, str | None]:
        """The parent's state, from this machine or the artifact store; else (None, why)."""
        path = self.paths.resume_state(parent.number)
        if not path.is_file():
            why = self._fetch(parent, path)
            if why is not None:
                return None, why
        try:
            state = TrainState.load(path)
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: start from scratch
            return None, f"cannot read trial {parent.number}'s training state: {exc}"[:300]
        if state.horizon != horizon or state.epoch > epochs:
            return None, (f"trial {parent.number}'s training state ran {state.epoch} of "
                          f"{state.horizon} epochs, not a start for {epochs} of {horizon}")
        return state, None

    def _fetch(self, parent: FrozenTrial, dest: Path) -> str | None:
        ids = _state_artifacts(parent)
        if self.location is None or not ids:
            return f"trial {parent.number}'s training state is not on this machine"
        try:
            fetch_artifact(ids[-1], self.location, dest)
        except Exception as exc:  # noqa: BLE001 - any store's error: start from scratch
            return (f"cannot fetch trial {parent.number}'s training state from "
                    f"{self.location}: {exc}")[:300]
        return None

    def remove(self, trial: FrozenTrial, whole_folder: bool = False) -> None:
        """Delete a trial's state (here and in the store); ``whole_folder`` its weights too."""
        folder = self.paths.student_dir(trial.number)
        if whole_folder:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            self.paths.resume_state(trial.number).unlink(missing_ok=True)
        if self.location is not None:
            for artifact_id in _state_artifacts(trial):
                remove_artifact(artifact_id, self.location)

    def has_state(self, trial: FrozenTrial) -> bool:
        return self.paths.resume_state(trial.number).exists() or bool(_state_artifacts(trial))


def _state_artifacts(trial: FrozenTrial) -> list[str]:
    """Ids of the training states a trial uploaded (Optuna keeps artifact metadata in the
    trial's system attributes)."""
    out = []
    for key, raw in trial.system_attrs.items():
        if key.startswith(_ARTIFACT_PREFIX):
            meta = json.loads(raw) if isinstance(raw, str) else raw
            if meta.get("filename") == STATE_FILE:
                out.append(meta["artifact_id"])
    return out


class RungObjective(Objective):
    """``Objective`` that trains the rung in ``plan`` and keeps the state a later rung needs.

    Pareto early stopping is off: the rungs decide which candidates train on.
    """

    plan: RungPlan | None
    states: StateStore

    @classmethod
    def adopt(cls, base: Objective, states: StateStore) -> RungObjective:
        """The search's objective (built before the strategy is known), as a rung objective."""
        import dataclasses

        obj = cls.__new__(cls)
        obj.__dict__.update(vars(base))
        obj.settings = dataclasses.replace(base.settings, pareto_pruning=False)
        obj.strategy, obj.plan, obj.states = "asha", None, states
        return obj

    def max_epochs(self, cand: Candidate) -> int:
        """The candidate's full epochs: ``--epochs``, else its own (the space may search them)."""
        return self.settings.epochs or cand.train_config(self.settings.train).epochs

    def evaluate_rung(self, trial: optuna.Trial, cand: Candidate, plan: RungPlan) -> Any:
        self.plan = plan
        try:
            return self.evaluate(trial, cand, plan.attrs())
        finally:
            self.plan = None

    def _train_config(self, cand: Candidate, trial: optuna.Trial) -> TrainConfig:
        cfg = super()._train_config(cand, trial)
        if self.plan is not None:
            cfg.epochs, cfg.schedule_epochs = self.plan.epochs, self.plan.horizon
            cfg.seed = self.plan.seed
        return cfg.validate()

    def _distil(self, trial: optuna.Trial, cand: Candidate, cfg: TrainConfig,
                callbacks: dict[str, Any], model: Any, cost: CostReport,
                resume: TrainState | None = None, teacher: Teacher | None = None) -> RunResult:
        """Continue this rung's own checkpoint (a killed try of it) if any, else the parent."""
        plan = self.plan
        keep = plan is not None and plan.keeps_state
        start = resume if resume is not None else (plan.state if plan else None)
        run = run_distillation(self.data, teacher or self.teacher, cand.family, cand.spec, cand.kd, cfg,
                               self.settings.cost, callbacks, model=model, cost=cost,
                               resume=start, keep_state=keep)
        if keep and run.train.state is not None:
            self.states.save(trial, run.train.state)
        return run
