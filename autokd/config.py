"""Typed configuration for data, training and cost measurement.

Why dataclasses: every stage takes a plain, typed, printable object; YAML and the CLI only
fill these in, so validation lives in one place (``validate``) and tests can build configs
directly without going through any parser. The distillation recipe (``KDConfig``) lives in
``autokd.distill.recipe``, next to the registry of terms it is validated against.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from autokd.errors import ConfigError

__all__ = ["DataConfig", "TrainConfig", "CostConfig", "to_dict", "from_dict"]

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

