"""Knowledge-distillation building blocks: losses, temperature schedules, layer mapping, hooks.

Why one package: everything here turns (student outputs, teacher outputs) into a training
signal and knows nothing about search or storage (DESIGN.md §1).
"""

from __future__ import annotations

from autokd.distill.hooks import FeatureHooks
from autokd.distill.losses import (
    LOSSES,
    DistillLoss,
    importance_weights,
    kd_divergence,
    teacher_soft_targets,
)
from autokd.distill.mapping import LearnedMapping, map_layers
from autokd.distill.schedules import SCHEDULES, temperature_at

__all__ = [
    "DistillLoss",
    "FeatureHooks",
    "LOSSES",
    "LearnedMapping",
    "SCHEDULES",
    "importance_weights",
    "kd_divergence",
    "map_layers",
    "teacher_soft_targets",
    "temperature_at",
]
