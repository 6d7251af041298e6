"""Weighting between teachers (ensembles) and between samples (importance), DESIGN.md §2.

Why here and not inside a term: every response term needs the same combined teacher target,
and importance weights scale every response term the same way, so they are computed once per
batch by the recipe and shared.

Shapes: ``B`` batch, ``K`` classes, ``M`` teachers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from autokd.errors import ConfigError
from autokd.registry import Registry

__all__ = [
    "IMPORTANCE",
    "TEACHER_WEIGHTINGS",
    "combine_teacher_logits",
    "importance_weights",
    "stack_teachers",
    "teacher_soft_targets",
]

TEACHER_WEIGHTINGS: Registry[Callable[[Tensor], Tensor]] = Registry("teacher weighting")
IMPORTANCE: Registry[Callable[[Tensor | None, Tensor | None], Tensor]] = Registry("importance")
_WEIGHT_FLOOR = 1e-3  # keeps every importance weight > 0, so no sample is dropped entirely


# -- teachers: stacking, weighting, soft targets ---------------------------------------------
def stack_teachers(teacher_logits: Tensor) -> Tensor:
    """``(B, K)`` or ``(M, B, K)`` -> ``(M, B, K)``."""
    if teacher_logits.dim() == 2:
        return teacher_logits.unsqueeze(0)
    if teacher_logits.dim() != 3:
        shape = tuple(teacher_logits.shape)
        raise ConfigError(f"teacher logits must be (B, K) or (M, B, K), got shape {shape}")
    return teacher_logits


@TEACHER_WEIGHTINGS.register("mean")
def _mean_weights(teachers: Tensor) -> Tensor:
    """Equal weights ``1/M``: the plain ensemble ``1/M Σ_i T_i``."""
    m, b, _ = teachers.shape
    return teachers.new_full((m, b), 1.0 / m)


@TEACHER_WEIGHTINGS.register("confidence")
def _confidence_weights(teachers: Tensor) -> Tensor:
    """Selective weights ``w_i(x) = softmax_i(max_k p_i(k | x))``, with ``p_i`` at T=1."""
    confidence = teachers.float().softmax(dim=-1).amax(dim=-1)  # (M, B)
    return confidence.softmax(dim=0)


def _teacher_weights(teachers: Tensor, weighting: str) -> Tensor:
    """Per-sample teacher weights ``(M, B)``; each column sums to 1, no gradient."""
    return TEACHER_WEIGHTINGS.get(weighting)(teachers.detach())


def teacher_soft_targets(teacher_logits: Tensor, T: float, weighting: str) -> Tensor:
    """Soft targets of one teacher or an ensemble at temperature ``T``.

    Multi-teacher KD (DESIGN.md §2): ``"mean"`` gives ``1/M Σ_i softmax(z_i/T)``;
    ``"confidence"`` gives ``Σ_i w_i(x) softmax(z_i/T)`` with ``w(x)`` a softmax over teachers of
    each teacher's max probability at T=1, so on each sample the surer teacher counts more.
    With one teacher both are ``softmax(z/T)``.

    Args:
        teacher_logits: ``(M, B, K)`` logits of M teachers, or ``(B, K)`` for one.
        T: Temperature.
        weighting: ``"mean"`` or ``"confidence"``.

    Returns:
        Probabilities ``(B, K)``, rows summing to 1, detached.
    """
    teachers = stack_teachers(teacher_logits).detach().float()  # (M, B, K)
    weigh = TEACHER_WEIGHTINGS.get(weighting)  # validates the name for one teacher too
    if teachers.shape[0] == 1:  # every weighting gives one teacher weight 1: skip 3 ops/batch
        return (teachers[0] / T).softmax(dim=-1)  # (B, K)
    weights = weigh(teachers)  # (M, B)
    probs = (teachers / T).softmax(dim=-1)  # (M, B, K)
    return (weights.unsqueeze(-1) * probs).sum(dim=0)  # (B, K)


def combine_teacher_logits(teachers: Tensor, weighting: str) -> Tensor:
    """One ``(B, K)`` logit target for logit-space losses, weighted as the soft targets are."""
    weights = _teacher_weights(teachers, weighting)  # (M, B)
    return (weights.unsqueeze(-1) * teachers.detach().float()).sum(dim=0)  # (B, K)


# -- importance weighting --------------------------------------------------------------------
@IMPORTANCE.register("none")
def _no_importance(probs: Tensor | None, ce: Tensor | None) -> Tensor:
    ref = probs[:, 0] if probs is not None else ce
    if ref is None:
        raise ConfigError("importance 'none' needs teacher probabilities or student losses")
    return torch.ones_like(ref, dtype=torch.float32)


@IMPORTANCE.register("entropy")
def _entropy_importance(probs: Tensor | None, ce: Tensor | None) -> Tensor:
    """``w ∝ 1 − H(q_T)/log K``: trust samples the teacher is sure about."""
    del ce
    if probs is None:
        raise ConfigError("importance 'entropy' needs the teacher's probabilities")
    k = probs.shape[-1]
    if k < 2:
        return torch.ones_like(probs[:, 0], dtype=torch.float32)
    entropy = -torch.xlogy(probs.float(), probs.float()).sum(dim=-1)  # (B,)
    return (1.0 - entropy / math.log(k)).clamp_min(0.0) + _WEIGHT_FLOOR


@IMPORTANCE.register("student_loss")
def _student_loss_importance(probs: Tensor | None, ce: Tensor | None) -> Tensor:
    """``w ∝ CE_S(x)``: spend effort where the student is still wrong."""
    del probs
    if ce is None:
        raise ConfigError("importance 'student_loss' needs the student's per-sample losses")
    return ce.float().clamp_min(0.0) + _WEIGHT_FLOOR


def importance_weights(
    kind: str,
    teacher_probs_T1: Tensor | None = None,
    per_sample_student_ce: Tensor | None = None,
) -> Tensor:
    """Per-sample weights for ``Σ_i w_i L_KD(x_i)`` (DESIGN.md §2, importance weighting).

    Args:
        kind: ``"none"``, ``"entropy"`` (teacher certainty) or ``"student_loss"`` (hardness).
        teacher_probs_T1: Teacher probabilities at T=1, ``(B, K)``; needed by ``"entropy"``.
        per_sample_student_ce: Student cross entropy per sample, ``(B,)``; for ``"student_loss"``.

    Returns:
        Detached weights ``(B,)`` with mean 1, so weighting changes emphasis, not loss scale.
    """
    probs = None if teacher_probs_T1 is None else teacher_probs_T1.detach()
    ce = None if per_sample_student_ce is None else per_sample_student_ce.detach()
    raw = IMPORTANCE.get(kind)(probs, ce)  # (B,)
    return (raw / raw.mean().clamp_min(1e-12)).detach()
