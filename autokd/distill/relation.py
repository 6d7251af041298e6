"""Relation terms: which samples the networks consider alike, compared across a batch.

They compare samples with each other, so each returns one scalar per batch (importance weights,
which are per sample, do not apply). Both read the last feature tap of each model, globally
pooled to ``(B, D)``, so widths may differ.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from autokd.distill._term import Batch, Term, register_term
from autokd.distill.mapping import global_pool
from autokd.errors import ConfigError

__all__ = ["GramLoss", "RKDLoss", "last_embeddings"]


def last_embeddings(batch: Batch) -> tuple[Tensor, Tensor]:
    """The last student and teacher taps of a batch, pooled to ``(B, D_S)``, ``(B, D_T)``."""
    if not batch.student_features or not batch.teacher_features:
        raise ConfigError("relation KD terms need student and teacher features in the batch")
    return global_pool(batch.student_features[-1]), global_pool(batch.teacher_features[-1])


def _embed(h: Tensor) -> Tensor:
    """Any ``(B, ...)`` feature -> ``(B, D)`` float embedding (flattened)."""
    return h.flatten(1).float()


def _pairwise_distances(e: Tensor) -> Tensor:
    """Euclidean distances ``(B, B)`` between rows of ``(B, D)``; diagonal exactly 0."""
    sq = e.pow(2).sum(dim=1)  # (B,)
    d2 = sq.unsqueeze(0) + sq.unsqueeze(1) - 2.0 * (e @ e.T)  # (B, B)
    off = 1.0 - torch.eye(e.shape[0], device=e.device, dtype=e.dtype)
    return d2.clamp_min(1e-12).sqrt() * off  # clamp: sqrt has no gradient at 0


def _angles(e: Tensor) -> Tensor:
    """``(B, B, B)`` cosines ``[j, i, k] = ⟨e_ij, e_kj⟩`` with ``e_ij = unit(t_i − t_j)``."""
    unit = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # (B, B, D), [j, i]
    return torch.bmm(unit, unit.transpose(1, 2))


@register_term("rkd")
class RKDLoss(Term):
    """Relational KD, Park, Kim, Lu & Cho 2019, "Relational Knowledge Distillation".

    Distance: ``ψ_D(t_i, t_j) = ‖t_i − t_j‖ / μ`` with ``μ`` the mean distance over pairs
    ``i ≠ j``; ``L_D = mean_{i≠j} smoothL1(ψ_D^T, ψ_D^S)``.
    Angle: ``ψ_A(t_i, t_j, t_k) = ⟨e_ij, e_kj⟩``, ``e_ij = (t_i − t_j)/‖t_i − t_j‖``;
    ``L_A = mean_{i,j,k} smoothL1(ψ_A^T, ψ_A^S)`` (degenerate triplets are 0 on both sides).
    ``L = λ_D L_D + λ_A L_A`` with the paper's ``λ_D = 1, λ_A = 2``. Both parts are invariant
    to the scale of the embeddings, so student and teacher widths and norms need not match.

    Args:
        distance_weight: ``λ_D``.
        angle_weight: ``λ_A``.
    """

    kind: ClassVar[str] = "relation"
    needs_features: ClassVar[bool] = True

    def __init__(self, distance_weight: float = 1.0, angle_weight: float = 2.0) -> None:
        super().__init__()
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight

    @staticmethod
    def distance_loss(student: Tensor, teacher: Tensor) -> Tensor:
        """``L_D`` for ``(B, ...)`` embeddings; 0 when ``B < 2``."""
        s, t = _embed(student), _embed(teacher.detach())
        if s.shape[0] < 2:
            return s.sum() * 0.0
        off = ~torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
        d_s, d_t = _pairwise_distances(s)[off], _pairwise_distances(t)[off]  # (B(B-1),)
        d_s = d_s / d_s.mean().clamp_min(1e-12)
        d_t = d_t / d_t.mean().clamp_min(1e-12)
        return F.smooth_l1_loss(d_s, d_t)

    @staticmethod
    def angle_loss(student: Tensor, teacher: Tensor) -> Tensor:
        """``L_A`` for ``(B, ...)`` embeddings; ``B³`` memory, fine for training batches."""
        s, t = _embed(student), _embed(teacher.detach())
        return F.smooth_l1_loss(_angles(s), _angles(t))

    def forward(self, batch: Batch) -> Tensor:
        return self.compute(*last_embeddings(batch))

    def compute(self, student: Tensor, teacher: Tensor) -> Tensor:
        """``(B, D_S)``, ``(B, D_T)`` (or higher rank, flattened) -> scalar."""
        loss = self.distance_weight * self.distance_loss(student, teacher)
        return loss + self.angle_weight * self.angle_loss(student, teacher)


@register_term("gram")
class GramLoss(Term):
    """Cosine-Gram relation loss (DESIGN.md §2, the article's similarity-preserving form).

    ``ψ(H)_ij = h_i·h_j / (‖h_i‖‖h_j‖)`` over the N samples of a batch;
    ``L = ‖ψ(H^T) − ψ(H^S)‖_F² / N²``. Compares which samples the networks consider alike,
    independent of embedding width (cf. Tung & Mori 2019, "Similarity-Preserving KD").
    """

    kind: ClassVar[str] = "relation"
    needs_features: ClassVar[bool] = True

    @staticmethod
    def gram(h: Tensor) -> Tensor:
        """Cosine Gram matrix ``(N, N)`` of ``(N, ...)`` features."""
        unit = F.normalize(_embed(h), p=2, dim=1)  # (N, D)
        return unit @ unit.T

    def forward(self, batch: Batch) -> Tensor:
        return self.compute(*last_embeddings(batch))

    def compute(self, student: Tensor, teacher: Tensor) -> Tensor:
        """``(N, D_S)``, ``(N, D_T)`` -> scalar."""
        n = student.shape[0]
        diff = self.gram(teacher.detach()) - self.gram(student)  # (N, N)
        return diff.pow(2).sum() / (n * n)
