"""The exported layers a supernet's cost is made of, one context at a time.

An ``OpSpec`` names one group of layers of a derived student in its context (input shape,
position); the latency table times each distinct key once and the cost model sums them. Op kinds
are registered (``OP_KINDS``) so a family whose blocks need a new kind adds it in its own file.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from autokd.models import blocks
from autokd.registry import Registry

__all__ = ["OP_KINDS", "CostTerm", "OpKind", "OpSpec", "build_op", "op_output_shape"]


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
    # kind-specific settings as sorted ``(name, value)`` pairs (an inverted-residual block's
    # expansion and squeeze-excitation), so a family's op kinds need no new fields here
    params: tuple[tuple[str, object], ...] = ()

    def param(self, name: str, default: object = None) -> object:
        """One kind-specific setting (``default`` when absent)."""
        return dict(self.params).get(name, default)

    def key(self) -> str:
        """What latency depends on, as a stable string (the latency table's key)."""
        return OP_KINDS.get(self.kind).key(self)

    @property
    def shape_text(self) -> str:
        return "x".join(map(str, self.in_shape))


@dataclass(frozen=True)
class OpKind:
    """How one kind of ``OpSpec`` is built and keyed (a family adds kinds it needs)."""

    build: Callable[[OpSpec], nn.Module]
    key: Callable[[OpSpec], str]


OP_KINDS: Registry[OpKind] = Registry("supernet op kind")


def build_op(op: OpSpec) -> nn.Module:
    """The layers an ``OpSpec`` stands for, built from the same blocks as the students."""
    return OP_KINDS.get(op.kind).build(op)


def _build_head(op: OpSpec) -> nn.Module:
    if op.dim == 0:
        return nn.Linear(op.in_shape[0], op.out)
    # ConvNet: global pool -> flatten -> dropout -> linear
    return nn.Sequential(blocks.global_pool(op.dim), nn.Flatten(1), nn.Dropout(0.0),
                         nn.Linear(op.in_shape[0], op.out))


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


# The conv bias is left out of its key: it is fused into the convolution kernel and costs
# nothing measurable, while keying on it would double the table.
OP_KINDS.register("conv", OpKind(
    lambda op: blocks.conv(op.dim, op.in_shape[0], op.out, op.kernel, op.stride, bias=op.bias),
    lambda op: f"conv{op.dim}d:{op.shape_text}>{op.out}:k{op.kernel}s{op.stride}"))
OP_KINDS.register("linear", OpKind(
    lambda op: nn.Linear(op.in_shape[0], op.out, bias=op.bias),
    lambda op: f"linear:{op.shape_text}>{op.out}"))
OP_KINDS.register("tail", OpKind(
    _build_tail,
    lambda op: f"tail{op.dim}d:{op.shape_text}:bn{int(op.bn)}:{op.activation}:{op.pool}"))
OP_KINDS.register("head", OpKind(_build_head, lambda op: f"head{op.dim}d:{op.shape_text}>{op.out}"))
OP_KINDS.register("model", OpKind(lambda op: nn.Identity(),
                                  lambda op: f"model{op.dim}d:{op.shape_text}:depth{op.out}"))


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
