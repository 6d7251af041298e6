"""The DARTS supernet: every architecture decision of a space as one mixed operation.

Read top to bottom: the exported layers (``OpSpec``, ``build_op``), the relaxations (softmax
and Gumbel-softmax), the mixed stage, the supernet, and the cost terms it exposes.

Why it looks like this:

* depth: every optional stage is a mixture of its block and a parameter-free skip (FBNet). The
  depth alpha gives each stage the gate ``g_i = P(depth > i) / P(depth > i-1)``, so the path
  that runs exactly ``d`` blocks has weight ``p_d`` and a one-hot alpha is the shallower net.
* widths: one weight tensor of the largest width per stage and a soft channel mask
  ``m_c = P(width > c)`` (FBNetV2), so memory does not grow with the number of widths.
* kernels: separate candidate convolutions; pool, activation and batch norm: mixtures of the
  same ``blocks.py`` ops the fixed students use, so the supernet and the students agree.
* cost: ``cost_terms()`` says, for every part of the derived network, which decisions it
  depends on and which exported layers (``OpSpec``) it is for each combination of their
  options, so the expected cost under alpha is exact when alpha is one-hot.

Shapes: ``B`` batch, ``C`` channels (or features), ``S`` spatial dims (none for the MLP).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autokd.errors import ConfigError
from autokd.models import blocks
from autokd.models.conv import CNN_DEFAULTS, POOLS
from autokd.models.mlp import MLP_DEFAULTS

__all__ = [
    "RELAXABLE",
    "RELAXATIONS",
    "OpSpec",
    "CostTerm",
    "build_op",
    "op_output_shape",
    "Relaxation",
    "Supernet",
]

# family -> spec keys a supernet can relax (dropout is a regulariser with no cost: its
# validation-loss gradient always points to 0, so it is left to the outer loop)
RELAXABLE: dict[str, tuple[str, ...]] = {
    "cnn": ("depth", "widths", "kernel", "pool", "activation", "batch_norm"),
    "cnn1d": ("depth", "widths", "kernel", "pool", "activation", "batch_norm"),
    "mlp": ("depth", "widths", "activation", "batch_norm"),
}
RELAXATIONS = ("softmax", "gumbel")
_DIMS = {"cnn": 2, "cnn1d": 1, "mlp": 0}
_DEFAULTS = {"cnn": CNN_DEFAULTS, "cnn1d": CNN_DEFAULTS, "mlp": MLP_DEFAULTS}
_PER_STAGE = ("widths", "kernel")


# ---------------------------------------------------------------------------------------------
# The exported layers, one context at a time
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpSpec:
    """One group of exported layers in its context (input shape, position).

    ``kind`` is ``conv`` / ``linear`` (the contraction of a stage), ``tail`` (batch norm,
    activation, pooling of a stage), ``head`` (global pool + classifier) or ``model`` (the
    per-depth framework overhead a whole model adds; no layers).
    """

    kind: str
    dim: int  # spatial rank: 2 images, 1 signals, 0 vectors
    in_shape: tuple[int, ...]  # one sample: (C, *S) or (D,)
    out: int = 0  # output channels / features; classes for a head; depth for ``model``
    kernel: int = 0
    stride: int = 1
    bias: bool = False
    bn: bool = False
    activation: str = ""
    pool: str = "none"

    def key(self) -> str:
        """What latency depends on, as a stable string (the latency table's key).

        The conv bias is left out: it is fused into the convolution kernel and costs nothing
        measurable, while keying on it would double the table.
        """
        shape = "x".join(map(str, self.in_shape))
        if self.kind == "conv":
            return f"conv{self.dim}d:{shape}>{self.out}:k{self.kernel}s{self.stride}"
        if self.kind == "linear":
            return f"linear:{shape}>{self.out}"
        if self.kind == "tail":
            return f"tail{self.dim}d:{shape}:bn{int(self.bn)}:{self.activation}:{self.pool}"
        if self.kind == "head":
            return f"head{self.dim}d:{shape}>{self.out}"
        return f"model{self.dim}d:{shape}:depth{self.out}"


def build_op(op: OpSpec) -> nn.Module:
    """The layers an ``OpSpec`` stands for, built from the same blocks as the students."""
    c_in = op.in_shape[0]
    if op.kind == "conv":
        return blocks.conv(op.dim, c_in, op.out, op.kernel, op.stride, bias=op.bias)
    if op.kind == "linear":
        return nn.Linear(c_in, op.out, bias=op.bias)
    if op.kind == "tail":
        return _build_tail(op)
    if op.kind == "head":
        if op.dim == 0:
            return nn.Linear(c_in, op.out)
        # ConvNet: global pool -> flatten -> dropout -> linear
        return nn.Sequential(blocks.global_pool(op.dim), nn.Flatten(1), nn.Dropout(0.0),
                             nn.Linear(c_in, op.out))
    return nn.Identity()


def _build_tail(op: OpSpec) -> nn.Module:
    layers: list[nn.Module] = []
    if op.bn:
        layers.append(blocks.batch_norm(max(op.dim, 1), op.in_shape[0]))
    layers.append(blocks.make_activation(op.activation))
    if op.dim == 0:
        layers.append(nn.Dropout(0.0))  # MLP layers always hold a dropout module
    elif op.pool in ("max", "avg"):
        layers.append(blocks.pool(op.dim, op.pool))
    return nn.Sequential(*layers)


@functools.lru_cache(maxsize=65536)
def op_output_shape(op: OpSpec) -> tuple[int, ...]:
    """Output shape of one sample through ``build_op(op)`` (run, not derived by hand)."""
    module = build_op(op).eval()
    with torch.no_grad():
        out = module(torch.zeros(2, *op.in_shape))  # batch 2: batch norm needs > 1 in training
    return tuple(out.shape[1:])


@dataclass(frozen=True)
class CostTerm:
    """One part of the derived network and what it is for each combination of decisions.

    ``entries`` maps option indices (one per name in ``decisions``, in that order) to the
    exported layers present for that combination; combinations that add nothing (a stage
    beyond the depth) are absent.
    """

    decisions: tuple[str, ...]
    entries: tuple[tuple[tuple[int, ...], tuple[OpSpec, ...]], ...]


# ---------------------------------------------------------------------------------------------
# Relaxations
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Mixed operations
# ---------------------------------------------------------------------------------------------


def _is_zero(weight: Tensor) -> bool:
    return float(weight.detach()) == 0.0


def _fit(h: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """Resize ``h`` (B, C, *S) to ``spatial`` by average pooling (no-op when equal).

    Why: candidates of one decision can disagree on the map size (no pool vs. pool, floor vs.
    ceil on odd sizes); averaging keeps the global-pool statistics the head sees.
    """
    if tuple(h.shape[2:]) == tuple(spatial):
        return h
    pool = F.adaptive_avg_pool1d if len(spatial) == 1 else F.adaptive_avg_pool2d
    return pool(h, spatial)


def _mix(weights: Tensor, branches: Sequence[Callable[[], Tensor]]) -> Tensor:
    """``sum_j w_j * branch_j()``, skipping branches whose weight is exactly zero."""
    outs = [(w, fn()) for w, fn in zip(weights, branches) if not _is_zero(w)]
    if len(outs) == 1 and float(outs[0][0].detach()) == 1.0 and not outs[0][0].requires_grad:
        return outs[0][1]
    spatial = tuple(min(sizes) for sizes in zip(*(o.shape[2:] for _, o in outs)))
    total = None
    for w, out in outs:
        term = w * _fit(out, spatial) if spatial else w * out
        total = term if total is None else total + term
    return total


def _pad_channels(h: Tensor, channels: int) -> Tensor:
    """Zero-pad (or cut) dim 1 to ``channels`` so a skip matches the stage's output."""
    have = h.shape[1]
    if have == channels:
        return h
    if have > channels:
        return h[:, :channels]
    pad = [0, 0] * (h.dim() - 2) + [0, channels - have]
    return F.pad(h, pad)


class MixedStage(nn.Module):
    """One stage with every candidate: contraction per kernel -> norm -> act -> pool -> mask.

    Weights: one convolution (or linear layer) per kernel candidate with the largest width as
    output, one batch norm and one bias for the two batch-norm options. Odd kernels share
    'same' padding, so ``sum_k w_k conv_k(x) = conv(x, sum_k w_k pad(W_k))``: the candidates
    stay separate weights but run as one convolution (half the work of two).
    """

    def __init__(self, dim: int, c_in: int, widths: list[int], c_total: int,
                 kernels: list[int], bn_options: list[bool], activations: list[str],
                 pools: list[str], shrink: list[bool], dropout: float) -> None:
        super().__init__()
        c_max = max(widths)
        self.dim, self.c_max, self.c_total = dim, c_max, c_total
        self.kernels, self.bn_options, self.pools, self.shrink = kernels, bn_options, pools, shrink
        self.fused = dim > 0 and all(k % 2 for k in kernels)
        below = torch.arange(c_max).unsqueeze(1) < torch.tensor(widths)  # (C_max, n_widths)
        self.register_buffer("below", below.float(), persistent=False)
        self.ops = nn.ModuleList(
            [blocks.conv(dim, c_in, c_max, k, 1, bias=False) if dim else nn.Linear(c_in, c_max)
             for k in kernels])
        self.norm = blocks.batch_norm(max(dim, 1), c_max) if True in bn_options else None
        self.bias = nn.Parameter(torch.zeros(c_max)) if dim and False in bn_options else None
        self.acts = nn.ModuleList([blocks.make_activation(a) for a in activations])
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, w: dict[str, Tensor]) -> Tensor:
        # h: (B, C_in, *S); w: mixing weights per decision of this stage
        z = self._contract(h, w["kernel"])  # (B, C_max, *S)
        z = _mix(w["batch_norm"], [functools.partial(self._norm, z, bn)
                                   for bn in self.bn_options])
        z = _mix(w["activation"], [functools.partial(a, z) for a in self.acts])
        if self.dim:
            z = _mix(w["pool"], [functools.partial(self._pool, z, j)
                                 for j in range(len(self.pools))])  # (B, C_max, *S')
        mask = self.below.to(w["widths"].dtype) @ w["widths"]  # (C_max,) = P(width > c)
        z = self.dropout(z) * mask.view(1, -1, *([1] * self.dim))
        return _pad_channels(z, self.c_total)

    def _contract(self, h: Tensor, w: Tensor) -> Tensor:
        if not self.fused:
            return _mix(w, [functools.partial(op, h) for op in self.ops])
        k_max = max(self.kernels)
        weight = None
        for wk, op, k in zip(w, self.ops, self.kernels):
            if _is_zero(wk):
                continue
            pad = [(k_max - k) // 2] * (2 * self.dim)  # centre k x k inside k_max x k_max
            term = wk * F.pad(op.weight, pad)  # (C_max, C_in, *k_max)
            weight = term if weight is None else weight + term
        conv = F.conv1d if self.dim == 1 else F.conv2d
        return conv(h, weight, padding=k_max // 2)

    def _norm(self, z: Tensor, bn: bool) -> Tensor:
        if bn:
            return self.norm(z)
        if self.bias is not None:
            return z + self.bias.view(1, -1, *([1] * self.dim))
        return z  # the MLP's linear layer has its own bias

    def _pool(self, z: Tensor, j: int) -> Tensor:
        kind = self.pools[j]
        if not self.shrink[j] or kind == "none":
            return z
        if kind == "stride":  # a stride-2 'same' conv samples the stride-1 output at even steps
            return z[(...,) + (slice(None, None, 2),) * self.dim]
        fn = {("max", 1): F.max_pool1d, ("max", 2): F.max_pool2d,
              ("avg", 1): F.avg_pool1d, ("avg", 2): F.avg_pool2d}[(kind, self.dim)]
        return fn(z, 2)


# ---------------------------------------------------------------------------------------------
# The supernet
# ---------------------------------------------------------------------------------------------


class Supernet(nn.Module):
    """All architectures of a space in one network, mixed by architecture parameters.

    Args:
        family: ``cnn``, ``cnn1d`` or ``mlp``.
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
        self.family, self.dim = family, _check_family(family)
        self.decisions = _check_decisions(family, decisions)
        self.fixed = _check_fixed(family, fixed)
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        self.relaxation = relaxation or Relaxation()
        self.depths = sorted(self.options("depth"))
        self.max_depth = self.depths[-1]
        gen = torch.Generator().manual_seed(seed)
        self.alphas = nn.ParameterDict(
            {name: nn.Parameter(1e-3 * torch.randn(len(opts), generator=gen))
             for name, opts in self.decisions.items()})
        with torch.random.fork_rng(devices=[]):  # same seed, same weights; global RNG untouched
            torch.manual_seed(seed)
            self._build_layers()

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

    # -- parameters ---------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def probabilities(self) -> dict[str, Tensor]:
        """``softmax(alpha)`` per decision (differentiable; what the expected cost uses)."""
        return {name: alpha.softmax(-1) for name, alpha in self.alphas.items()}

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
        if _is_zero(gate):
            return skip
        block = self.stages[i](h, self._stage_weights(weights, i))
        return gate * block + (1.0 - gate) * skip

    def _skip(self, h: Tensor, i: int) -> Tensor:
        """The parameter-free candidate: pad channels, average-pool to the stage's map size."""
        shape = self.stage_shapes[i]
        h = _pad_channels(h, shape[0])
        return _fit(h, shape[1:]) if self.dim else h

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
            if base in _PER_STAGE and idx.isdigit() and int(idx) >= depth:
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
        for key in RELAXABLE[self.family]:
            if key not in ("depth", *_PER_STAGE):
                spec[key] = self.value(choice, key)
        spec["depth"] = depth
        spec["widths"] = [int(self.value(choice, "widths", i)) for i in range(depth)]
        if self.dim:
            kernels = [int(self.value(choice, "kernel", i)) for i in range(depth)]
            per_stage = any(f"kernel_{i}" in self.decisions for i in range(depth))
            spec["kernel"] = kernels if per_stage or isinstance(self.fixed["kernel"], list) \
                else self.value(choice, "kernel")
        return spec

    # -- cost description ---------------------------------------------------------------------
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

    def full_choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        """An active choice completed with the first option of every missing decision."""
        return {name: choice.get(name, opts[0]) for name, opts in self.decisions.items()}

    def ops_for(self, choice: dict[str, Any]) -> list[OpSpec]:
        """Every exported layer group of one architecture (the one-hot case of the terms)."""
        full = self.full_choice(choice)
        out: list[OpSpec] = []
        for term in self.cost_terms_cached():
            idx = tuple(_index(self.decisions[n], full[n]) for n in term.decisions)
            out += [op for key, ops in term.entries if key == idx for op in ops]
        return out

    def cost_terms_cached(self) -> list[CostTerm]:
        if not hasattr(self, "_terms"):
            self._terms = self.cost_terms()
        return self._terms


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _upper_median(options: list[Any], p: Tensor) -> Any:
    """The largest option ``v`` with ``P(option >= v) >= 1/2``."""
    order = sorted(range(len(options)), key=lambda j: options[j], reverse=True)
    mass = 0.0
    for j in order:
        mass += float(p[j])
        if mass >= 0.5 - 1e-9:
            return options[j]
    return options[order[-1]]


def _index(options: list[Any], value: Any) -> int:
    """Position of ``value`` among ``options``, type-strict (``True`` is not ``1``)."""
    for j, option in enumerate(options):
        if option == value and type(option) is type(value):
            return j
    raise ConfigError(f"{value!r} is not among the options {options}")


def _check_family(family: str) -> int:
    if family not in _DIMS:
        raise ConfigError(f"no supernet for student family {family!r}; known: "
                          f"{', '.join(sorted(_DIMS))}")
    return _DIMS[family]


def _check_decisions(family: str, decisions: dict[str, list[Any]]) -> dict[str, list[Any]]:
    out = {}
    for name, options in decisions.items():
        base, _, idx = name.rpartition("_")
        key = base if base in _PER_STAGE and idx.isdigit() else name
        if key not in RELAXABLE[family]:
            raise ConfigError(f"{family} supernet cannot relax {name!r}; relaxable: "
                              f"{', '.join(RELAXABLE[family])}")
        if not options:
            raise ConfigError(f"decision {name!r} has no options")
        if key == "pool" and any(p not in POOLS for p in options):
            raise ConfigError(f"pool options must be in {', '.join(POOLS)}, got {options}")
        for act in options if key == "activation" else []:
            blocks.ACTIVATIONS.get(act)
        out[name] = list(options)
    return out


def _check_fixed(family: str, fixed: dict[str, Any]) -> dict[str, Any]:
    defaults = _DEFAULTS[family]
    unknown = sorted(set(fixed) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown {family} spec key(s): {', '.join(unknown)}")
    return {**defaults, **fixed}
