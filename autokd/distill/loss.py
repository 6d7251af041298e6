"""The loss of one recipe: the weighted sum of its named terms (DESIGN.md §2).

``total = Σ_n w_n · mean_b(ω_b · L_n(b))`` over the recipe's terms ``n``, with per-sample
importance weights ``ω`` on the response terms (1 elsewhere). Without teacher logits (a scratch
run, or a search step without a teacher) the soft terms drop out and the hard cross entropy
carries weight 1, as in plain training. A batch of unlabelled inputs (``unlabeled_total``)
sums only the terms that read no labels, with the recipe's weights.

Shapes: ``B`` batch, ``K`` classes, ``M`` teachers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autokd.distill._term import FEATURES, TERMS, Batch, Shape, Taps, Term, TermContext
from autokd.distill.recipe import KDConfig
from autokd.distill.response import HardCELoss, KLDivergenceLoss
from autokd.distill.schedules import temperature_at
from autokd.distill.weighting import importance_weights, stack_teachers, teacher_soft_targets
from autokd.errors import ConfigError

__all__ = ["DistillLoss", "kd_divergence"]

logger = logging.getLogger(__name__)
_HARD_ONLY = {"ce": 1.0}


def _check_shapes(name: str, shapes: Sequence[Sequence[int]] | None) -> list[Shape] | None:
    if shapes is None:
        return None
    out = [tuple(int(d) for d in s) for s in shapes]
    if any(not s or min(s) < 1 for s in out):
        raise ConfigError(f"{name} feature shapes must be non-empty positive sizes, got {out}")
    return out


def _group_shapes(who: str, flat: Sequence[Sequence[int]] | None,
                  groups: dict[str, Sequence[Sequence[int]]] | None,
                  ) -> dict[str, list[Shape]] | None:
    """Every tap group's checked shapes; the flat feature shapes are the ``features`` group."""
    out = {g: _check_shapes(f"{who} {g!r}", s) or [] for g, s in (groups or {}).items()}
    features = _check_shapes(who, flat)
    if features is not None:
        out[FEATURES] = features
    return out if (groups is not None or features is not None) else None


