"""What a DARTS run takes: targets, relaxation, search schedule and derivation options.

Optuna-free, like everything in ``autokd.nas``: the supernet search is plain PyTorch, and only
``autokd.controllers.darts`` records its results into a study.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autokd.errors import ConfigError
from autokd.models.supernet import RELAXATIONS

__all__ = ["DEFAULT_TARGETS", "TARGET_METRICS", "DartsOptions", "parse_targets"]

DEFAULT_TARGETS = (0.05, 0.1, 0.25, 0.5)
TARGET_METRICS = ("auto", "flops", "params", "latency")


@dataclass
class DartsOptions:
    """What ``--strategy darts`` takes (``SearchConfig.strategy_options``).

    Attributes:
        targets: Cost targets as fractions of the teacher's cost, one DARTS run each; further
            runs take geometric midpoints between neighbouring targets; None:
            ``DEFAULT_TARGETS``.
        target_metric: ``flops``, ``params``, ``latency``, or ``auto`` (latency when
            ``--max-latency-ms`` or the latency objective is used, else FLOPs).
        relaxation: ``gumbel`` (Gumbel-softmax with an annealed temperature, FBNet/GDAS; the
            default: its alphas end nearly one-hot, so the derived student costs what the
            expected cost said) or ``softmax`` (DARTS; its alphas stay broad here, and the
            derived student came out 2-10x cheaper than the constrained expected cost).
        epochs: Supernet search epochs per run.
        batch_size: Supernet batch size (None: the run's training batch size).
        warmup: Fraction of the epochs that train weights only.
        alpha_lr: Adam learning rate of the architecture parameters.
        alpha_weight_decay: Their weight decay (DARTS uses 1e-3; 0 here, so that alpha can
            become decisive within a short search).
        multiplier_lr: Dual-ascent step of each constraint multiplier per alpha step.
        tau_start: Gumbel temperature at the start, annealed exponentially to ``tau_end``.
        tau_end: Gumbel temperature at the end (low, so that the mode of alpha, which is what
            is derived, costs about what the constrained expectation costs).
        gumbel_hard: Straight-through one-hot samples (GDAS); only the sampled path runs.
        skip_cap: Cap on ``P(depth = shallowest)``, the probability that every optional stage
            is skipped, while no cost constraint is active (None: no cap).
        entropy_stop: Stop when the mean normalised alpha entropy falls to this (None: never).
        kd: ``fixed`` (recipe and training params from the space's first choice / midpoint)
            or ``sample`` (the study's sampler samples them per run).
        derivation: ``marginal`` (default: keep each stage / channel whose probability is at
            least 1/2, see ``Supernet.marginal_choice``) or ``argmax`` per decision.
        repair: Repair a derived architecture that breaks a limit (greedy, least alpha lost).
        latency_checks: Real measurements (and re-derivations) allowed per run under a
            latency limit.
    """

    targets: list[float] | None = None
    target_metric: str = "auto"
    relaxation: str = "gumbel"
    epochs: int = 16
    batch_size: int | None = None
    warmup: float = 0.25
    alpha_lr: float = 0.2
    alpha_weight_decay: float = 0.0
    multiplier_lr: float = 0.5
    tau_start: float = 5.0
    tau_end: float = 0.1
    gumbel_hard: bool = False
    skip_cap: float | None = 0.5
    entropy_stop: float | None = 0.15
    kd: str = "fixed"
    derivation: str = "marginal"
    repair: bool = True
    latency_checks: int = 3

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> DartsOptions:
        """Build from ``strategy_options``; unknown keys raise with the known ones."""
        optional = {f.name for f in dataclasses.fields(cls) if "None" in str(f.type)}
        # None switches an optional feature off (skip_cap, entropy_stop), else means default
        raw = {k: v for k, v in (raw or {}).items() if v is not None or k in optional}
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"unknown darts option(s) {', '.join(unknown)}; known: "
                              f"{', '.join(known)}")
        if isinstance(raw.get("targets"), str):
            raw["targets"] = parse_targets(raw["targets"])
        return cls(**raw).validate()

    def validate(self) -> DartsOptions:
        if self.targets is not None:
            self.targets = [float(t) for t in self.targets]
            if not self.targets or any(not math.isfinite(t) or t <= 0 for t in self.targets):
                raise ConfigError(f"--targets must be positive fractions, got {self.targets}")
        _one_of("target metric", self.target_metric, TARGET_METRICS)
        _one_of("relaxation", self.relaxation, RELAXATIONS)
        _one_of("darts kd mode", self.kd, ("fixed", "sample"))
        _one_of("derivation", self.derivation, ("marginal", "argmax"))
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"--darts-epochs must be a positive integer, got {self.epochs!r}")
        checks = [("warmup", self.warmup, 0.0, 0.9), ("alpha_lr", self.alpha_lr, 1e-6, 10.0),
                  ("multiplier_lr", self.multiplier_lr, 0.0, 100.0),
                  ("tau_start", self.tau_start, 1e-3, 100.0),
                  ("tau_end", self.tau_end, 1e-3, 100.0)]
        for name, value, low, high in checks:
            if not low <= float(value) <= high:
                raise ConfigError(f"darts option {name} must be in [{low}, {high}], got {value}")
        if self.skip_cap is not None and not 0.0 <= self.skip_cap <= 1.0:
            raise ConfigError(f"darts option skip_cap must be in [0, 1], got {self.skip_cap}")
        return self

    def target_for(self, run: int) -> float:
        """The given targets in order, then geometric midpoints between neighbours, level by
        level, so that more runs fill the gaps of the front instead of repeating a target."""
        sequence = list(self.targets or DEFAULT_TARGETS)
        while len(sequence) <= run:
            points = sorted(set(sequence))
            middles = [math.sqrt(a * b) for a, b in itertools.pairwise(points)]
            if not middles:  # one target: repeat it (other seeds)
                return sequence[run % len(sequence)]
            sequence += middles
        return sequence[run]


def _one_of(what: str, value: str, known: Sequence[str]) -> None:
    if value not in known:
        raise ConfigError(f"unknown {what} {value!r}; known: {', '.join(known)}")


def parse_targets(text: str) -> list[float]:
    """``"0.05,0.1,0.25"`` -> ``[0.05, 0.1, 0.25]`` (one clear error otherwise)."""
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"bad --targets {text!r}: expected fractions like 0.05,0.1,0.25") \
            from None
