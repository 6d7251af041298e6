"""Temperature schedules for response distillation (DESIGN.md §2).

Why a schedule: a high temperature early exposes the teacher's "dark knowledge" (the relative
sizes of wrong-class probabilities); annealing towards T=1 late in training aligns the soft
targets with what the student is evaluated on (it always predicts at T=1).

Every schedule is a plain function ``(T, decay, progress) -> float`` registered in
``SCHEDULES``; ``progress`` is the fraction of training done, in ``[0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from autokd.distill._term import Recipe
from autokd.errors import ConfigError
from autokd.registry import Registry

__all__ = ["SCHEDULES", "constant", "exponential", "linear", "temperature_at"]

ScheduleFn = Callable[[float, float, float], float]

SCHEDULES: Registry[ScheduleFn] = Registry("temperature schedule")


@SCHEDULES.register("constant")
def constant(temperature: float, decay: float, progress: float) -> float:
    """``T(t) = T``: the classic Hinton et al. (2015) setting."""
    del decay, progress  # same signature as the other schedules
    return float(temperature)


@SCHEDULES.register("exp")
def exponential(temperature: float, decay: float, progress: float) -> float:
    """``T(t) = max(1, T · exp(−λ t))``; floored at 1 so targets never get sharper than T=1."""
    return max(1.0, float(temperature) * math.exp(-decay * progress))


@SCHEDULES.register("linear")
def linear(temperature: float, decay: float, progress: float) -> float:
    """``T(t) = T + (1 − T) t``: straight line from T at the start to exactly 1 at the end."""
    del decay  # the slope is fixed by the two endpoints
    return float(temperature) + (1.0 - float(temperature)) * progress


def temperature_at(kd: Recipe, progress: float) -> float:
    """The distillation temperature after a fraction ``progress`` of training.

    Args:
        kd: The recipe; uses ``temperature``, ``t_schedule`` and ``t_decay``.
        progress: Fraction of training done. Clamped to ``[0, 1]`` because step counting in a
            trainer can overshoot by a rounding error on the last step.

    Returns:
        The temperature to soften both teacher and student logits with.
    """
    if not math.isfinite(progress):
        raise ConfigError(f"training progress must be a finite number, got {progress}")
    progress = min(1.0, max(0.0, float(progress)))
    return SCHEDULES.get(kd.t_schedule)(kd.temperature, kd.t_decay, progress)