class DistillLoss(nn.Module):
    """The KD objective of one ``KDConfig``: its terms, built once, summed with their weights.

    The module owns learned projections of feature terms: add ``parameters()`` to the student's
    optimizer.

    Args:
        kd: The recipe (validated here).
        num_classes: ``K``.
        student_feature_shapes: One shape per student tap (no batch dim), input to output.
        teacher_feature_shapes: One shape per teacher tap, input to output.
        student_tap_shapes: Shapes of every tap group, ``group -> [shape per path]``
            (``features`` may come from here instead of ``student_feature_shapes``).
        teacher_tap_shapes: The teacher's, same layout.

    Raises:
        ConfigError: If the recipe needs features and shapes are missing or cannot be paired.
    """

    def __init__(
        self,
        kd: KDConfig,
        num_classes: int,
        student_feature_shapes: Sequence[Sequence[int]] | None = None,
        teacher_feature_shapes: Sequence[Sequence[int]] | None = None,
        *,
        student_tap_shapes: dict[str, Sequence[Sequence[int]]] | None = None,
        teacher_tap_shapes: dict[str, Sequence[Sequence[int]]] | None = None,
    ) -> None:
        super().__init__()
        self.kd = kd.validate()
        if num_classes < 2:
            raise ConfigError(f"distillation needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        s_groups = _group_shapes("student", student_feature_shapes, student_tap_shapes)
        t_groups = _group_shapes("teacher", teacher_feature_shapes, teacher_tap_shapes)
        ctx = TermContext(kd, num_classes, student_tap_shapes=s_groups,
                          teacher_tap_shapes=t_groups)
        self.weights = kd.weights()
        self.terms = nn.ModuleDict({n: TERMS.get(n).create(ctx) for n in self.weights})
        # the plain cross entropy that carries a batch without teacher logits
        hard = self.terms["ce"] if "ce" in self.terms else HardCELoss(kd.label_smoothing)
        self.hard: Term = hard
        #: the tap groups the terms read: the trainer hooks and enables exactly these
        self.tap_groups: set[str] = {g for t in self.terms.values() for g in t.tap_groups()}
        self._n_taps = {g: (len((ctx.student_tap_shapes or {}).get(g, ())),
                            len((ctx.teacher_tap_shapes or {}).get(g, ())))
                        for g in sorted(self.tap_groups)}

    def forward(
        self,
        student_logits: Tensor,
        targets: Tensor,
        teacher_logits: Tensor | None = None,
        *,
        progress: float,
        step: int = 0,
        student_features: Sequence[Tensor] | None = None,
        teacher_features: Sequence[Tensor] | None = None,
        student_taps: Taps | None = None,
        teacher_taps: Taps | None = None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """The loss of one batch and its parts.

        Args:
            student_logits: ``(B, K)``.
            targets: ``(B,)`` class indices.
            teacher_logits: ``(M, B, K)``, ``(B, K)`` or None (then no soft term).
            progress: Fraction of training done, for the temperature schedule.
            step: Optimiser steps taken before this batch.
            student_features: Student taps in the order of ``student_feature_shapes``.
            teacher_features: Teacher taps in the order of ``teacher_feature_shapes``.
            student_taps: Student tap groups (``features`` may come from here instead).
            teacher_taps: Teacher tap groups.
            mask: ``(B, L)`` bool of real tokens, or None (all positions valid).

        Returns:
            The scalar total, and detached floats per active term plus ``"total"``.
        """
        batch = self._batch(student_logits, targets, teacher_logits, progress, step,
                            student_features=student_features, teacher_features=teacher_features,
                            student_taps=student_taps, teacher_taps=teacher_taps, mask=mask)
        parts, weights = self._parts(batch)
        total = _combine(parts, weights)
        values = {name: float(value.detach()) for name, value in parts.items()}
        values["total"] = float(total.detach())
        return total, values

    def total(
        self,
        student_logits: Tensor,
        targets: Tensor,
        teacher_logits: Tensor | None = None,
        *,
        progress: float,
        step: int = 0,
        student_features: Sequence[Tensor] | None = None,
        teacher_features: Sequence[Tensor] | None = None,
        student_taps: Taps | None = None,
        teacher_taps: Taps | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """``forward`` without the per-part floats (each is a host sync): the training step."""
        batch = self._batch(student_logits, targets, teacher_logits, progress, step,
                            student_features=student_features, teacher_features=teacher_features,
                            student_taps=student_taps, teacher_taps=teacher_taps, mask=mask)
        parts, weights = self._parts(batch)
        return _combine(parts, weights)

    def unlabeled_total(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        *,
        progress: float,
        step: int = 0,
        student_taps: Taps | None = None,
        teacher_taps: Taps | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """The loss of a batch of inputs without labels: the terms that read no labels
        (``needs_labels`` false), weighted as in the recipe; 0 when there are none.

        Why the same weights: an unlabelled sample then pulls the student towards the teacher
        exactly as a labelled one does, minus the label's pull. Importance weighting by the
        student's loss (which needs labels) falls back to equal weights here.
        """
        batch = self._batch(student_logits, None, teacher_logits, progress, step,
                            student_taps=student_taps, teacher_taps=teacher_taps, mask=mask)
        parts, weights = self._parts(batch)
        if not parts:
            return student_logits.sum() * 0.0  # keeps the graph; nothing to learn here
        return _combine(parts, weights)

    # -- the parts ---------------------------------------------------------------------------
    def _parts(self, batch: Batch) -> tuple[dict[str, Tensor], dict[str, float]]:
        """Each term's batch value, and the weights to sum them with (without labels, only
        the terms that read none)."""
        weights = self._importance(batch)  # (B,) or None
        if batch.teacher_logits is None:  # no teacher: plain training on the labels
            return {"ce": _weighted_mean(self.hard(batch), weights)}, _HARD_ONLY
        parts = {}
        for name, term in self.terms.items():
            if batch.targets is None and term.needs_labels:
                continue
            value = term(batch)  # (B,) or a scalar
            parts[name] = _weighted_mean(value, weights if term.importance_weighted else None)
        return parts, self.weights

    def _batch(self, logits: Tensor, targets: Tensor | None, teacher_logits: Tensor | None,
               progress: float, step: int, **taps: Any) -> Batch:
        """The checked batch record; ``taps`` are ``Batch``'s feature, tap and mask fields."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ConfigError(f"student logits must be (B, {self.num_classes}), got "
                              f"{tuple(logits.shape)}")
        teachers = None if teacher_logits is None else stack_teachers(teacher_logits)
        if teachers is not None and teachers.shape[1:] != logits.shape:
            raise ConfigError(f"teacher logits {tuple(teachers.shape)} do not match student "
                              f"logits {tuple(logits.shape)}")
        batch = Batch(logits, targets, teachers, temperature_at(self.kd, progress), progress,
                      step, self.kd.teacher_weighting, **taps)
        if self.tap_groups and teachers is not None:
            self._check_taps(batch.student_taps, batch.teacher_taps)
        mask = batch.mask
        if mask is not None and (mask.dim() != 2 or mask.shape[0] != len(logits)):
            raise ConfigError(f"the token mask must be (B, L) with B={len(logits)}, got "
                              f"{tuple(mask.shape)}")
        return batch

    def _check_taps(self, student: Taps | None, teacher: Taps | None) -> None:
        """Each group the terms read has as many tensors as shapes were given (else one line)."""
        for group, (n_s, n_t) in self._n_taps.items():
            got = tuple(None if t is None or group not in t else len(t[group])
                        for t in (student, teacher))
            if got != (n_s, n_t):
                noun = "features" if group == FEATURES else f"{group!r} taps"
                raise ConfigError(f"this KD recipe needs {n_s} student and {n_t} teacher "
                                  f"{noun}, got {got}")

    def _importance(self, batch: Batch) -> Tensor | None:
        """Per-sample weights ``(B,)``, or None for equal weights (saves ops every batch)."""
        kind = self.kd.importance
        if kind == "none" or (kind == "entropy" and batch.teacher_logits is None):
            return None
        if batch.targets is None and kind != "entropy":  # unlabelled: no student loss to read
            return None
        probs = batch.soft_targets(1.0) if batch.teacher_logits is not None else None
        ce = None if batch.targets is None else F.cross_entropy(
            batch.logits.detach().float(), batch.targets.long(), reduction="none")  # (B,)
        return importance_weights(kind, probs, ce)



def _combine(parts: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """``Σ_n w_n · part_n`` in the recipe's order (weight 1 adds the part as it is)."""
    total = None
    for name, value in parts.items():
        weight = weights[name]
        term = value if weight == 1.0 else weight * value
        total = term if total is None else total + term
    assert total is not None  # a validated recipe has at least one term
    return total


def _weighted_mean(per_sample: Tensor, weights: Tensor | None) -> Tensor:
    """``mean_i w_i L_i``; ``None`` means all weights are 1 (scalars pass through)."""
    return per_sample.mean() if weights is None else (per_sample * weights).mean()


@torch.no_grad()
def kd_divergence(student_logits: Tensor, teacher_logits: Tensor, T: float) -> float:
    """Batch mean of ``T² · KL(q^T ‖ q^S)`` (the "val KD loss" of reports).

    ``teacher_logits`` may be ``(B, K)`` or ``(M, B, K)``; an ensemble is averaged (``"mean"``).
    """
    q_t = teacher_soft_targets(teacher_logits, T, "mean")  # (B, K)
    return float(KLDivergenceLoss.compute(student_logits, q_t, T).mean())
