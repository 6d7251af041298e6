"""Response terms: the student's logits against the teacher's (soft) or the labels (hard).

Each returns one value per sample, ``(B,)``, so importance weights can scale samples before the
batch mean. Shapes: ``B`` batch, ``K`` classes.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from autokd.distill._term import Batch, Recipe, Term, TermContext, register_term
from autokd.errors import ConfigError

__all__ = ["HardCELoss", "KLDivergenceLoss", "LogitCosineLoss", "LogitMSELoss"]


@register_term("kl")
class KLDivergenceLoss(Term):
    """Soft-target KD, Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network".

    ``L(x) = T² · KL(q^T ‖ q^S) = T² Σ_k q^T_k (log q^T_k − log q^S_k)`` with
    ``q = softmax(z/T)``. The ``T²`` keeps gradient magnitudes comparable across temperatures
    (the gradient of the KL alone shrinks like ``1/T²``), so alpha means the same at any T.
    """

    kind: ClassVar[str] = "soft"
    importance_weighted: ClassVar[bool] = True

    @classmethod
    def label(cls, weight: float, kd: Recipe) -> str:
        return f"T={kd.temperature:.1f} {kd.t_schedule}"

    def forward(self, batch: Batch) -> Tensor:
        T = batch.temperature
        return self.compute(batch.logits, batch.soft_targets(T), T)

    @staticmethod
    def compute(student_logits: Tensor, teacher_probs: Tensor, T: float) -> Tensor:
        """``(B, K)`` logits, ``(B, K)`` teacher probabilities already at T -> ``(B,)``."""
        log_q_s = F.log_softmax(student_logits.float() / T, dim=-1)  # (B, K)
        q_t = teacher_probs.detach().float()  # (B, K)
        # kl_div computes q·(log q − log p) with 0·log 0 = 0, fused (fewer ops per batch)
        kl = F.kl_div(log_q_s, q_t, reduction="none").sum(dim=-1)  # (B,)
        return (T * T) * kl


@register_term("mse")
class LogitMSELoss(Term):
    """Logit matching, Ba & Caruana 2014, "Do Deep Nets Really Need to be Deep?".

    ``L(x) = 1/K ‖z^T − z^S‖²``: regress the logits directly (the ``T → ∞`` limit of KD).
    """

    kind: ClassVar[str] = "soft"
    importance_weighted: ClassVar[bool] = True

    def forward(self, batch: Batch) -> Tensor:
        return self.compute(batch.logits, batch.target_logits())

    @staticmethod
    def compute(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """``(B, K)``, ``(B, K)`` -> ``(B,)``."""
        diff = teacher_logits.detach().float() - student_logits.float()  # (B, K)
        return diff.pow(2).mean(dim=-1)


@register_term("cosine")
class LogitCosineLoss(Term):
    """Cosine logit matching (DESIGN.md §2 response variant): ``L(x) = 1 − cos(z^T, z^S)``.

    Ignores logit scale and matches only the direction, so it lies in ``[0, 2]``.
    """

    kind: ClassVar[str] = "soft"
    importance_weighted: ClassVar[bool] = True

    def forward(self, batch: Batch) -> Tensor:
        return self.compute(batch.logits, batch.target_logits())

    @staticmethod
    def compute(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """``(B, K)``, ``(B, K)`` -> ``(B,)`` in ``[0, 2]``."""
        cos = F.cosine_similarity(student_logits.float(), teacher_logits.detach().float(), dim=-1)
        return (1.0 - cos).clamp(0.0, 2.0)  # clamp: rounding can push |cos| past 1


@register_term("ce")
class HardCELoss(Term):
    """Hard-label cross entropy with label smoothing, Szegedy et al. 2016 ("Inception-v3").

    ``L(x) = −Σ_k y'_k log p^S_k`` with ``y' = (1 − ε) y + ε/K`` and ``ε`` the recipe's
    ``label_smoothing``. Smoothing tempers the hard term when the labels (or an overconfident
    teacher) would push the student to extremes.

    Args:
        label_smoothing: ``ε`` in ``[0, 1)``.
    """

    kind: ClassVar[str] = "hard"
    needs_teacher: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = True
    importance_weighted: ClassVar[bool] = True

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)

    @classmethod
    def create(cls, ctx: TermContext) -> HardCELoss:
        return cls(ctx.kd.label_smoothing)

    def forward(self, batch: Batch) -> Tensor:
        if batch.targets is None:
            raise ConfigError("the hard-label term needs labels, and this batch has none")
        return self.compute(batch.logits, batch.targets)

    def compute(self, student_logits: Tensor, targets: Tensor) -> Tensor:
        """``(B, K)`` logits, ``(B,)`` class indices -> ``(B,)``."""
        # torch's label smoothing is this formula: (1 − ε)·nll + ε·mean_k(−log p_k), fused
        return F.cross_entropy(student_logits.float(), targets.long(), reduction="none",
                               label_smoothing=self.label_smoothing)
