"""How architecture parameters become mixing weights: softmax (DARTS) or Gumbel-softmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autokd.errors import ConfigError

__all__ = ["RELAXATIONS", "ArchParameters", "Relaxation"]

RELAXATIONS = ("softmax", "gumbel")


class Relaxation:
    """Turns architecture parameters into mixing weights.

    ``softmax`` is DARTS (Liu et al. 2019): ``w = softmax(alpha)``. ``gumbel`` is Gumbel-softmax
    (FBNet, Wu et al. 2019): ``w = softmax((alpha + g) / tau)`` with ``g ~ Gumbel(0, 1)``
    drawn once per batch and ``tau`` annealed by the search; with ``hard`` the forward uses the
    one-hot sample and the backward the soft one (GDAS, Dong & Yang 2019), and candidates whose
    weight is exactly 0 are not computed at all. Outside training both give ``softmax(alpha)``.
    """

    def __init__(self, mode: str = "softmax", tau: float = 1.0, hard: bool = False,
                 seed: int = 0) -> None:
        if mode not in RELAXATIONS:
            raise ConfigError(f"unknown relaxation {mode!r}; known: {', '.join(RELAXATIONS)}")
        self.mode, self.tau, self.hard = mode, float(tau), hard
        self.generator = torch.Generator().manual_seed(seed)

    def weights(self, alpha: Tensor, training: bool) -> Tensor:
        if self.mode == "softmax" or not training:
            return alpha.softmax(-1)
        u = torch.rand(alpha.shape, generator=self.generator).clamp_(1e-10, 1.0 - 1e-7)
        gumbel = -torch.log(-torch.log(u)).to(alpha.device)
        soft = ((alpha + gumbel) / self.tau).softmax(-1)
        if not self.hard:
            return soft
        hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
        return hard - soft.detach() + soft  # straight-through: exact 0/1 forward


class ArchParameters:
    """The split every supernet needs: architecture weights (``self.alphas``, one tensor per
    decision) apart from the operation weights, since DARTS steps the two with different
    optimisers on different data."""

    alphas: nn.ParameterDict
    decisions: dict[str, list]

    def _init_weights(self, seed: int) -> None:
        """Near-uniform alphas from ``seed``, then the operation weights (``_build_layers``)
        under the same seed: same seed, same supernet, and the global RNG left untouched."""
        gen = torch.Generator().manual_seed(seed)
        self.alphas = nn.ParameterDict(
            {name: nn.Parameter(1e-3 * torch.randn(len(opts), generator=gen))
             for name, opts in self.decisions.items()})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._build_layers()  # type: ignore[attr-defined]

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]  # type: ignore[attr-defined]

    def probabilities(self) -> dict[str, Tensor]:
        """``softmax(alpha)`` per decision (differentiable; what the expected cost uses)."""
        return {name: alpha.softmax(-1) for name, alpha in self.alphas.items()}
