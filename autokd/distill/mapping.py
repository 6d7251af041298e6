"""Which teacher layer each student layer learns from (DESIGN.md §2, "Layer mapping").

Why: a student usually has fewer feature taps than its teacher (``L_S < L_T``), so hint and
attention losses need a rule that pairs them. The fixed rules are written 1-indexed in the
design (as in the literature) and converted to 0-indexed lists here, the form Python uses:

- uniform:   ``l_S -> ⌊l_S · L_T / L_S⌋`` (at least 1), spread evenly over the teacher;
- bottom_up: ``l_S -> l_S`` (at most ``L_T``), copy the teacher's early layers;
- top_down:  ``l_S -> L_T − L_S + l_S`` (at least 1), copy the teacher's late layers;
- learned:   no fixed map; ``LearnedMapping`` learns softmax weights over all teacher layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from autokd.errors import ConfigError
from autokd.registry import Registry

__all__ = ["STRATEGIES", "LearnedMapping", "global_pool", "map_layers"]

# (l_S 1-indexed, L_S, L_T) -> teacher layer, 1-indexed
RuleFn = Callable[[int, int, int], int]

STRATEGIES: Registry[RuleFn] = Registry("layer mapping")


@STRATEGIES.register("uniform")
def _uniform(l_s: int, n_s: int, n_t: int) -> int:
    return max(1, (l_s * n_t) // n_s)


@STRATEGIES.register("bottom_up")
def _bottom_up(l_s: int, n_s: int, n_t: int) -> int:
    del n_s
    return min(l_s, n_t)


@STRATEGIES.register("top_down")
def _top_down(l_s: int, n_s: int, n_t: int) -> int:
    return max(1, n_t - n_s + l_s)


def map_layers(n_student: int, n_teacher: int, strategy: str) -> list[int]:
    """The 0-indexed teacher layer for each student layer ``0 .. n_student-1``.

    Args:
        n_student: Number of student feature taps ``L_S`` (>= 1).
        n_teacher: Number of teacher feature taps ``L_T`` (>= 1).
        strategy: ``uniform``, ``bottom_up`` or ``top_down``.

    Raises:
        ConfigError: For a count below 1, an unknown strategy, or ``learned`` (which has no fixed
            map; use ``LearnedMapping``).
    """
    if n_student < 1 or n_teacher < 1:
        raise ConfigError(f"layer mapping needs >= 1 layer each, got {n_student} and {n_teacher}")
    if strategy == "learned":
        raise ConfigError("hint_mapping 'learned' has no fixed layer map; use LearnedMapping")
    rule = STRATEGIES.get(strategy)
    return [rule(l_s, n_student, n_teacher) - 1 for l_s in range(1, n_student + 1)]


def global_pool(h: Tensor) -> Tensor:
    """Average every dim after the channel dim: ``(B, C, *S) -> (B, C)``; ``(B, D)`` unchanged."""
    return h.flatten(2).mean(-1) if h.dim() > 2 else h


class LearnedMapping(nn.Module):
    """Learned layer mapping: each student layer attends over all teacher layers.

    Definition (features are globally average-pooled to vectors first, so any widths and
    spatial sizes pair up)::

        v_S_l = pool(h_S_l)                         # (B, C_S_l)
        v_T_j = pool(h_T_j)                         # (B, C_T_j)
        loss_l = Σ_j softmax(w_l)_j · mse(v_T_j, P_lj(v_S_l))
        loss   = Σ_l loss_l                         # per sample, (B,)

    where ``w`` is an ``(L_S, L_T)`` table of learned logits (zeros at start, i.e. uniform
    weights) and ``P_lj`` a learned linear map ``C_S_l -> C_T_j``. ``mse`` averages over
    channels. Why: when no fixed rule fits (very different depths), the weights let training
    pick which teacher layers each student layer can actually imitate.

    Args:
        student_channels: ``C_S_l`` for each student tap, input to output.
        teacher_channels: ``C_T_j`` for each teacher tap, input to output.
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int]) -> None:
        super().__init__()
        if not student_channels or not teacher_channels:
            raise ConfigError("learned layer mapping needs at least one student and teacher tap")
        self.logits = nn.Parameter(torch.zeros(len(student_channels), len(teacher_channels)))
        self.proj = nn.ModuleList(
            nn.ModuleList(nn.Linear(c_s, c_t) for c_t in teacher_channels)
            for c_s in student_channels
        )

    def weights(self) -> Tensor:
        """Softmax mapping weights, ``(L_S, L_T)``; row ``l`` sums to 1."""
        return self.logits.softmax(dim=-1)

    def forward(
        self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]
    ) -> Tensor:
        """Per-sample loss ``(B,)`` summed over student layers.

        Args:
            student_features: All ``L_S`` student taps, ``(B, C_S_l, *S)`` or ``(B, C_S_l)``.
            teacher_features: All ``L_T`` teacher taps; never receive gradients.
        """
        n_s, n_t = self.logits.shape
        if (len(student_features), len(teacher_features)) != (n_s, n_t):
            got = (len(student_features), len(teacher_features))
            raise ConfigError(f"learned mapping was built for {n_s}x{n_t} taps, got {got}")
        v_t = [global_pool(h).detach().float() for h in teacher_features]  # each (B, C_T_j)
        weights = self.weights()  # (L_S, L_T)
        losses = [
            self._errors(i, global_pool(h_s).float(), v_t) @ weights[i]  # (B,)
            for i, h_s in enumerate(student_features)
        ]
        return torch.stack(losses, dim=0).sum(dim=0)

    def _errors(self, i: int, v_s: Tensor, v_t: list[Tensor]) -> Tensor:
        """``mse(v_T_j, P_ij(v_S_i))`` for every teacher layer j: ``(B, L_T)``."""
        pairs = zip(self.proj[i], v_t, strict=True)
        return torch.stack([(t - p(v_s)).pow(2).mean(dim=-1) for p, t in pairs], dim=-1)
