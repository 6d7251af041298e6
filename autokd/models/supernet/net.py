"""The DARTS supernet of a stack family: every architecture decision as one mixed operation.

Why it looks like this:

* depth: every optional stage is a mixture of its block and a parameter-free skip (FBNet). The
  depth alpha gives each stage the gate ``g_i = P(depth > i) / P(depth > i-1)``, so the path
  that runs exactly ``d`` blocks has weight ``p_d`` and a one-hot alpha is the shallower net.
* widths, kernels, pool, activation and batch norm: mixed inside each stage
  (``autokd.models.supernet.stage``).
* cost: ``cost_terms()`` (``autokd.models.supernet.terms``) says, for every part of the derived
  network, which decisions it depends on and which exported layers it is for each combination,
  so the expected cost under alpha is exact when alpha is one-hot.

The per-family facts (spatial rank, relaxable keys, pool kinds, spec defaults) come from the
family's record: ``Family.supernet`` is a ``StackForm``.

Shapes: ``B`` batch, ``C`` channels (or features), ``S`` spatial dims (none for the MLP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from autokd.errors import ConfigError
from autokd.models import blocks
from autokd.models._family import get_family, relaxed_options, supernet_form
from autokd.models.supernet.relax import ArchParameters, Relaxation
from autokd.models.supernet.stage import MixedStage, fit_spatial, is_zero, pad_channels
from autokd.models.supernet.terms import PER_STAGE, StackCostTerms

__all__ = ["StackForm", "Supernet"]


@dataclass(frozen=True)
class StackForm:
    """How a stack family (stages of contraction -> norm -> act -> pool) relaxes.

    Attributes:
        dim: Spatial rank of its layers: 2 images, 1 signals, 0 vectors (the MLP).
        relaxable: Spec keys a supernet can relax (dropout is a regulariser with no cost: its
            validation-loss gradient always points to 0, so it is left to the outer loop).
        pools: The pool kinds a ``pool`` decision may take.
    """

    dim: int
    relaxable: tuple[str, ...]
    pools: tuple[str, ...] = ()

    def build(self, family: str, decisions: dict[str, list[Any]], fixed: dict[str, Any],
              input_shape: tuple[int, ...], num_classes: int,
              relaxation: Relaxation | None = None, seed: int = 0) -> Supernet:
        return Supernet(family, decisions, fixed, input_shape, num_classes, relaxation, seed)


class Supernet(ArchParameters, StackCostTerms, nn.Module):
    """All architectures of a space in one network, mixed by architecture parameters.

    Args:
        family: A registered family whose record's ``supernet`` is a ``StackForm``
            (``cnn``, ``cnn1d``, ``mlp``).
        decisions: The relaxed decisions, ``{name: options}``; per-stage ones are named
            ``widths_0``, ``widths_1``, ... (as Optuna trials name them), global ones plainly.
        fixed: Spec values for every key that is not a decision (family defaults fill the rest).
        input_shape: One sample's shape.
        num_classes: ``K``.
        relaxation: How alpha becomes mixing weights (default softmax).
        seed: Seeds the weights and the initial alpha (``1e-3 * N(0, 1)``, as in DARTS).
    """

    def __init__(self, family: str, decisions: dict[str, list[Any]], fixed: dict[str, Any],
                 input_shape: tuple[int, ...], num_classes: int,
                 relaxation: Relaxation | None = None, seed: int = 0) -> None:
        super().__init__()
        self.family, self.form = family, supernet_form(family, StackForm)
        self.dim = self.form.dim
        self.decisions = _check_decisions(self.form, family, decisions)
        self.fixed = _check_fixed(family, fixed)
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        self.relaxation = relaxation or Relaxation()
        self.depths = sorted(self.options("depth"))
        self.max_depth = self.depths[-1]
        self._init_weights(seed)

    # -- decisions ----------------------------------------------------------------------------
    def decision_name(self, key: str, stage: int | None = None) -> str | None:
        """The decision governing ``key`` (at ``stage`` for per-stage keys), or None."""
        if stage is not None and f"{key}_{stage}" in self.decisions:
            return f"{key}_{stage}"
        return key if key in self.decisions else None

    def options(self, key: str, stage: int | None = None) -> list[Any]:
        name = self.decision_name(key, stage)
        if name is not None:
            return list(self.decisions[name])
        return [self._fixed_value(key, stage)]

    def _fixed_value(self, key: str, stage: int | None) -> Any:
        value = self.fixed[key]
        if isinstance(value, (list, tuple)):
            if stage is None or stage >= len(value):
                raise ConfigError(f"{self.family} spec {key!r} has no entry for stage {stage}")
            return value[stage]
        return value

    def value(self, choice: dict[str, Any], key: str, stage: int | None = None) -> Any:
        """The value of ``key`` (at ``stage``) in a choice of decision values."""
        name = self.decision_name(key, stage)
        return choice[name] if name is not None else self._fixed_value(key, stage)

    # -- layers -------------------------------------------------------------------------------
    def _build_layers(self) -> None:
        channels = self.input_shape[0] if self.dim else math.prod(self.input_shape)
        stages = []
        for i in range(self.max_depth):
            c_max = max(self.options("widths", i))
            skippable = self.depths[0] <= i
            c_total = max(c_max, channels) if skippable else c_max
            stages.append(self._stage(i, channels, c_total))
            channels = c_total
        self.stages = nn.ModuleList(stages)
        self.global_pool = blocks.global_pool(self.dim) if self.dim else nn.Identity()
        self.dropout = nn.Dropout(float(self.fixed["dropout"]) if self.dim else 0.0)
        self.head = nn.Linear(channels, self.num_classes)
        self.stage_shapes = self._trace_shapes()

    def _stage(self, i: int, c_in: int, c_total: int) -> MixedStage:
        pools = self.options("pool") if self.dim else ["none"]
        kernels = self.options("kernel", i) if self.dim else [0]
        dropout = 0.0 if self.dim else float(self.fixed["dropout"])
        shrink = [self.can_shrink(i, p) for p in pools]
        widths = [int(w) for w in self.options("widths", i)]
        bn = [bool(b) for b in self.options("batch_norm")]
        return MixedStage(self.dim, c_in, widths, c_total, kernels, bn,
                          self.options("activation"), pools, shrink, dropout)

    def _trace_shapes(self) -> list[tuple[int, ...]]:
        """Each stage's output shape in the supernet (one dry run)."""
        shapes, was = [], self.training
        self.eval()
        weights = self._weights()
        with torch.no_grad():
            h = torch.zeros(2, *self.input_shape)
            h = h if self.dim else h.flatten(1)
            for i, stage in enumerate(self.stages):
                h = stage(h, self._stage_weights(weights, i))
                shapes.append(tuple(h.shape[1:]))
        self.train(was)
        return shapes

    def can_shrink(self, stage: int, pool: str) -> bool:
        """ConvNet's rule: a stage down-samples while the tracked map size is >= 2."""
        if not self.dim:
            return False
        size = min(self.input_shape[1:])
        for _ in range(stage):
            if size >= 2 and pool != "none":
                size = (size + 1) // 2
        return size >= 2

    # -- forward ------------------------------------------------------------------------------
    def _weights(self) -> dict[str, Tensor]:
        return {name: self.relaxation.weights(alpha, self.training)
                for name, alpha in self.alphas.items()}

    def _decision_weights(self, weights: dict[str, Tensor], key: str,
                          stage: int | None = None) -> Tensor:
        name = self.decision_name(key, stage)
        if name is not None:
            return weights[name]
        return torch.ones(1, device=self.head.weight.device)

    def _stage_weights(self, weights: dict[str, Tensor], i: int) -> dict[str, Tensor]:
        return {key: self._decision_weights(weights, key, i)
                for key in ("widths", "kernel", "batch_norm", "activation", "pool")}

    def gates(self, weights: dict[str, Tensor]) -> list[Tensor | None]:
        """Per stage: None when it always runs, else ``P(depth > i) / P(depth > i-1)``."""
        if "depth" not in self.decisions:
            return [None] * self.max_depth
        p = weights["depth"]
        depths = torch.tensor(self.options("depth"), device=p.device)
        out: list[Tensor | None] = []
        previous = None
        for i in range(self.max_depth):
            if i < self.depths[0]:
                out.append(None)
                continue
            survive = (p * (depths > i).to(p.dtype)).sum()
            gate = survive if previous is None else survive / previous.clamp_min(1e-12)
            out.append(gate.clamp(0.0, 1.0))
            previous = survive
        return out

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, *input_shape)
        weights = self._weights()
        h = x if self.dim else x.flatten(1)  # (B, C, *S) or (B, D)
        for i, gate in enumerate(self.gates(weights)):
            h = self._run_stage(i, h, gate, weights)  # (B, C_i, *S_i)
        h = self.global_pool(h).flatten(1) if self.dim else h  # (B, C_last)
        return self.head(self.dropout(h))  # (B, K)

    def _run_stage(self, i: int, h: Tensor, gate: Tensor | None,
                   weights: dict[str, Tensor]) -> Tensor:
        if gate is None:
            return self.stages[i](h, self._stage_weights(weights, i))
        skip = self._skip(h, i)
        if is_zero(gate):
            return skip
        block = self.stages[i](h, self._stage_weights(weights, i))
        return gate * block + (1.0 - gate) * skip

    def _skip(self, h: Tensor, i: int) -> Tensor:
        """The parameter-free candidate: pad channels, average-pool to the stage's map size."""
        shape = self.stage_shapes[i]
        h = pad_channels(h, shape[0])
        return fit_spatial(h, shape[1:]) if self.dim else h

    # -- derivation ---------------------------------------------------------------------------
    def argmax_choice(self) -> dict[str, Any]:
        """The most probable option of every decision (first on ties), inactive ones too."""
        return {name: self.decisions[name][int(alpha.detach().argmax())]
                for name, alpha in self.alphas.items()}

    def nested(self, name: str) -> bool:
        """Depth and widths are nested candidates (skips, channel masks), not exclusive ops."""
        base = name.rpartition("_")[0] if name.rpartition("_")[2].isdigit() else name
        return base in ("depth", "widths")

    def marginal_choice(self) -> dict[str, Any]:
        """Argmax of what each mixed op really chooses between.

        A stage is kept or skipped and a channel kept or masked, with probabilities
        ``P(depth > i)`` and ``P(width > c)``; keeping each when that is at least 1/2 gives the
        upper median of the decision. A bimodal width alpha (mass on 4 and on 48) then yields a
        width between them, as its expected cost does, where the plain argmax would jump to an
        end. Exclusive decisions (kernel, pool, activation, norm) take the argmax.
        """
        choice = self.argmax_choice()
        for name, alpha in self.alphas.items():
            if self.nested(name):
                choice[name] = _upper_median(self.decisions[name], alpha.detach().softmax(-1))
        return choice

    def choice(self, rule: str = "argmax") -> dict[str, Any]:
        """The derived full choice by ``rule``: ``argmax`` or ``marginal``."""
        if rule not in ("argmax", "marginal"):
            raise ConfigError(f"unknown derivation rule {rule!r}; known: argmax, marginal")
        return self.argmax_choice() if rule == "argmax" else self.marginal_choice()

    def active(self, choice: dict[str, Any]) -> dict[str, Any]:
        """Drop per-stage decisions of stages beyond the chosen depth."""
        depth = int(self.value(choice, "depth"))
        out = {}
        for name, value in choice.items():
            base, _, idx = name.rpartition("_")
            if base in PER_STAGE and idx.isdigit() and int(idx) >= depth:
                continue
            out[name] = value
        return out

    def export(self, rule: str = "argmax") -> dict[str, Any]:
        """``{param_name: choice}`` as the samplers produce it (NNI-style).

        Args:
            rule: ``argmax`` per decision, or ``marginal`` (see ``marginal_choice``).
        """
        return self.active(self.choice(rule))

    def spec_for(self, choice: dict[str, Any]) -> dict[str, Any]:
        """The student spec (``build_student`` form) of a full or active choice."""
        depth = int(self.value(choice, "depth"))
        spec = dict(self.fixed)
        for key in self.form.relaxable:
            if key not in ("depth", *PER_STAGE):
                spec[key] = self.value(choice, key)
        spec["depth"] = depth
        spec["widths"] = [int(self.value(choice, "widths", i)) for i in range(depth)]
        if self.dim:
            kernels = [int(self.value(choice, "kernel", i)) for i in range(depth)]
            per_stage = any(f"kernel_{i}" in self.decisions for i in range(depth))
            spec["kernel"] = kernels if per_stage or isinstance(self.fixed["kernel"], list) \
                else self.value(choice, "kernel")
        return spec


def _upper_median(options: list[Any], p: Tensor) -> Any:
    """The largest option ``v`` with ``P(option >= v) >= 1/2``."""
    order = sorted(range(len(options)), key=lambda j: options[j], reverse=True)
    mass = 0.0
    for j in order:
        mass += float(p[j])
        if mass >= 0.5 - 1e-9:
            return options[j]
    return options[order[-1]]


def _check_decisions(form: StackForm, family: str,
                     decisions: dict[str, list[Any]]) -> dict[str, list[Any]]:
    out = {}
    for name, options in decisions.items():
        base, _, idx = name.rpartition("_")
        key = base if base in PER_STAGE and idx.isdigit() else name
        relaxed_options(form, family, name, key, options)
        if key == "pool" and any(p not in form.pools for p in options):
            raise ConfigError(f"pool options must be in {', '.join(form.pools)}, got {options}")
        for act in options if key == "activation" else []:
            blocks.ACTIVATIONS.get(act)
        out[name] = list(options)
    return out


def _check_fixed(family: str, fixed: dict[str, Any]) -> dict[str, Any]:
    defaults = get_family(family).defaults
    unknown = sorted(set(fixed) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown {family} spec key(s): {', '.join(unknown)}")
    return {**defaults, **fixed}
