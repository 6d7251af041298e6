"""Mixed operations: one stage of a stack supernet holding every candidate of its decisions.

Why shared weights: widths are one weight tensor of the largest width and a soft channel mask
``m_c = P(width > c)`` (FBNetV2), so memory does not grow with the number of widths; kernels
are separate candidates fused into one convolution; pool, activation and batch norm are
mixtures of the same ``blocks.py`` ops the fixed students use.

Shapes: ``B`` batch, ``C`` channels (or features), ``S`` spatial dims (none for the MLP).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autokd.models import blocks

__all__ = ["MixedStage", "fit_spatial", "is_zero", "mix", "pad_channels"]


def is_zero(weight: Tensor) -> bool:
    return float(weight.detach()) == 0.0


def fit_spatial(h: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """Resize ``h`` (B, C, *S) to ``spatial`` by average pooling (no-op when equal).

    Why: candidates of one decision can disagree on the map size (no pool vs. pool, floor vs.
    ceil on odd sizes); averaging keeps the global-pool statistics the head sees.
    """
    if tuple(h.shape[2:]) == tuple(spatial):
        return h
    pool = F.adaptive_avg_pool1d if len(spatial) == 1 else F.adaptive_avg_pool2d
    return pool(h, spatial)


def mix(weights: Tensor, branches: Sequence[Callable[[], Tensor]]) -> Tensor:
    """``sum_j w_j * branch_j()``, skipping branches whose weight is exactly zero."""
    outs = [(w, fn()) for w, fn in zip(weights, branches) if not is_zero(w)]
    if len(outs) == 1 and float(outs[0][0].detach()) == 1.0 and not outs[0][0].requires_grad:
        return outs[0][1]
    spatial = tuple(min(sizes) for sizes in zip(*(o.shape[2:] for _, o in outs)))
    total = None
    for w, out in outs:
        term = w * fit_spatial(out, spatial) if spatial else w * out
        total = term if total is None else total + term
    return total


def pad_channels(h: Tensor, channels: int) -> Tensor:
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
        z = mix(w["batch_norm"], [functools.partial(self._norm, z, bn)
                                   for bn in self.bn_options])
        z = mix(w["activation"], [functools.partial(a, z) for a in self.acts])
        if self.dim:
            z = mix(w["pool"], [functools.partial(self._pool, z, j)
                                 for j in range(len(self.pools))])  # (B, C_max, *S')
        mask = self.below.to(w["widths"].dtype) @ w["widths"]  # (C_max,) = P(width > c)
        z = self.dropout(z) * mask.view(1, -1, *([1] * self.dim))
        return pad_channels(z, self.c_total)

    def _contract(self, h: Tensor, w: Tensor) -> Tensor:
        if not self.fused:
            return mix(w, [functools.partial(op, h) for op in self.ops])
        k_max = max(self.kernels)
        weight = None
        for wk, op, k in zip(w, self.ops, self.kernels):
            if is_zero(wk):
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
