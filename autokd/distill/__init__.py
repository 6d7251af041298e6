"""Knowledge distillation: KD terms behind one protocol, the recipe that weighs them, hooks.

Why one package: everything here turns (student outputs, teacher outputs) into a training
signal and knows nothing about search or storage (DESIGN.md §1). A new KD term is one class
that subclasses ``Term`` and registers itself with ``@register_term("name")``, in a module
imported below; recipes, the CLI, YAML spaces, DARTS and the reports find it in ``TERMS``.
"""

from __future__ import annotations

from autokd.distill import (  # noqa: F401  (register the terms)
    feature,
    relation,
    response,
    transformer,
)
from autokd.distill._term import (
    KINDS,
    TERMS,
    Batch,
    Term,
    TermContext,
    names_of_kind,
    register_term,
)
from autokd.distill.feature import AttentionLoss, FitNetLoss, LearnedHintLoss, attention_map
from autokd.distill.hooks import FeatureHooks
from autokd.distill.loss import DistillLoss, kd_divergence
from autokd.distill.mapping import LearnedMapping, map_layers
from autokd.distill.recipe import (
    ASSISTANTS,
    INITS,
    QUANTIZE,
    SHORTHAND,
    KDConfig,
    hint_mappings,
    recipe_summary,
)
from autokd.distill.relation import GramLoss, RKDLoss
from autokd.distill.response import HardCELoss, KLDivergenceLoss, LogitCosineLoss, LogitMSELoss
from autokd.distill.schedules import SCHEDULES, temperature_at
from autokd.distill.transformer import (
    EmbeddingMSELoss,
    HiddenCosineLoss,
    MiniLMLoss,
    TinyBERTAttentionLoss,
)
from autokd.distill.weighting import (
    IMPORTANCE,
    TEACHER_WEIGHTINGS,
    importance_weights,
    teacher_soft_targets,
)

__all__ = [
    "ASSISTANTS",
    "IMPORTANCE",
    "INITS",
    "KINDS",
    "QUANTIZE",
    "SCHEDULES",
    "SHORTHAND",
    "TEACHER_WEIGHTINGS",
    "TERMS",
    "AttentionLoss",
    "Batch",
    "DistillLoss",
    "EmbeddingMSELoss",
    "FeatureHooks",
    "FitNetLoss",
    "GramLoss",
    "HardCELoss",
    "HiddenCosineLoss",
    "KDConfig",
    "KLDivergenceLoss",
    "LearnedHintLoss",
    "LearnedMapping",
    "LogitCosineLoss",
    "LogitMSELoss",
    "MiniLMLoss",
    "RKDLoss",
    "Term",
    "TermContext",
    "TinyBERTAttentionLoss",
    "attention_map",
    "hint_mappings",
    "importance_weights",
    "kd_divergence",
    "map_layers",
    "names_of_kind",
    "recipe_summary",
    "register_term",
    "teacher_soft_targets",
    "temperature_at",
]
