"""Typed configuration for data, training, distillation and cost measurement.

Why dataclasses: every stage takes a plain, typed, printable object; YAML and the CLI only
fill these in, so validation lives in one place (``validate``) and tests can build configs
directly without going through any parser.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from autokd.errors import ConfigError

__all__ = ["DataConfig", "TrainConfig", "KDConfig", "CostConfig", "to_dict", "from_dict"]

SOFT_LOSSES = ("kl", "mse", "cosine", "none")
T_SCHEDULES = ("constant", "exp", "linear")
MAPPINGS = ("uniform", "bottom_up", "top_down", "learned")
RELATIONS = ("none", "rkd", "gram")
IMPORTANCE = ("none", "entropy", "student_loss")
TEACHER_WEIGHTING = ("mean", "confidence")

def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)

def _finite(name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    _check(isinstance(value, (int, float)) and math.isfinite(value), f"{name} must be a number")
    if low is not None:
        _check(value >= low, f"{name} must be >= {low}, got {value}")
    if high is not None:
        _check(value <= high, f"{name} must be <= {high}, got {value}")

@dataclass
class DataConfig:
    """Which dataset and how it is split."""

    source: str = "digits"
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    target: str | None = None  # csv target column
    num_samples: int | None = None  # generated sources (mnist1d)

    def validate(self) -> DataConfig:
        _finite("val_fraction", self.val_fraction, 0.01, 0.9)
        _finite("test_fraction", self.test_fraction, 0.01, 0.9)
        _check(self.val_fraction + self.test_fraction < 0.95, "val + test fractions leave no train data")
        return self

@dataclass
class TrainConfig:
    """How one student is trained."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | sgd
    scheduler: str = "cosine"  # cosine | constant
    grad_clip: float = 5.0
    seed: int = 0
    device: str = "cpu"  # auto | cpu | cuda
    amp: bool = True  # mixed precision, only used on CUDA
    threads: int | None = None

    def validate(self) -> TrainConfig:
        _check(isinstance(self.epochs, int) and self.epochs >= 1, "epochs must be an integer >= 1")
        _check(
            isinstance(self.batch_size, int) and self.batch_size >= 1,
            "batch_size must be an integer >= 1",
        )
        _finite("lr", self.lr, 1e-8, 10.0)
        _finite("weight_decay", self.weight_decay, 0.0, 1.0)
        _check(self.optimizer in ("adamw", "sgd"), f"unknown optimizer {self.optimizer!r}; known: adamw, sgd")
        _check(
            self.scheduler in ("cosine", "constant"),
            f"unknown scheduler {self.scheduler!r}; known: constant, cosine",
        )
        _check(self.device in ("auto", "cpu", "cuda"), f"unknown device {self.device!r}; known: auto, cpu, cuda")
        _check(self.threads is None or (isinstance(self.threads, int) and self.threads >= 1),
               "threads must be a positive integer")
        return self

@dataclass
class KDConfig:
    """The distillation recipe (DESIGN.md §2). ``soft_loss='none'`` with alpha=0 is scratch."""

    soft_loss: str = "kl"
    temperature: float = 4.0
    t_schedule: str = "constant"
    t_decay: float = 3.0  # lambda of exp schedule, per unit of training progress
    alpha: float = 0.9
    label_smoothing: float = 0.0
    hint_weight: float = 0.0
    hint_mapping: str = "uniform"
    relation: str = "none"
    relation_weight: float = 0.0
    attention_weight: float = 0.0
    importance: str = "none"
    teacher_weighting: str = "mean"

    def validate(self) -> KDConfig:
        for name, value, known in (
            ("soft_loss", self.soft_loss, SOFT_LOSSES),
            ("t_schedule", self.t_schedule, T_SCHEDULES),
            ("hint_mapping", self.hint_mapping, MAPPINGS),
            ("relation", self.relation, RELATIONS),
            ("importance", self.importance, IMPORTANCE),
            ("teacher_weighting", self.teacher_weighting, TEACHER_WEIGHTING),
        ):
            _check(value in known, f"unknown {name} {value!r}; known: {', '.join(known)}")
        _finite("temperature", self.temperature, 0.05, 100.0)
        _finite("t_decay", self.t_decay, 0.0, 100.0)
        _finite("alpha", self.alpha, 0.0, 1.0)
        _finite("label_smoothing", self.label_smoothing, 0.0, 0.99)
        for name in ("hint_weight", "relation_weight", "attention_weight"):
            _finite(name, getattr(self, name), 0.0, 1e4)
        return self

    @property
    def uses_teacher(self) -> bool:
        return (self.soft_loss != "none" and self.alpha > 0) or self.needs_features

    @property
    def needs_features(self) -> bool:
        """Feature-level losses need the teacher's intermediate activations on the fly."""
        rel = self.relation != "none" and self.relation_weight > 0
        return self.hint_weight > 0 or self.attention_weight > 0 or rel

@dataclass
class CostConfig:
    """How costs are measured."""

    batch_size: int = 64
    latency: bool = True
    warmup: int = 5
    repeats: int = 7  # timed blocks; the median is reported
    min_block_s: float = 0.02  # each timed block runs at least this long
    threads: int = 1
    device: str = "cpu"

    @classmethod
    def for_search(cls, **overrides: object) -> CostConfig:
        """Cheaper timing for per-trial measurement (~25 ms for a small CNN): five 2 ms blocks.

        Why: a trial trains for seconds; spending 0.4 s timing it would make the controller's
        overhead dominate. Exports re-measure with the full default settings.
        """
        return cls(**{"warmup": 2, "repeats": 5, "min_block_s": 0.002, **overrides})

def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)

def from_dict(cls: type, data: dict[str, Any] | None) -> Any:
    """Build a config dataclass from a dict, rejecting unknown keys with a clear message."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return cls(**data)

