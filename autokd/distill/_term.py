"""The one protocol every KD term follows, and the registry that names them.

Why one protocol: a recipe is a weighted sum of named terms (``{"kl": 0.9, "ce": 0.1,
"fitnet": 0.5}``). If every term takes the same batch record and says what it needs, the loss
that sums them, the CLI's choices, YAML validation, DARTS (which drops terms that need features)
and report labels all work from the registry, and adding a KD method is one class
(torchdistill registers its losses the same way).

A term reads a ``Batch`` and returns a per-sample loss ``(B,)`` (importance weights and the batch
mean are applied by the recipe), or a scalar for relational terms that compare samples with each
other. Class attributes declare what it needs, so nothing computes a teacher feature, a soft
target or a projection that no term of the recipe uses.

Intermediate activations arrive as *tap groups* (``needs_taps``): ``features`` (the channels-
first feature taps every family has), and for transformers ``embedding``, ``hidden``,
``attention`` and ``values``. The trainer hooks exactly the groups the recipe's terms name.

Shapes: ``B`` batch, ``K`` classes, ``M`` teachers, ``L`` sequence length.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from torch import Tensor, nn

from autokd.distill.weighting import combine_teacher_logits, teacher_soft_targets
from autokd.errors import ConfigError
from autokd.registry import Registry

__all__ = ["KINDS", "TERMS", "Batch", "Recipe", "Shape", "Taps", "Term", "TermContext",
           "names_of_kind", "register_term"]

Shape = tuple[int, ...]
Taps = dict[str, list[Tensor]]  # tap group -> one tensor per tapped module, in path order
FEATURES = "features"  # the group of the existing channels-first feature taps
# what a term is for; the CLI groups choices by it (--loss takes "soft", --relation "relation")
KINDS = ("soft", "hard", "feature", "relation")


class Recipe(Protocol):
    """The recipe options terms read (``autokd.distill.recipe.KDConfig`` provides them).

    Why a protocol: terms sit below the recipe, which validates names against their registry.
    """

    temperature: float
    t_schedule: str
    t_decay: float
    label_smoothing: float
    hint_mapping: str
    importance: str
    teacher_weighting: str


@dataclass
class Batch:
    """Everything a term may read about one training batch.

    Attributes:
        logits: Student logits ``(B, K)``.
        targets: Class indices ``(B,)``; None for unlabelled inputs, where only terms that
            do not ``needs_labels`` run.
        teacher_logits: Cached or live teacher logits ``(M, B, K)``; None without a teacher.
        temperature: ``T`` of this step (after the recipe's schedule).
        progress: Fraction of training done, in ``[0, 1]``.
        step: Optimiser steps taken before this batch (terms that warm up read it).
        weighting: How an ensemble's teachers are combined (``mean`` | ``confidence``).
        student_features: Student taps in the order of the student's ``feature_taps`` (the
            ``features`` group of ``student_taps``; either given fills the other).
        teacher_features: Teacher taps in the order of the teacher's ``feature_taps``.
        student_taps: Student tap groups, ``group -> [tensor per path]``.
        teacher_taps: Teacher tap groups, same layout (cached or live, no graph).
        mask: ``(B, L)`` bool, True at real tokens (token data); None when all are valid.
    """

    logits: Tensor
    targets: Tensor | None
    teacher_logits: Tensor | None = None
    temperature: float = 1.0
    progress: float = 0.0
    step: int = 0
    weighting: str = "mean"
    student_features: Sequence[Tensor] | None = None
    teacher_features: Sequence[Tensor] | None = None
    student_taps: Taps | None = None
    teacher_taps: Taps | None = None
    mask: Tensor | None = None
    _cache: dict[Any, Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        """Keep ``*_features`` and the ``features`` group of ``*_taps`` the same thing."""
        for who in ("student", "teacher"):
            feats, taps = getattr(self, f"{who}_features"), getattr(self, f"{who}_taps")
            if feats is None and taps is not None and FEATURES in taps:
                setattr(self, f"{who}_features", taps[FEATURES])
            elif feats is not None and taps is None:
                setattr(self, f"{who}_taps", {FEATURES: list(feats)})

    def taps(self, group: str) -> tuple[list[Tensor], list[Tensor]]:
        """``(student tensors, teacher tensors)`` of one tap group, or a clear error."""
        for who, taps in (("student", self.student_taps), ("teacher", self.teacher_taps)):
            if taps is None or group not in taps:
                raise ConfigError(f"this KD term needs the {who}'s {group!r} taps, and the "
                                  "batch has none")
        assert self.student_taps is not None and self.teacher_taps is not None
        return self.student_taps[group], self.teacher_taps[group]

    def soft_targets(self, T: float | None = None) -> Tensor:
        """Teacher probabilities at ``T`` (default: this step's), ``(B, K)``, computed once."""
        T = self.temperature if T is None else T
        key = ("probs", T)
        if key not in self._cache:
            self._cache[key] = teacher_soft_targets(self._teachers(), T, self.weighting)
        return self._cache[key]

    def target_logits(self) -> Tensor:
        """One ``(B, K)`` teacher logit target, ensembles weighted like the soft targets."""
        if "logits" not in self._cache:
            self._cache["logits"] = combine_teacher_logits(self._teachers(), self.weighting)
        return self._cache["logits"]

    def _teachers(self) -> Tensor:
        if self.teacher_logits is None:
            raise ConfigError("this KD term needs teacher logits, and the batch has none")
        return self.teacher_logits


@dataclass(frozen=True)
class TermContext:
    """What a term may need to build itself: the recipe, classes and tap shapes.

    ``student_shapes``/``teacher_shapes`` are the ``features`` group of
    ``student_tap_shapes``/``teacher_tap_shapes`` (either given fills the other).
    Shapes are per sample (batch dim dropped), one per tapped module, in path order.
    """

    kd: Recipe
    num_classes: int
    student_shapes: list[Shape] | None = None
    teacher_shapes: list[Shape] | None = None
    student_tap_shapes: dict[str, list[Shape]] | None = None
    teacher_tap_shapes: dict[str, list[Shape]] | None = None

    def __post_init__(self) -> None:
        for who in ("student", "teacher"):
            flat, groups = getattr(self, f"{who}_shapes"), getattr(self, f"{who}_tap_shapes")
            if flat is None and groups is not None and groups.get(FEATURES):
                object.__setattr__(self, f"{who}_shapes", list(groups[FEATURES]))
            merged = dict(groups or {})
            if flat is not None:
                merged.setdefault(FEATURES, list(flat))
            object.__setattr__(self, f"{who}_tap_shapes", merged)

    def tap_shapes(self, name: str, group: str) -> tuple[list[Shape], list[Shape]]:
        """Both shape lists of one tap group, or a clear error naming the term and the group."""
        for who in ("student", "teacher"):
            shapes = (getattr(self, f"{who}_tap_shapes") or {}).get(group)
            if not shapes:
                raise ConfigError(f"KD term {name!r} needs the {who}'s {group!r} taps, and "
                                  f"the {who} has none (a model exposes them in tap_groups)")
        return self.student_tap_shapes[group], self.teacher_tap_shapes[group]  # type: ignore[index]

    def shapes(self, name: str) -> tuple[list[Shape], list[Shape]]:
        """Both tap-shape lists, or a clear error naming the term that needs them."""
        if not self.student_shapes or not self.teacher_shapes:
            which = "student" if not self.student_shapes else "teacher"
            raise ConfigError(f"this KD recipe uses feature term {name!r} but got no {which} "
                              "feature shapes")
        return self.student_shapes, self.teacher_shapes


class Term(nn.Module, abc.ABC):
    """Base of KD terms: ``forward(batch) -> (B,)`` per-sample loss, or a scalar.

    Subclasses set the class attributes and implement ``forward``; the math itself is a
    separate method (``compute``) that takes plain tensors, so it can be checked against
    reference values without building a batch.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "soft"
    needs_teacher: ClassVar[bool] = True  # reads teacher logits
    needs_labels: ClassVar[bool] = False  # reads ``batch.targets`` (skipped on unlabelled inputs)
    needs_features: ClassVar[bool] = False  # reads the "features" tap group
    needs_taps: ClassVar[tuple[str, ...]] = ()  # tap groups it reads (besides "features")
    importance_weighted: ClassVar[bool] = False  # per-sample importance weights apply

    @classmethod
    def tap_groups(cls) -> tuple[str, ...]:
        """Every tap group this term reads: ``needs_taps``, plus ``features`` when
        ``needs_features`` (the older spelling of ``needs_taps=("features",)``)."""
        extra = (FEATURES,) if cls.needs_features else ()
        return tuple(dict.fromkeys((*cls.needs_taps, *extra)))

    @classmethod
    def create(cls, ctx: TermContext) -> Term:
        """Build the term for one recipe (feature terms size their projections here)."""
        if cls.needs_features:
            ctx.shapes(cls.name)  # fail at construction, not at the first batch
        for group in cls.needs_taps:
            ctx.tap_shapes(cls.name, group)
        return cls()

    @classmethod
    def label(cls, weight: float, kd: Recipe) -> str:
        """A short report label for this term at ``weight`` (e.g. ``hint=0.5:uniform``).

        Soft and hard terms return only their options (``T=4.0 constant``): the recipe's label
        writes their names and weights together (``kl a=0.90``).
        """
        del kd
        return "" if cls.kind in ("soft", "hard") else f"{cls.name}={weight}"

    @abc.abstractmethod
    def forward(self, batch: Batch) -> Tensor:
        """The loss of one batch: ``(B,)`` per sample, or a scalar for relational terms."""


TERMS: Registry[type[Term]] = Registry("KD term")


def register_term(name: str) -> Callable[[type[Term]], type[Term]]:
    """Class decorator: register a ``Term`` subclass under ``name``."""

    def deco(cls: type[Term]) -> type[Term]:
        if cls.kind not in KINDS:
            raise ConfigError(f"KD term {name}: unknown kind {cls.kind!r}; known: "
                              f"{', '.join(KINDS)}")
        cls.name = name
        TERMS.register(name, cls)
        return cls

    return deco


def names_of_kind(kind: str) -> list[str]:
    """Registered terms of one kind, e.g. the soft losses ``--loss`` accepts."""
    return [n for n in TERMS.names() if TERMS.get(n).kind == kind]
