"""Knowledge-distillation losses and the recipe that composes them (DESIGN.md §2).

Each KD method is a small registered ``nn.Module`` whose docstring cites its paper and formula;
``DistillLoss`` builds the ones a ``KDConfig`` asks for and returns one scalar plus its parts.
Response losses return one value per sample, shape ``(B,)``, so importance weights can scale
samples before the batch mean; relational losses compare samples with each other and are
scalars by nature.

Shapes: ``B`` batch, ``K`` classes, ``M`` teachers, ``C`` channels, ``S`` spatial dims.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autokd.config import KDConfig
from autokd.distill.mapping import LearnedMapping, global_pool, map_layers
from autokd.distill.schedules import temperature_at
from autokd.errors import ConfigError
from autokd.registry import Registry

__all__ = [
    "LOSSES",
    "TEACHER_WEIGHTINGS",
    "IMPORTANCE",
    "KLDivergenceLoss",
    "LogitMSELoss",
    "LogitCosineLoss",
    "HardCELoss",
    "FitNetLoss",
    "RKDLoss",
    "GramLoss",
    "AttentionLoss",
    "attention_map",
    "DistillLoss",
    "teacher_soft_targets",
    "importance_weights",
    "kd_divergence",
]

logger = logging.getLogger(__name__)

LOSSES: Registry[type[nn.Module]] = Registry("loss")
TEACHER_WEIGHTINGS: Registry[Callable[[Tensor], Tensor]] = Registry("teacher weighting")
IMPORTANCE: Registry[Callable[[Tensor | None, Tensor | None], Tensor]] = Registry("importance")

_WEIGHT_FLOOR = 1e-3  # keeps every importance weight > 0, so no sample is dropped entirely
Features = Sequence[Tensor]  # one tensor per feature tap, (B, C, *S) or (B, D)
_POOLS = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d}  # spatial rank -> pool


# ---------------------------------------------------------------------------------------------
# Teachers: stacking, weighting, soft targets
# ---------------------------------------------------------------------------------------------


def _stack_teachers(teacher_logits: Tensor) -> Tensor:
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
    teachers = _stack_teachers(teacher_logits).detach().float()  # (M, B, K)
    weigh = TEACHER_WEIGHTINGS.get(weighting)  # validates the name for one teacher too
    if teachers.shape[0] == 1:  # every weighting gives one teacher weight 1: skip 3 ops/batch
        return (teachers[0] / T).softmax(dim=-1)  # (B, K)
    weights = weigh(teachers)  # (M, B)
    probs = (teachers / T).softmax(dim=-1)  # (M, B, K)
    return (weights.unsqueeze(-1) * probs).sum(dim=0)  # (B, K)


def _combine_teacher_logits(teachers: Tensor, weighting: str) -> Tensor:
    """One ``(B, K)`` logit target for logit-space losses, weighted as the soft targets are."""
    weights = _teacher_weights(teachers, weighting)  # (M, B)
    return (weights.unsqueeze(-1) * teachers.detach().float()).sum(dim=0)  # (B, K)


# ---------------------------------------------------------------------------------------------
# Importance weighting
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Response losses
# ---------------------------------------------------------------------------------------------


@LOSSES.register("kl")
class KLDivergenceLoss(nn.Module):
    """Soft-target KD, Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network".

    ``L(x) = T² · KL(q^T ‖ q^S) = T² Σ_k q^T_k (log q^T_k − log q^S_k)`` with
    ``q = softmax(z/T)``. The ``T²`` keeps gradient magnitudes comparable across temperatures
    (the gradient of the KL alone shrinks like ``1/T²``), so alpha means the same at any T.
    """

    def forward(self, student_logits: Tensor, teacher_probs: Tensor, T: float) -> Tensor:
        """``(B, K)`` logits, ``(B, K)`` teacher probabilities already at T -> ``(B,)``."""
        log_q_s = F.log_softmax(student_logits.float() / T, dim=-1)  # (B, K)
        q_t = teacher_probs.detach().float()  # (B, K)
        # kl_div computes q·(log q − log p) with 0·log 0 = 0, fused (fewer ops per batch)
        kl = F.kl_div(log_q_s, q_t, reduction="none").sum(dim=-1)  # (B,)
        return (T * T) * kl


@LOSSES.register("mse")
class LogitMSELoss(nn.Module):
    """Logit matching, Ba & Caruana 2014, "Do Deep Nets Really Need to be Deep?".

    ``L(x) = 1/K ‖z^T − z^S‖²``: regress the logits directly (the ``T → ∞`` limit of KD).
    """

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """``(B, K)``, ``(B, K)`` -> ``(B,)``."""
        diff = teacher_logits.detach().float() - student_logits.float()  # (B, K)
        return diff.pow(2).mean(dim=-1)


@LOSSES.register("cosine")
class LogitCosineLoss(nn.Module):
    """Cosine logit matching (DESIGN.md §2 response variant): ``L(x) = 1 − cos(z^T, z^S)``.

    Ignores logit scale and matches only the direction, so it lies in ``[0, 2]``.
    """

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """``(B, K)``, ``(B, K)`` -> ``(B,)`` in ``[0, 2]``."""
        cos = F.cosine_similarity(student_logits.float(), teacher_logits.detach().float(), dim=-1)
        return (1.0 - cos).clamp(0.0, 2.0)  # clamp: rounding can push |cos| past 1


@LOSSES.register("ce")
class HardCELoss(nn.Module):
    """Hard-label cross entropy with label smoothing, Szegedy et al. 2016 ("Inception-v3").

    ``L(x) = −Σ_k y'_k log p^S_k`` with ``y' = (1 − ε) y + ε/K``. Smoothing tempers the hard
    term when the labels (or an overconfident teacher) would push the student to extremes.

    Args:
        label_smoothing: ``ε`` in ``[0, 1)``.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)

    def forward(self, student_logits: Tensor, targets: Tensor) -> Tensor:
        """``(B, K)`` logits, ``(B,)`` class indices -> ``(B,)``."""
        # torch's label smoothing is this formula: (1 − ε)·nll + ε·mean_k(−log p_k), fused
        return F.cross_entropy(student_logits.float(), targets.long(), reduction="none",
                               label_smoothing=self.label_smoothing)


