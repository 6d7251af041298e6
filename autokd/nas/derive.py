"""Deriving a student from a searched supernet, repaired greedily until it meets the limits."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor

from autokd.models.supernet import Supernet
from autokd.nas.cost_model import CostModel

__all__ = ["derive"]

logger = logging.getLogger(__name__)
_MAX_REPAIRS = 64


def _excess(costs: dict[str, float], limits: dict[str, float]) -> float:
    return sum(max(0.0, costs[m] / limit - 1.0) for m, limit in limits.items() if m in costs)


def derive(net: Supernet, cost: CostModel, limits: dict[str, float], repair: bool = True,
           rule: str = "marginal") -> tuple[dict[str, Any], list[str]]:
    """The derived architecture (``rule``), greedily repaired until it meets ``limits``.

    Each repair step changes the one decision whose change lowers the total relative excess
    over the limits at the least loss of log-probability per unit of excess removed.

    Returns:
        The full choice and the changes made (``"widths_1: 48 -> 24"``).
    """
    choice, changes = net.choice(rule), []
    if not repair or not limits:
        return choice, changes
    logp = {n: torch.log_softmax(a.detach().double(), -1).cpu() for n, a in net.alphas.items()}
    for _ in range(_MAX_REPAIRS):
        excess = _excess(cost.of_choice(choice), limits)
        if excess <= 0:
            break
        move = _best_move(net, cost, limits, logp, choice, excess)
        if move is None:
            logger.warning("no architecture in the space meets %s; keeping the cheapest found",
                           limits)
            break
        name, value = move
        changes.append(f"{name}: {choice[name]} -> {value}")
        choice[name] = value
    return choice, changes


def _best_move(net: Supernet, cost: CostModel, limits: dict[str, float],
               logp: dict[str, Tensor], choice: dict[str, Any],
               excess: float) -> tuple[str, Any] | None:
    best, best_score = None, math.inf
    for name, options in net.decisions.items():
        current = logp[name][options.index(choice[name])]
        for j, value in enumerate(options):
            if value == choice[name]:
                continue
            gain = excess - _excess(cost.of_choice({**choice, name: value}), limits)
            if gain <= 1e-12:
                continue
            score = float(current - logp[name][j]) / gain
            if score < best_score:
                best, best_score = (name, value), score
    return best
