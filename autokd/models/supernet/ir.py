"""The DARTS supernet of the ``mbv2`` family: inverted-residual blocks as mixed operations.

Why it looks like this (FBNet, Wu et al. 2019; FBNetV2, Wan et al. 2020; ProxylessNAS, Cai et
al. 2019):

* every block position ``(stage i, block j)`` up to the deepest depth is one decision
  ``block_i_j`` over the kernel x expansion candidates of its stage, plus ``skip`` (identity) for
  the blocks a shallower depth may drop; depth is searched by those skips;
* widths are one decision per stage (``widths_i``, as the space names it) realised by channel
  masks on shared weights sized for the widest option (FBNetV2): the block output is multiplied
  by ``m_c = P(width > c)``, the hidden channels by ``P(e * c_in > c)``;
* the candidates of one block share weights too: one 1x1 expansion at the largest expansion, one
  depthwise kernel per size fused into one convolution (odd kernels share 'same' padding), one
  projection. The mixed block is therefore a linearisation, as FBNetV2's, while the cost terms
  below are exact for every discrete candidate;
* squeeze-excitation and the activation are fixed per stage (the values the run fixes): relaxing
  them would double the hidden path for little cost signal.

Derivation (``ir_derive``) gives a spec in the agreed ``mbv2`` schema, whose keys are per stage:
depth = the stage's kept blocks, kernel and expansion = the values with the largest probability
summed over them.

Shapes: ``B`` batch, ``C`` channels, ``S`` spatial dims (``H, W`` for images, ``L`` for signals).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autokd.errors import ConfigError
from autokd.models import blocks
from autokd.models._family import get_family, relaxed_options, supernet_form
from autokd.models.supernet.ir_blocks import (
    SqueezeExcite,
    block_stride,
    conv_bn_act,
    stem_layers,
    stem_stride,
)
from autokd.models.supernet.ir_derive import SKIP, IRDerivation, candidate_label, parse_label
from autokd.models.supernet.ops import CostTerm, OpSpec
from autokd.models.supernet.relax import ArchParameters, Relaxation
from autokd.models.supernet.stage import is_zero, pad_channels
from autokd.models.supernet.terms import TermTable

__all__ = ["SKIP", "IRForm", "IRSupernet", "MixedInvertedResidual", "candidate_label"]

RELAXABLE = ("depths", "widths", "kernel", "expansion")


@dataclass(frozen=True)
class IRForm:
    """How the ``mbv2`` family relaxes (``Family.supernet``)."""

    relaxable: tuple[str, ...] = RELAXABLE

    def build(self, family: str, decisions: dict[str, list[Any]], fixed: dict[str, Any],
              input_shape: tuple[int, ...], num_classes: int,
              relaxation: Relaxation | None = None, seed: int = 0) -> IRSupernet:
        return IRSupernet(family, decisions, fixed, input_shape, num_classes, relaxation, seed)


class MixedInvertedResidual(nn.Module):
    """One block position with every kernel x expansion candidate on shared weights.

    ``forward`` returns the residual branch ``F(x)`` mixed by ``q`` (candidate weights that sum
    to 1); the caller adds the input and the skip.
    """

    def __init__(self, dim: int, c_in: int, in_widths: list[int], c_out: int,
                 kernels: list[int], expansions: list[int], stride: int, se: bool,
                 activation: str) -> None:
        super().__init__()
        self.dim, self.kernels, self.expansions, self.stride = dim, kernels, expansions, stride
        hidden = c_in * max(expansions)
        self.hidden = hidden
        self.expand = conv_bn_act(dim, c_in, hidden, 1, 1, activation) if hidden > c_in \
            else None
        self.e1 = expansions.index(1) if 1 in expansions else None
        cls = nn.Conv1d if dim == 1 else nn.Conv2d
        self.depthwise = nn.ModuleList([cls(hidden, hidden, k, stride=stride, padding=k // 2,
                                            groups=hidden, bias=False) for k in kernels])
        self.dw_norm = blocks.batch_norm(dim, hidden)
        self.dw_act = blocks.make_activation(activation)
        self.se = SqueezeExcite(dim, hidden) if se else None
        self.project = conv_bn_act(dim, hidden, c_out, 1, 1, None)
        # below[h, e, w] = 1 when hidden channel h exists for expansion e and input width w
        e = torch.tensor(expansions).view(1, -1, 1)
        w = torch.tensor(in_widths).view(1, 1, -1)
        below = torch.arange(hidden).view(-1, 1, 1) < e * w
        self.register_buffer("below", below.float(), persistent=False)

    def forward(self, x: Tensor, q: Tensor, in_w: Tensor, out_mask: Tensor) -> Tensor:
        # x: (B, C_in, *S); q: (n_kernels, n_expansions); in_w: (n_in_widths,); out_mask: (C_out,)
        q_k, q_e = q.sum(1), q.sum(0)
        h = self._expand(x, q_e)  # (B, hidden, *S)
        h = self.dw_act(self.dw_norm(self._depthwise(h, q_k)))  # (B, hidden, *S')
        if self.se is not None:
            h = self.se(h)
        mask = torch.einsum("hew,e,w->h", self.below.to(q.dtype), q_e, in_w.to(q.dtype))
        h = h * mask.view(1, -1, *([1] * self.dim))
        return self.project(h) * out_mask.view(1, -1, *([1] * self.dim))  # (B, C_out, *S')

    def _expand(self, x: Tensor, q_e: Tensor) -> Tensor:
        if self.expand is None:
            return x
        if self.e1 is None or is_zero(q_e[self.e1]):
            return self.expand(x)
        plain = pad_channels(x, self.hidden)  # expansion 1: the depthwise conv sees x itself
        if float(q_e[self.e1].detach()) == 1.0:
            return plain
        return q_e[self.e1] * plain + (1.0 - q_e[self.e1]) * self.expand(x)

    def _depthwise(self, h: Tensor, q_k: Tensor) -> Tensor:
        k_max = max(self.kernels)
        weight = None
        for wk, conv, k in zip(q_k, self.depthwise, self.kernels):
            if is_zero(wk):
                continue
            term = wk * F.pad(conv.weight, [(k_max - k) // 2] * (2 * self.dim))
            weight = term if weight is None else weight + term
        fn = F.conv1d if self.dim == 1 else F.conv2d
        return fn(h, weight, stride=self.stride, padding=k_max // 2, groups=self.hidden)


class IRSupernet(ArchParameters, IRDerivation, TermTable, nn.Module):
    """Every ``mbv2`` architecture of a space in one network, mixed by architecture parameters.

    Args:
        family: A registered family whose record's ``supernet`` is an ``IRForm``.
        decisions: The space's relaxed decisions (``depths_i``, ``widths_i``, ``kernel_i``,
            ``expansion_i``, or their unsuffixed forms for one value shared by every stage).
        fixed: Spec values of every other key (family defaults fill the rest).
        input_shape: One sample, ``(C, H, W)`` or ``(C, L)``.
        num_classes: ``K``.
        relaxation: How alpha becomes mixing weights (default softmax).
        seed: Seeds the weights and the initial alpha.

    ``decisions`` then holds the supernet's own decisions (``block_i_j`` and the width ones):
    those are what alpha, the cost model and derivation work on; ``active`` maps a choice of
    them back to the space's parameter names.
    """

    def __init__(self, family: str, decisions: dict[str, list[Any]], fixed: dict[str, Any],
                 input_shape: tuple[int, ...], num_classes: int,
                 relaxation: Relaxation | None = None, seed: int = 0) -> None:
        super().__init__()
        self.family, self.form = family, supernet_form(family, IRForm, "inverted-residual supernet")
        self.space_decisions = _check_decisions(self.form, family, decisions)
        defaults = get_family(family).defaults
        unknown = sorted(set(fixed) - set(defaults))
        if unknown:
            raise ConfigError(f"unknown {family} spec key(s): {', '.join(unknown)}")
        self.fixed = {**defaults, **fixed}
        if len(input_shape) not in (2, 3):
            raise ConfigError(f"{family} supernets take (C, H, W) or (C, L) samples, got "
                              f"{tuple(input_shape)}")
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        self.dim = len(input_shape) - 1
        self.n_stages = _positive(family, "stages", self.fixed["stages"])
        self.relaxation = relaxation or Relaxation()
        self.depths = [0]  # one overhead group for the latency table (``model`` op out=0)
        self._plan()
        self.decisions = self._supernet_decisions()
        self._init_weights(seed)

    # -- the space ----------------------------------------------------------------------------
    def decision_name(self, key: str, stage: int) -> str | None:
        """The space decision governing ``key`` at ``stage``, or None when it is fixed."""
        for name in (f"{key}_{stage}", key):
            if name in self.space_decisions:
                return name
        return None

    def options(self, key: str, stage: int) -> list[Any]:
        name = self.decision_name(key, stage)
        if name is not None:
            return list(self.space_decisions[name])
        value = self.fixed[key]
        if isinstance(value, (list, tuple)):
            if stage >= len(value):
                raise ConfigError(f"{self.family} spec {key!r} has no entry for stage {stage}")
            return [value[stage]]
        return [value]

    def _plan(self) -> None:
        """Per stage: candidates, depth range, widths; per block: stride and input map."""
        side = tuple(self.input_shape[1:])
        self.stem_stride = stem_stride(self.input_shape)
        side = _shrink(side, self.stem_stride)
        self.kernels, self.expansions, self.widths, self.min_depth = [], [], [], []
        self.strides, self.spatial = [], []
        for i in range(self.n_stages):
            kernels = sorted({_positive(self.family, "kernel", k) for k in self.options("kernel", i)},
                             reverse=True)
            if any(k % 2 == 0 for k in kernels):
                raise ConfigError(f"{self.family} kernels must be odd, got {kernels}")
            self.kernels.append(kernels)
            self.expansions.append(sorted({_positive(self.family, "expansion", e)
                                           for e in self.options("expansion", i)}, reverse=True))
            self.widths.append([_positive(self.family, "widths", w)
                                for w in self.options("widths", i)])
            depths = [_positive(self.family, "depths", d) for d in self.options("depths", i)]
            self.min_depth.append(min(depths))
            strides, shapes = [], []
            for j in range(max(depths)):
                strides.append(block_stride(min(side), j == 0))
                shapes.append(side)
                side = _shrink(side, strides[-1])
            self.strides.append(strides)
            self.spatial.append(shapes)
        self.final_spatial = side

    def _supernet_decisions(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for i in range(self.n_stages):
            name = self.decision_name("widths", i)
            if name is not None:
                out[name] = list(self.space_decisions[name])
            labels = [candidate_label(k, e) for k in self.kernels[i] for e in self.expansions[i]]
            for j in range(len(self.strides[i])):
                out[f"block_{i}_{j}"] = labels + ([SKIP] if j >= self.min_depth[i] else [])
        return out

    def stage_value(self, key: str, stage: int) -> Any:
        """A fixed (non-relaxed) per-stage value such as ``se`` or ``activation``."""
        return self.options(key, stage)[0]

    # -- layers -------------------------------------------------------------------------------
    def _build_layers(self) -> None:
        stem_width = _positive(self.family, "stem_width", self.fixed["stem_width"])
        self.stem = stem_layers(self.dim, self.input_shape[0], stem_width, self.stem_stride,
                                str(self.stage_value("activation", 0)))
        in_widths, stages = [stem_width], []
        for i in range(self.n_stages):
            c_out = max(self.widths[i])
            act, se = str(self.stage_value("activation", i)), bool(self.stage_value("se", i))
            blocks_i = []
            for j, stride in enumerate(self.strides[i]):
                ins = in_widths if j == 0 else self.widths[i]
                blocks_i.append(MixedInvertedResidual(
                    self.dim, max(ins), ins, c_out, self.kernels[i], self.expansions[i], stride,
                    se, act))
            stages.append(nn.ModuleList(blocks_i))
            below = torch.arange(c_out).unsqueeze(1) < torch.tensor(self.widths[i])
            self.register_buffer(f"width_below_{i}", below.float(), persistent=False)
            equal = torch.tensor(in_widths).unsqueeze(1) == torch.tensor(self.widths[i])
            self.register_buffer(f"same_width_{i}", equal.float(), persistent=False)
            in_widths = self.widths[i]
        self.stages = nn.ModuleList(stages)
        c_last, head_width = max(in_widths), int(self.fixed["head_width"])
        act_last = str(self.stage_value("activation", self.n_stages - 1))
        self.head_conv = conv_bn_act(self.dim, c_last, head_width, 1, 1, act_last) \
            if head_width else None
        self.pool = blocks.global_pool(self.dim)
        self.dropout = nn.Dropout(float(self.fixed["dropout"]))
        self.classifier = nn.Linear(head_width or c_last, self.num_classes)

    # -- forward ------------------------------------------------------------------------------
    def _width_weights(self, weights: dict[str, Tensor], stage: int,
                       device: torch.device) -> Tensor:
        name = self.decision_name("widths", stage)
        return weights[name] if name is not None else torch.ones(1, device=device)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, *S)
        weights = {n: self.relaxation.weights(a, self.training) for n, a in self.alphas.items()}
        h = self.stem(x)  # (B, stem_width, *S)
        prev = torch.ones(1, device=x.device)
        for i, stage in enumerate(self.stages):
            ww = self._width_weights(weights, i, x.device)
            mask = getattr(self, f"width_below_{i}").to(ww.dtype) @ ww  # (C_i,) = P(width > c)
            for j, block in enumerate(stage):
                h = self._run_block(i, j, block, h, weights[f"block_{i}_{j}"], prev, ww, mask)
            prev = ww
        if self.head_conv is not None:
            h = self.head_conv(h)
        h = self.pool(h).flatten(1)  # (B, C_last)
        return self.classifier(self.dropout(h))  # (B, K)

    def _run_block(self, i: int, j: int, block: MixedInvertedResidual, h: Tensor, w: Tensor,
                   prev: Tensor, ww: Tensor, mask: Tensor) -> Tensor:
        n_k, n_e = len(self.kernels[i]), len(self.expansions[i])
        cand = w[:n_k * n_e].view(n_k, n_e)
        if j > 0:  # same width in and out, stride 1: always a residual; skip keeps only it
            mass = cand.sum()
            if is_zero(mass):
                return h
            return h + mass * block(h, cand / mass.clamp_min(1e-12), ww, mask)
        out = block(h, cand, prev, mask)
        if block.stride != 1:
            return out
        same = getattr(self, f"same_width_{i}").to(ww.dtype)
        r = prev @ same @ ww  # P(c_in == c_out): the residual exists only then
        return out if is_zero(r) else out + r * pad_channels(h, out.shape[1])

    # -- cost terms ---------------------------------------------------------------------------
    def cost_terms(self) -> list[CostTerm]:
        terms = [self._term([], self._stem_op)]
        for i in range(self.n_stages):
            for j in range(len(self.strides[i])):
                names = [f"block_{i}_{j}", self.decision_name("widths", i)]
                if j == 0 and i > 0:
                    names.append(self.decision_name("widths", i - 1))
                terms.append(self._term(names, functools.partial(self._block_op, i, j)))
        terms.append(self._term([self.decision_name("widths", self.n_stages - 1)], self._head_op))
        terms.append(self._term([], self._model_op))
        return terms

    def width(self, choice: dict[str, Any], stage: int) -> int:
        """The width of ``stage`` in a choice; stage -1 is the stem."""
        if stage < 0:
            return int(self.fixed["stem_width"])
        name = self.decision_name("widths", stage)
        return int(choice[name]) if name is not None else int(self.widths[stage][0])

    def _stem_op(self, choice: dict[str, Any]) -> list[OpSpec]:
        return [OpSpec("ir_stem", self.dim, self.input_shape, out=self.width(choice, -1),
                       kernel=3, stride=self.stem_stride,
                       activation=str(self.stage_value("activation", 0)))]

    def _block_op(self, i: int, j: int, choice: dict[str, Any]) -> list[OpSpec]:
        label = choice[f"block_{i}_{j}"]
        if label == SKIP:
            return []
        kernel, expansion = parse_label(label)
        c_out = self.width(choice, i)
        c_in = self.width(choice, i - 1) if j == 0 else c_out
        params = (("expansion", expansion), ("se", bool(self.stage_value("se", i))))
        return [OpSpec("ir_block", self.dim, (c_in, *self.spatial[i][j]), out=c_out,
                       kernel=kernel, stride=self.strides[i][j],
                       activation=str(self.stage_value("activation", i)), params=params)]

    def _head_op(self, choice: dict[str, Any]) -> list[OpSpec]:
        c_last = self.width(choice, self.n_stages - 1)
        return [OpSpec("ir_head", self.dim, (c_last, *self.final_spatial), out=self.num_classes,
                       activation=str(self.stage_value("activation", self.n_stages - 1)),
                       params=(("head_width", int(self.fixed["head_width"])),))]

    def _model_op(self, choice: dict[str, Any]) -> list[OpSpec]:
        return [OpSpec("model", self.dim, self.input_shape, out=0)]


def _shrink(side: tuple[int, ...], stride: int) -> tuple[int, ...]:
    """Map size after a 'same'-padded odd-kernel convolution of ``stride``."""
    return tuple((n - 1) // stride + 1 for n in side)


def _positive(family: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{family} spec {key!r} must hold positive integers, got {value!r}")
    return value


def _check_decisions(form: IRForm, family: str,
                     decisions: dict[str, list[Any]]) -> dict[str, list[Any]]:
    out = {}
    for name, options in decisions.items():
        base, _, idx = name.rpartition("_")
        key = base if idx.isdigit() else name
        out[name] = relaxed_options(form, family, name, key, options)
    return out