# ---------------------------------------------------------------------------------------------
# Feature losses
# ---------------------------------------------------------------------------------------------


def _match_spatial(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool ``(B, C, *S)`` tensors to their common (elementwise smaller) spatial size."""
    size = tuple(min(x, y) for x, y in zip(a.shape[2:], b.shape[2:], strict=True))
    pool = _POOLS[len(size)]
    a = a if tuple(a.shape[2:]) == size else pool(a, size)
    b = b if tuple(b.shape[2:]) == size else pool(b, size)
    return a, b


def _projection(student_shape: Sequence[int], teacher_shape: Sequence[int]) -> nn.Module:
    """The FitNet regressor φ for one pair: linear (C,), 1-D conv (C, L), 1×1 conv (C, H, W).

    Pairs of different rank (e.g. a conv map and a pooled embedding) get a linear φ on
    globally pooled vectors.
    """
    if not (1 <= len(student_shape) <= 3 and 1 <= len(teacher_shape) <= 3):
        raise ConfigError(
            f"hint features must be (C,), (C, L) or (C, H, W); "
            f"got student {tuple(student_shape)} and teacher {tuple(teacher_shape)}"
        )
    c_s, c_t = student_shape[0], teacher_shape[0]
    if len(student_shape) == 1 or len(student_shape) != len(teacher_shape):
        return nn.Linear(c_s, c_t)
    conv = nn.Conv1d if len(student_shape) == 2 else nn.Conv2d
    return conv(c_s, c_t, kernel_size=1)


@LOSSES.register("fitnet")
class FitNetLoss(nn.Module):
    """Hint learning, Romero et al. 2015, "FitNets: Hints for Thin Deep Nets".

    ``L(x) = Σ_l mse(h_l^T, φ_l(h_l^S))`` over mapped (student, teacher) feature pairs, where
    ``φ_l`` is a learned regressor to the teacher's width (created here from the shapes) and
    ``mse`` averages over channels and positions. If spatial sizes differ the larger map is
    average-pooled to the smaller, so a student need not mirror the teacher's resolution; if
    ranks differ both are globally pooled to ``(B, C)``.

    Args:
        student_shapes: Per-pair student feature shape without batch dim.
        teacher_shapes: Per-pair teacher feature shape without batch dim, same order.
    """

    def __init__(
        self, student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]]
    ) -> None:
        super().__init__()
        if len(student_shapes) != len(teacher_shapes) or not student_shapes:
            raise ConfigError("FitNet needs one teacher shape per student shape (at least one)")
        pairs = zip(student_shapes, teacher_shapes, strict=True)
        self.proj = nn.ModuleList(_projection(s, t) for s, t in pairs)

    def forward(self, student_features: Features, teacher_features: Features) -> Tensor:
        """Lists of ``(B, C, *S)`` features, one per pair -> ``(B,)``."""
        total = student_features[0].new_zeros(student_features[0].shape[0], dtype=torch.float32)
        for phi, h_s, h_t in zip(self.proj, student_features, teacher_features, strict=True):
            h_t = h_t.detach().float()
            if h_s.dim() != h_t.dim():
                h_s, h_t = global_pool(h_s), global_pool(h_t)  # (B, C_S), (B, C_T)
            elif h_s.dim() > 2:  # pool first: averaging commutes with a 1x1 conv, and is cheaper
                h_s, h_t = _match_spatial(h_s, h_t)
            err = (h_t - phi(h_s).float()).pow(2)  # (B, C_T, *S)
            total = total + err.flatten(1).mean(dim=1)
        return total


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


@LOSSES.register("rkd")
class RKDLoss(nn.Module):
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

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """``(B, D_S)``, ``(B, D_T)`` (or higher rank, flattened) -> scalar."""
        loss = self.distance_weight * self.distance_loss(student, teacher)
        return loss + self.angle_weight * self.angle_loss(student, teacher)


@LOSSES.register("gram")
class GramLoss(nn.Module):
    """Cosine-Gram relation loss (DESIGN.md §2, the article's similarity-preserving form).

    ``ψ(H)_ij = h_i·h_j / (‖h_i‖‖h_j‖)`` over the N samples of a batch;
    ``L = ‖ψ(H^T) − ψ(H^S)‖_F² / N²``. Compares which samples the networks consider alike,
    independent of embedding width (cf. Tung & Mori 2019, "Similarity-Preserving KD").
    """

    @staticmethod
    def gram(h: Tensor) -> Tensor:
        """Cosine Gram matrix ``(N, N)`` of ``(N, ...)`` features."""
        unit = F.normalize(_embed(h), p=2, dim=1)  # (N, D)
        return unit @ unit.T

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """``(N, D_S)``, ``(N, D_T)`` -> scalar."""
        n = student.shape[0]
        diff = self.gram(teacher.detach()) - self.gram(student)  # (N, N)
        return diff.pow(2).sum() / (n * n)


def attention_map(h: Tensor) -> Tensor:
    """Spatial attention ``Q = mean_c A_c²``: ``(B, C, *S) -> (B, 1, *S)``."""
    return h.float().pow(2).mean(dim=1, keepdim=True)


@LOSSES.register("attention")
class AttentionLoss(nn.Module):
    """Attention transfer, Zagoruyko & Komodakis 2017, "Paying More Attention to Attention".

    ``Q = vec(mean_c A_c²)`` per sample, ``L(x) = Σ_pairs ‖Q^S/‖Q^S‖ − Q^T/‖Q^T‖‖_2``. Works on
    ``(B, C, H, W)`` maps and ``(B, C, L)`` sequences; if sizes differ the larger attention map
    is average-pooled to the smaller. Channel counts may differ (they are averaged out).
    """

    @staticmethod
    def pair(student: Tensor, teacher: Tensor) -> Tensor:
        """One feature pair ``(B, C_S, *S_S)``, ``(B, C_T, *S_T)`` -> ``(B,)``."""
        if student.dim() != teacher.dim() or student.dim() not in (3, 4):
            shapes = f"{tuple(student.shape)} and {tuple(teacher.shape)}"
            raise ConfigError(f"attention needs (B, C, L) or (B, C, H, W) pairs, got {shapes}")
        q_s, q_t = _match_spatial(attention_map(student), attention_map(teacher.detach()))
        q_s = F.normalize(q_s.flatten(1), p=2, dim=1)  # (B, prod S)
        q_t = F.normalize(q_t.flatten(1), p=2, dim=1)
        return torch.linalg.vector_norm(q_s - q_t, ord=2, dim=1)

    def forward(self, student_features: Features, teacher_features: Features) -> Tensor:
        """Lists of paired features -> ``(B,)`` summed over pairs."""
        losses = [self.pair(s, t) for s, t in zip(student_features, teacher_features, strict=True)]
        return torch.stack(losses, dim=0).sum(dim=0)


# ---------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------

Shape = tuple[int, ...]


def _check_shapes(name: str, shapes: Sequence[Sequence[int]] | None) -> list[Shape]:
    if not shapes:
        raise ConfigError(f"this KD recipe uses feature losses but got no {name} feature shapes")
    out = [tuple(int(d) for d in s) for s in shapes]
    if any(not s or min(s) < 1 for s in out):
        raise ConfigError(f"{name} feature shapes must be non-empty positive sizes, got {out}")
    return out


def _weighted_mean(per_sample: Tensor, weights: Tensor | None) -> Tensor:
    """``mean_i w_i L_i``; ``None`` means all weights are 1."""
    return per_sample.mean() if weights is None else (per_sample * weights).mean()


def _select(
    student: Sequence[Tensor], teacher: Sequence[Tensor], pairs: Sequence[tuple[int, int]]
) -> tuple[list[Tensor], list[Tensor]]:
    """The paired features ``([h_S_i ...], [h_T_j ...])`` for ``pairs`` of tap indices."""
    return [student[i] for i, _ in pairs], [teacher[j] for _, j in pairs]


class DistillLoss(nn.Module):
    """The full KD objective of one ``KDConfig`` (DESIGN.md §2)::

        total = α·soft + (1−α)·hard + β_hint·hint + β_rel·relation + β_att·attention

    ``soft`` is the configured response loss against the (possibly ensembled) teacher at
    ``T = temperature_at(kd, progress)``; ``hard`` is label-smoothed CE. Both are importance-
    weighted per sample before the batch mean. With ``soft_loss='none'`` or no teacher logits,
    ``hard`` has weight 1 and ``soft`` is absent. ``hint`` pairs feature taps by
    ``kd.hint_mapping`` (FitNet regressors, or ``LearnedMapping``); ``relation`` compares the
    last taps pooled to ``(B, D)``; ``attention`` uses the mapped pairs that have spatial dims
    (the uniform map when the hint mapping is learned). Terms with weight 0 are not built.

    The module owns learned projections: add ``parameters()`` to the student's optimizer.

    Args:
        kd: The recipe (validated here).
        num_classes: ``K``.
        student_feature_shapes: One shape per student tap (no batch dim), input to output.
        teacher_feature_shapes: One shape per teacher tap, input to output.

    Raises:
        ConfigError: If the recipe needs features and shapes are missing or cannot be paired.
    """

    def __init__(
        self,
        kd: KDConfig,
        num_classes: int,
        student_feature_shapes: Sequence[Sequence[int]] | None = None,
        teacher_feature_shapes: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        self.kd = kd.validate()
        if num_classes < 2:
            raise ConfigError(f"distillation needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.hard = HardCELoss(kd.label_smoothing)
        self.soft = None if kd.soft_loss == "none" else LOSSES.get(kd.soft_loss)()
        self.hint: nn.Module | None = None
        self.relation: nn.Module | None = None
        self.attention: AttentionLoss | None = None
        self.hint_pairs: list[tuple[int, int]] = []
        self.attention_pairs: list[tuple[int, int]] = []
        self._n_taps = (0, 0)
        if kd.needs_features:
            s_shapes = _check_shapes("student", student_feature_shapes)
            t_shapes = _check_shapes("teacher", teacher_feature_shapes)
            self._build_feature_terms(s_shapes, t_shapes)

    def _build_feature_terms(self, s_shapes: list[Shape], t_shapes: list[Shape]) -> None:
        kd = self.kd
        self._n_taps = (len(s_shapes), len(t_shapes))
        fixed = "uniform" if kd.hint_mapping == "learned" else kd.hint_mapping
        pairs = list(enumerate(map_layers(len(s_shapes), len(t_shapes), fixed)))
        if kd.hint_weight > 0:
            self.hint = self._build_hint(s_shapes, t_shapes, pairs)
        if kd.relation != "none" and kd.relation_weight > 0:
            self.relation = LOSSES.get(kd.relation)()
        if kd.attention_weight > 0:
            self.attention_pairs = [
                (i, j) for i, j in pairs if len(s_shapes[i]) == len(t_shapes[j]) in (2, 3)
            ]
            if not self.attention_pairs:
                raise ConfigError(
                    "attention transfer needs mapped feature pairs with spatial dims of equal rank"
                )
            self.attention = AttentionLoss()
        logger.debug("feature KD: hint pairs %s, attention pairs %s", pairs, self.attention_pairs)

    def _build_hint(
        self, s_shapes: list[Shape], t_shapes: list[Shape], pairs: list[tuple[int, int]]
    ) -> nn.Module:
        if self.kd.hint_mapping == "learned":
            self.hint_pairs = [(i, j) for i in range(len(s_shapes)) for j in range(len(t_shapes))]
            return LearnedMapping([s[0] for s in s_shapes], [t[0] for t in t_shapes])
        self.hint_pairs = pairs
        return FitNetLoss([s_shapes[i] for i, _ in pairs], [t_shapes[j] for _, j in pairs])

    def forward(
        self,
        student_logits: Tensor,
        targets: Tensor,
        teacher_logits: Tensor | None = None,
        *,
        progress: float,
        student_features: Sequence[Tensor] | None = None,
        teacher_features: Sequence[Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Compute the loss for one batch.

        Args:
            student_logits: ``(B, K)``.
            targets: ``(B,)`` class indices.
            teacher_logits: ``(M, B, K)``, ``(B, K)`` or None (then no soft term).
            progress: Fraction of training done, for the temperature schedule.
            student_features: Student taps in the order of ``student_feature_shapes``.
            teacher_features: Teacher taps in the order of ``teacher_feature_shapes``.

        Returns:
            The scalar total, and detached floats for each active part plus ``"total"``.
        """
        if student_logits.dim() != 2 or student_logits.shape[1] != self.num_classes:
            shape = tuple(student_logits.shape)
            raise ConfigError(f"student logits must be (B, {self.num_classes}), got {shape}")
        teachers = None if teacher_logits is None else _stack_teachers(teacher_logits)
        if teachers is not None and teachers.shape[1:] != student_logits.shape:
            raise ConfigError(
                f"teacher logits {tuple(teachers.shape)} do not match student logits "
                f"{tuple(student_logits.shape)}"
            )
        weights = self._importance(student_logits, targets, teachers)  # (B,) or None
        parts = self._response_terms(student_logits, targets, teachers, progress, weights)
        parts.update(self._feature_terms(student_features, teacher_features))
        total = self._combine(parts)
        values = {name: float(value.detach()) for name, value in parts.items()}
        values["total"] = float(total.detach())
        return total, values

    def _importance(
        self, logits: Tensor, targets: Tensor, teachers: Tensor | None
    ) -> Tensor | None:
        """Per-sample weights ``(B,)``, or None for equal weights (saves ops every batch)."""
        kind = self.kd.importance
        if kind == "none" or (kind == "entropy" and teachers is None):
            return None
        probs = None
        if teachers is not None:
            probs = teacher_soft_targets(teachers, 1.0, self.kd.teacher_weighting)  # (B, K)
        ce = F.cross_entropy(logits.detach().float(), targets.long(), reduction="none")  # (B,)
        return importance_weights(kind, probs, ce)

    def _response_terms(
        self,
        logits: Tensor,
        targets: Tensor,
        teachers: Tensor | None,
        progress: float,
        weights: Tensor | None,
    ) -> dict[str, Tensor]:
        parts: dict[str, Tensor] = {}
        if self.soft is not None and teachers is not None:
            per_sample = self._soft_per_sample(logits, teachers, temperature_at(self.kd, progress))
            parts["soft"] = _weighted_mean(per_sample, weights)
        parts["hard"] = _weighted_mean(self.hard(logits, targets), weights)
        return parts

    def _soft_per_sample(self, logits: Tensor, teachers: Tensor, T: float) -> Tensor:
        """``(B,)`` soft loss; KL compares probabilities at T, MSE/cosine compare logits."""
        assert self.soft is not None
        if isinstance(self.soft, KLDivergenceLoss):
            q_t = teacher_soft_targets(teachers, T, self.kd.teacher_weighting)  # (B, K)
            return self.soft(logits, q_t, T)
        return self.soft(logits, _combine_teacher_logits(teachers, self.kd.teacher_weighting))

    def _feature_terms(
        self, student: Sequence[Tensor] | None, teacher: Sequence[Tensor] | None
    ) -> dict[str, Tensor]:
        if self.hint is None and self.relation is None and self.attention is None:
            return {}
        student, teacher = self._check_features(student, teacher)
        parts: dict[str, Tensor] = {}
        if isinstance(self.hint, LearnedMapping):  # every student tap sees every teacher tap
            parts["hint"] = self.hint(student, teacher).mean()
        elif self.hint is not None:
            parts["hint"] = self.hint(*_select(student, teacher, self.hint_pairs)).mean()
        if self.relation is not None:
            parts["relation"] = self.relation(global_pool(student[-1]), global_pool(teacher[-1]))
        if self.attention is not None:
            pairs = _select(student, teacher, self.attention_pairs)
            parts["attention"] = self.attention(*pairs).mean()
        return parts

    def _check_features(
        self, student: Sequence[Tensor] | None, teacher: Sequence[Tensor] | None
    ) -> tuple[Sequence[Tensor], Sequence[Tensor]]:
        n_s, n_t = self._n_taps
        if student is None or teacher is None or (len(student), len(teacher)) != (n_s, n_t):
            got = tuple(None if f is None else len(f) for f in (student, teacher))
            raise ConfigError(
                f"this KD recipe needs {n_s} student and {n_t} teacher features, got {got}"
            )
        return student, teacher

    def _combine(self, parts: dict[str, Tensor]) -> Tensor:
        kd = self.kd
        if "soft" in parts:
            total = kd.alpha * parts["soft"] + (1.0 - kd.alpha) * parts["hard"]
        else:
            total = parts["hard"]
        for name, weight in (
            ("hint", kd.hint_weight),
            ("relation", kd.relation_weight),
            ("attention", kd.attention_weight),
        ):
            if name in parts:
                total = total + weight * parts[name]
        return total


@torch.no_grad()
def kd_divergence(student_logits: Tensor, teacher_logits: Tensor, T: float) -> float:
    """Batch mean of ``T² · KL(q^T ‖ q^S)`` (the "val KD loss" of reports).

    ``teacher_logits`` may be ``(B, K)`` or ``(M, B, K)``; an ensemble is averaged (``"mean"``).
    """
    q_t = teacher_soft_targets(teacher_logits, T, "mean")  # (B, K)
    return float(KLDivergenceLoss()(student_logits, q_t, T).mean())
