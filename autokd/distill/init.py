"""Teacher-layer initialisation (``init: teacher``): start a student from its teacher's layers.

Why: a shallow student whose layers are copies of some of its teacher's layers starts near a
function the teacher computes, which is how DistilBERT (Sanh et al. 2019) and TinyBERT
initialise (DistilBERT takes one layer out of two). Which teacher layer each student layer
copies is the recipe's ``hint_mapping`` (``autokd.distill.mapping.map_layers``; ``learned``,
which has no fixed map, copies by ``uniform``), so ``L_S = L_T / 2`` with ``uniform`` copies
teacher layers 2, 4, 6, ... (1-indexed ``l_S -> floor(l_S * L_T / L_S)``).

A student deeper than its teacher is allowed: the mapping then copies some teacher layers
twice (``uniform`` and ``bottom_up`` repeat, ``top_down`` starts at layer 1), a reasonable
start rather than a refusal.

When the weights cannot be copied, ``InitError`` says why; a search records that candidate
infeasible before training it. This module knows no model class: a family's
``teacher_init`` calls the copy for its own layout (the transformer's is below).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autokd.distill.mapping import map_layers
from autokd.errors import InitError

__all__ = ["init_transformer", "layer_map", "require_same"]


def layer_map(n_student: int, n_teacher: int, mapping: str) -> list[int]:
    """The 0-indexed teacher layer each student layer copies (``learned`` copies by uniform)."""
    return map_layers(n_student, n_teacher, "uniform" if mapping == "learned" else mapping)


def require_same(what: str, student: Any, teacher: Any) -> None:
    """Raise ``InitError`` naming ``what`` when the student's and teacher's values differ."""
    if student != teacher:
        raise InitError(f"cannot initialise from the teacher: {what} differs (student "
                        f"{student}, teacher {teacher})")


def _copy(student: nn.Module, teacher: nn.Module) -> None:
    """Every parameter and buffer of ``teacher`` into the same-shaped ``student`` in place."""
    with torch.no_grad():
        student.load_state_dict(teacher.state_dict())


def _check_transformer(student: nn.Module, teacher: nn.Module) -> None:
    """Refuse a teacher that is not a transformer of the same shape where weights are shared."""
    if not isinstance(teacher, nn.Module) or type(teacher) is not type(student):
        family = getattr(teacher, "family", None) or type(teacher).__name__
        raise InitError(f"cannot initialise a {student.family} student from a {family} "
                        f"teacher; init: teacher needs a teacher of the same family")
    s, t = student.spec, teacher.spec
    require_same("input kind", student.kind, teacher.kind)
    for key in ("hidden", "heads", "mlp_ratio", "patch", "vocab_size", "pad_id"):
        require_same(key, s[key], t[key])
    # patches: channels and the number of positions; token ids: the sequence length
    require_same("input shape", student.input_shape, teacher.input_shape)


def init_transformer(student: nn.Module, teacher: nn.Module, mapping: str) -> None:
    """Copy a transformer teacher into a transformer student, in place.

    Copied: the embedding (token table or patch projection, CLS token, positions), student
    layer ``i`` from teacher layer ``layer_map(...)[i]``, the final LayerNorm, and the
    classifier head when both have as many classes (always so when they share the data; a
    head of another size stays as initialised). Dropout and pooling may differ: they hold
    no weights.

    Raises:
        InitError: The teacher is not a transformer, or differs in input kind or shape,
            width, heads, MLP ratio, patch size, vocabulary or padding id.
    """
    _check_transformer(student, teacher)
    _copy(student.embed, teacher.embed)
    picks = layer_map(len(student.blocks), len(teacher.blocks), mapping)
    for block, pick in zip(student.blocks, picks, strict=True):
        _copy(block, teacher.blocks[pick])
    _copy(student.norm, teacher.norm)
    if student.head.weight.shape == teacher.head.weight.shape:
        _copy(student.head, teacher.head)
