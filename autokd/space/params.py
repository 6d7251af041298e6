"""The parts of a search space: parameters, the candidates they sample, and their recipe."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol

from autokd.config import TrainConfig
from autokd.distill import KDConfig
from autokd.errors import SpaceError

__all__ = ["DIST_KEYS", "GROUPS", "PARAM_KEYS", "TERM_PREFIX", "TOP_KEYS", "TRAIN_KEYS",
           "Candidate", "Param", "TrialLike", "recipe_from_values"]

GROUPS = ("architecture", "distillation", "training")
TOP_KEYS = ("family", "description", *GROUPS)
TRAIN_KEYS = ("lr", "weight_decay", "batch_size", "epochs", "optimizer", "scheduler", "augment",
              "aug_teacher", "replay_k")
DIST_KEYS = ("choice", "int", "float", "fixed")
PARAM_KEYS = (*DIST_KEYS, "log", "step", "when", "per_stage")
TERM_PREFIX = "terms."  # a recipe's term weights are parameters named terms.<term>


class TrialLike(Protocol):
    """The subset of ``optuna.Trial`` that sampling uses (also ``FixedTrial``)."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...


@dataclass(frozen=True)
class Param:
    """One searchable (or fixed) parameter."""

    name: str
    group: str
    kind: str  # choice | int | float | fixed
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    value: Any = None
    when: tuple[tuple[str, str, Any], ...] = ()  # (param, op, value); op in eq|ne|in
    per_stage: str | None = None

    def active(self, values: dict[str, Any]) -> bool:
        for name, op, target in self.when:
            if name not in values:
                return False
            v = values[name]
            ok = v in target if op == "in" else (v == target) == (op == "eq")
            if not ok:
                return False
        return True

    def suggest(self, trial: TrialLike, name: str | None = None) -> Any:
        name = name or self.name
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)

    def options(self) -> list[Any]:
        """Every value a discrete parameter can take (used by DARTS and NNI)."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise SpaceError(f"{self.group}.{self.name} is continuous and has no finite options")

    def contains(self, value: Any) -> bool:
        if self.kind == "fixed":
            return value == self.value
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return float(self.low) - 1e-12 <= float(value) <= float(self.high) + 1e-12


@dataclass
class Candidate:
    """A concrete point of the space: a student spec, a KD recipe and training overrides."""

    family: str
    spec: dict[str, Any]
    kd: KDConfig
    train: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)

    def train_config(self, base: TrainConfig) -> TrainConfig:
        return dataclasses.replace(base, **self.train).validate()


def recipe_from_values(values: dict[str, Any]) -> KDConfig:
    """The recipe of a candidate's distillation values (``terms.kl`` -> ``terms["kl"]``)."""
    kd = {k: v for k, v in values.items() if not k.startswith(TERM_PREFIX)}
    terms = {k[len(TERM_PREFIX):]: v for k, v in values.items() if k.startswith(TERM_PREFIX)}
    return KDConfig(**kd, **({"terms": terms} if terms else {}))
