"""What a stack supernet's derived network is made of, by the decisions each part depends on.

Every part of the derived network (a stage's contraction, its norm/activation/pool tail, the
head for each depth, the per-depth framework overhead) is described as a ``CostTerm``: for each
combination of the decisions it depends on, the exported layers (``OpSpec``) it is. The expected
cost under alpha is then a sum of products of probabilities, exact for a one-hot alpha.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

from autokd.errors import ConfigError
from autokd.models.supernet.ops import CostTerm, OpSpec, op_output_shape

__all__ = ["PER_STAGE", "StackCostTerms", "TermTable", "option_index"]

PER_STAGE = ("widths", "kernel")


class TermTable:
    """Mixin of a supernet with ``decisions`` and ``cost_terms()``: one-hot lookups of its terms.

    Why a mixin: every supernet form (stack, inverted residual) describes its cost the same way,
    and the cost model and latency table only need these four methods.
    """

    decisions: dict[str, list[Any]]
    #: every part of the derived network as a term; each supernet form defines it
    cost_terms: Callable[[], list[CostTerm]]

    def _term(self, names: Sequence[str | None],
              ops: Callable[[dict[str, Any]], list[OpSpec]]) -> CostTerm:
        names = tuple(dict.fromkeys(n for n in names if n is not None))
        entries = []
        for idx in itertools.product(*(range(len(self.decisions[n])) for n in names)):
            choice = {n: self.decisions[n][j] for n, j in zip(names, idx)}
            found = ops(choice)
            if found:
                entries.append((tuple(idx), tuple(found)))
        return CostTerm(names, tuple(entries))

    def full_choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        """An active choice completed with the first option of every missing decision."""
        return {name: choice.get(name, opts[0]) for name, opts in self.decisions.items()}

    def ops_for(self, choice: dict[str, Any]) -> list[OpSpec]:
        """Every exported layer group of one architecture (the one-hot case of the terms)."""
        full = self.full_choice(choice)
        out: list[OpSpec] = []
        for term in self.cost_terms_cached():
            idx = tuple(option_index(self.decisions[n], full[n]) for n in term.decisions)
            out += [op for key, ops in term.entries if key == idx for op in ops]
        return out

    def cost_terms_cached(self) -> list[CostTerm]:
        if not hasattr(self, "_terms"):
            self._terms = self.cost_terms()
        return self._terms


class StackCostTerms(TermTable):
    """Mixin of ``Supernet``: the cost description of a stack of stages."""

    def cost_terms(self) -> list[CostTerm]:
        """Every part of the derived network, by the decisions it depends on."""
        terms = []
        for i in range(self.max_depth):
            terms.append(self._term(self._stage_decisions(i, "main"),
                                    functools.partial(self._main_op, i)))
            terms.append(self._term(self._stage_decisions(i, "tail"),
                                    functools.partial(self._tail_op, i)))
        for d in self.depths:
            names = [self.decision_name("depth"), *self._shape_decisions(d)]
            if d > 0:
                names.append(self.decision_name("widths", d - 1))
            terms.append(self._term(names, functools.partial(self._head_op, d)))
        terms.append(self._term([self.decision_name("depth")], self._model_op))
        return terms

    def _stage_decisions(self, i: int, part: str) -> list[str | None]:
        names = [self.decision_name("depth"), self.decision_name("widths", i)]
        if part == "main":  # the contraction: input and output widths, kernel, stride, bias
            names += [self.decision_name("widths", i - 1) if i else None,
                      *self._shape_decisions(i)]
            if self.dim:
                names += [self.decision_name("kernel", i), self.decision_name("batch_norm")]
        else:  # norm, activation, pool: on the contraction's output map
            names += [*self._shape_decisions(i + 1), self.decision_name("batch_norm"),
                      self.decision_name("activation")]
        return names

    def _shape_decisions(self, stage: int) -> list[str | None]:
        """Decisions that change the map size entering ``stage``: pool, and even kernels."""
        if not self.dim:
            return []
        names = [self.decision_name("pool")]
        for j in range(stage):
            if any(int(k) % 2 == 0 for k in self.options("kernel", j)):
                names.append(self.decision_name("kernel", j))
        return names

    def _exists(self, choice: dict[str, Any], stage: int) -> bool:
        return int(self.value(choice, "depth")) > stage

    def _c_in(self, choice: dict[str, Any], i: int) -> int:
        if i == 0:
            return self.input_shape[0] if self.dim else math.prod(self.input_shape)
        return int(self.value(choice, "widths", i - 1))

    def _spatial(self, choice: dict[str, Any], stage: int) -> tuple[int, ...]:
        """The exported model's map size entering ``stage`` (channel counts do not matter)."""
        if not self.dim:
            return ()
        shape = tuple(self.input_shape[1:])
        for j in range(stage):
            main = self._main(choice, j, (1, *shape), 1, bn=False)
            shape = op_output_shape(self._tail(choice, j, main, bn=False, activation="relu"))[1:]
        return shape

    def _main(self, choice: dict[str, Any], i: int, in_shape: tuple[int, ...], c_out: int,
              bn: bool) -> OpSpec:
        """Stage ``i``'s contraction, exactly as ConvNet / MLP build it."""
        if not self.dim:
            return OpSpec("linear", 0, in_shape, out=c_out, bias=True)
        pool = str(self.value(choice, "pool"))
        stride = 2 if pool == "stride" and self.can_shrink(i, pool) else 1
        return OpSpec("conv", self.dim, in_shape, out=c_out, kernel=self._kernel(choice, i),
                      stride=stride, bias=not bn)

    def _kernel(self, choice: dict[str, Any], i: int) -> int:
        """Stage ``i``'s kernel; terms that leave it out only need the output shape, which
        odd kernels do not change (``_shape_decisions`` adds even ones), so any option does."""
        name = self.decision_name("kernel", i)
        if name is not None and name not in choice:
            return int(self.decisions[name][0])
        return int(self.value(choice, "kernel", i))

    def _tail(self, choice: dict[str, Any], i: int, main: OpSpec, bn: bool,
              activation: str) -> OpSpec:
        """Stage ``i``'s norm -> activation -> pool on the contraction's output."""
        if not self.dim:
            return OpSpec("tail", 0, (main.out,), bn=bn, activation=activation)
        pool = str(self.value(choice, "pool"))
        kind = pool if pool in ("max", "avg") and self.can_shrink(i, pool) else "none"
        return OpSpec("tail", self.dim, op_output_shape(main), bn=bn, activation=activation,
                      pool=kind)

    def _main_op(self, i: int, choice: dict[str, Any]) -> list[OpSpec]:
        if not self._exists(choice, i):
            return []
        bn = bool(self.value(choice, "batch_norm")) if self.dim else False
        in_shape = (self._c_in(choice, i), *self._spatial(choice, i))
        return [self._main(choice, i, in_shape, int(self.value(choice, "widths", i)), bn)]

    def _tail_op(self, i: int, choice: dict[str, Any]) -> list[OpSpec]:
        if not self._exists(choice, i):
            return []
        bn = bool(self.value(choice, "batch_norm"))
        width = int(self.value(choice, "widths", i))
        main = self._main(choice, i, (1, *self._spatial(choice, i)), width, bn)
        return [self._tail(choice, i, main, bn, str(self.value(choice, "activation")))]

    def _head_op(self, depth: int, choice: dict[str, Any]) -> list[OpSpec]:
        if int(self.value(choice, "depth")) != depth:
            return []
        c_last = self._c_in(choice, depth)
        return [OpSpec("head", self.dim, (c_last, *self._spatial(choice, depth)),
                       out=self.num_classes)]

    def _model_op(self, choice: dict[str, Any]) -> list[OpSpec]:
        depth = int(self.value(choice, "depth"))
        return [OpSpec("model", self.dim, self.input_shape, out=depth)]


def option_index(options: list[Any], value: Any) -> int:
    """Position of ``value`` among ``options``, type-strict (``True`` is not ``1``)."""
    for j, option in enumerate(options):
        if option == value and type(option) is type(value):
            return j
    raise ConfigError(f"{value!r} is not among the options {options}")
