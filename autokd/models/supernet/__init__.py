"""DARTS supernets: a family's architecture decisions relaxed into one trainable network.

``ops`` names the exported layers costs are made of, ``relax`` turns architecture parameters into
mixing weights, ``stage`` holds the mixed operations and ``net`` the supernet of stack families
(``StackForm``, which ``cnn``, ``cnn1d`` and ``mlp`` name in their ``Family`` record) with its
cost description in ``terms``; ``ir`` is the inverted-residual supernet of ``mbv2``
(``IRForm``), whose candidate layers ``ir_blocks`` builds.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from autokd.errors import ConfigError
from autokd.models._family import FAMILIES, get_family
from autokd.models.supernet.ir import IRForm, IRSupernet
from autokd.models.supernet.net import StackForm, Supernet
from autokd.models.supernet.ops import (
    OP_KINDS,
    CostTerm,
    OpKind,
    OpSpec,
    build_op,
    op_output_shape,
)
from autokd.models.supernet.relax import RELAXATIONS, Relaxation
from autokd.models.supernet.stage import MixedStage

__all__ = [
    "OP_KINDS",
    "RELAXATIONS",
    "CostTerm",
    "IRForm",
    "IRSupernet",
    "MixedStage",
    "OpKind",
    "OpSpec",
    "Relaxation",
    "StackForm",
    "Supernet",
    "build_op",
    "build_supernet",
    "op_output_shape",
]


def build_supernet(family: str, decisions: dict[str, list[Any]], fixed: dict[str, Any],
                   input_shape: tuple[int, ...], num_classes: int,
                   relaxation: Relaxation | None = None, seed: int = 0) -> nn.Module:
    """The supernet of ``family`` (its record's ``supernet`` form) over ``decisions``."""
    form = get_family(family).supernet if family in FAMILIES else None
    if form is None:
        known = [n for n in FAMILIES if FAMILIES.get(n).supernet is not None]
        raise ConfigError(f"no supernet for student family {family!r}; known: {', '.join(known)}")
    return form.build(family, decisions, fixed, input_shape, num_classes, relaxation, seed)
