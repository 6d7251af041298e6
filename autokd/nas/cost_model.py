"""The exact cost of a supernet's derived network, and its expectation under alpha.

Why exact: FLOPs and params per op are counted by ``autokd.cost`` on the op itself, so the
expected cost of a one-hot alpha equals ``count_flops`` / ``count_params`` of the derived
student (the tests check it); latency comes from the device's table (``autokd.latency_table``).

Expected cost per decision = sum over candidates of softmax(alpha) x candidate cost; a part
that depends on several decisions (a convolution on its input and output widths) takes the
product of their probabilities, which is exact because the decisions are independent.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from autokd.cost import count_flops, count_params
from autokd.latency_table import METRICS, LatencyTable
from autokd.models.supernet import OpSpec, Supernet, build_op
from autokd.models.supernet.terms import option_index

__all__ = ["CostModel", "op_costs"]


@functools.lru_cache(maxsize=65536)
def op_costs(op: OpSpec) -> tuple[int, int]:
    """``(flops, params)`` of one op, counted by ``autokd.cost`` like any whole model.

    Why the same counter: the expected cost of a one-hot alpha must equal the derived student's
    ``count_flops``, whatever ops a family's blocks use.
    """
    module = build_op(op).eval()
    return count_flops(module, op.in_shape), count_params(module)


class CostModel:
    """Exact per-op costs of a supernet's parts and their expectation under alpha.

    Each cost term becomes one dense tensor of shape ``(n_1, ..., n_k, M)``: the cost in each
    of ``M`` metrics for every combination of the ``k`` decisions it depends on. The expected
    cost contracts it with those decisions' probabilities; a one-hot alpha indexes it.
    """

    def __init__(self, net: Supernet, table: LatencyTable | None = None) -> None:
        self.net, self.table = net, table
        self.metrics = METRICS if table is not None else METRICS[:2]
        self.terms = [(term.decisions, self._dense(term.decisions, term.entries))
                      for term in net.cost_terms_cached()]

    def _dense(self, names: tuple[str, ...], entries: Iterable[Any]) -> Tensor:
        shape = [len(self.net.decisions[n]) for n in names]
        out = torch.zeros(*shape, len(self.metrics), dtype=torch.float64)
        for idx, ops in entries:
            out[idx] = torch.tensor([sum(self._op(op)[m] for op in ops) for m in self.metrics],
                                    dtype=torch.float64)
        return out

    def _op(self, op: OpSpec) -> dict[str, float]:
        flops, params = op_costs(op)
        costs = {"flops": float(flops), "params": float(params)}
        if self.table is not None:
            costs["latency_ms"] = self.table.latency(op)
        return costs

    def expected(self, probs: dict[str, Tensor]) -> dict[str, Tensor]:
        """``E[cost]`` per metric, differentiable in ``probs`` (softmax of alpha)."""
        total = None
        for names, dense in self.terms:
            t = dense.to(next(iter(probs.values())).device) if probs else dense
            for name in names:  # contract the leading decision axis each time
                t = torch.tensordot(probs[name].to(t.dtype), t, dims=([0], [0]))
            total = t if total is None else total + t
        assert total is not None
        return {m: total[j] for j, m in enumerate(self.metrics)}

    def of_choice(self, choice: dict[str, Any]) -> dict[str, float]:
        """Exact cost of one architecture (a full or active choice of decision values)."""
        full = self.net.full_choice(choice)
        total = torch.zeros(len(self.metrics), dtype=torch.float64)
        for names, dense in self.terms:
            idx = tuple(option_index(self.net.decisions[n], full[n]) for n in names)
            total += dense[idx]
        out = {m: float(total[j]) for j, m in enumerate(self.metrics)}
        out["flops"], out["params"] = int(out["flops"]), int(out["params"])
        return out
