"""Feature terms: the student's intermediate activations against the teacher's.

Features come from forward hooks at each model's ``feature_taps`` (``autokd.distill.hooks``);
a student usually has fewer taps than its teacher, so which pairs meet is the recipe's layer
mapping (``autokd.distill.mapping``). Each term returns one value per sample, ``(B,)``.

Shapes: ``B`` batch, ``C`` channels, ``S`` spatial dims.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autokd.distill._term import Batch, Recipe, Term, TermContext, register_term
from autokd.distill.mapping import LearnedMapping, global_pool, map_layers
from autokd.errors import ConfigError

__all__ = ["AttentionLoss", "FitNetLoss", "LearnedHintLoss", "attention_map", "mapped_pairs",
           "select_pairs"]

Features = Sequence[Tensor]  # one tensor per feature tap, (B, C, *S) or (B, D)
_POOLS = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d}  # spatial rank -> pool


def mapped_pairs(ctx: TermContext) -> list[tuple[int, int]]:
    """``(student tap, teacher tap)`` pairs by the recipe's fixed mapping (uniform if learned)."""
    s_shapes, t_shapes = ctx.shapes("layer mapping")
    fixed = "uniform" if ctx.kd.hint_mapping == "learned" else ctx.kd.hint_mapping
    return list(enumerate(map_layers(len(s_shapes), len(t_shapes), fixed)))


def select_pairs(batch: Batch,
                 pairs: Sequence[tuple[int, int]]) -> tuple[list[Tensor], list[Tensor]]:
    """The paired features ``([h_S_i ...], [h_T_j ...])`` of a batch."""
    student, teacher = batch.student_features, batch.teacher_features
    if student is None or teacher is None:
        raise ConfigError("feature KD terms need student and teacher features in the batch")
    return [student[i] for i, _ in pairs], [teacher[j] for _, j in pairs]


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


@register_term("fitnet")
class FitNetLoss(Term):
    """Hint learning, Romero et al. 2015, "FitNets: Hints for Thin Deep Nets".

    ``L(x) = Σ_l mse(h_l^T, φ_l(h_l^S))`` over mapped (student, teacher) feature pairs, where
    ``φ_l`` is a learned regressor to the teacher's width (created here from the shapes) and
    ``mse`` averages over channels and positions. If spatial sizes differ the larger map is
    average-pooled to the smaller, so a student need not mirror the teacher's resolution; if
    ranks differ both are globally pooled to ``(B, C)``.

    Which student tap teaches against which teacher tap is the recipe's ``hint_mapping``
    (DESIGN.md §2: uniform, bottom-up, top-down); ``learned`` lets every student tap see every
    teacher tap through learned weights (``LearnedHintLoss``).

    Args:
        student_shapes: Per-pair student feature shape without batch dim.
        teacher_shapes: Per-pair teacher feature shape without batch dim, same order.
        pairs: ``(student tap, teacher tap)`` index per pair (default: the i-th of each).
    """

    kind: ClassVar[str] = "feature"
    needs_features: ClassVar[bool] = True

    def __init__(
        self, student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]],
        pairs: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__()
        if len(student_shapes) != len(teacher_shapes) or not student_shapes:
            raise ConfigError("FitNet needs one teacher shape per student shape (at least one)")
        shapes = zip(student_shapes, teacher_shapes, strict=True)
        self.proj = nn.ModuleList(_projection(s, t) for s, t in shapes)
        self.pairs = list(pairs) if pairs is not None else [(i, i) for i in range(len(self.proj))]

    @classmethod
    def create(cls, ctx: TermContext) -> Term:
        s_shapes, t_shapes = ctx.shapes(cls.name)
        if ctx.kd.hint_mapping == "learned":
            return LearnedHintLoss([s[0] for s in s_shapes], [t[0] for t in t_shapes])
        pairs = mapped_pairs(ctx)
        return cls([s_shapes[i] for i, _ in pairs], [t_shapes[j] for _, j in pairs], pairs)

    @classmethod
    def label(cls, weight: float, kd: Recipe) -> str:
        return f"hint={weight}:{kd.hint_mapping}"

    def forward(self, batch: Batch) -> Tensor:
        return self.compute(*select_pairs(batch, self.pairs))

    def compute(self, student_features: Features, teacher_features: Features) -> Tensor:
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

class LearnedHintLoss(Term):
    """FitNet hints through a learned layer mapping (``hint_mapping: learned``).

    Every student tap is compared with every teacher tap, weighted by learned softmax weights
    (``autokd.distill.mapping.LearnedMapping``); built by ``FitNetLoss.create``, so it is the
    ``fitnet`` term of a recipe whose mapping is learned.
    """

    name: ClassVar[str] = "fitnet"
    kind: ClassVar[str] = "feature"
    needs_features: ClassVar[bool] = True

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int]) -> None:
        super().__init__()
        self.mapping = LearnedMapping(student_channels, teacher_channels)

    def forward(self, batch: Batch) -> Tensor:
        if batch.student_features is None or batch.teacher_features is None:
            raise ConfigError("feature KD terms need student and teacher features in the batch")
        return self.mapping(batch.student_features, batch.teacher_features)


def attention_map(h: Tensor) -> Tensor:
    """Spatial attention ``Q = mean_c A_c²``: ``(B, C, *S) -> (B, 1, *S)``."""
    return h.float().pow(2).mean(dim=1, keepdim=True)


@register_term("attention")
class AttentionLoss(Term):
    """Attention transfer, Zagoruyko & Komodakis 2017, "Paying More Attention to Attention".

    ``Q = vec(mean_c A_c²)`` per sample, ``L(x) = Σ_pairs ‖Q^S/‖Q^S‖ − Q^T/‖Q^T‖‖_2``. Works on
    ``(B, C, H, W)`` maps and ``(B, C, L)`` sequences; if sizes differ the larger attention map
    is average-pooled to the smaller. Channel counts may differ (they are averaged out).

    Pairs are the recipe's mapped pairs that have spatial dims of equal rank (the uniform map
    when the hint mapping is learned).
    """

    kind: ClassVar[str] = "feature"
    needs_features: ClassVar[bool] = True

    def __init__(self, pairs: Sequence[tuple[int, int]] | None = None) -> None:
        super().__init__()
        self.pairs = list(pairs or [])

    @classmethod
    def create(cls, ctx: TermContext) -> AttentionLoss:
        s_shapes, t_shapes = ctx.shapes(cls.name)
        pairs = [(i, j) for i, j in mapped_pairs(ctx)
                 if len(s_shapes[i]) == len(t_shapes[j]) in (2, 3)]
        if not pairs:
            raise ConfigError(
                "attention transfer needs mapped feature pairs with spatial dims of equal rank")
        return cls(pairs)

    def forward(self, batch: Batch) -> Tensor:
        return self.compute(*select_pairs(batch, self.pairs))

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

    def compute(self, student_features: Features, teacher_features: Features) -> Tensor:
        """Lists of paired features -> ``(B,)`` summed over pairs."""
        losses = [self.pair(s, t) for s, t in zip(student_features, teacher_features, strict=True)]
        return torch.stack(losses, dim=0).sum(dim=0)
