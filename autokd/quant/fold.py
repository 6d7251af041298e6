"""BatchNorm folding for quantisation-aware training (Jacob et al. 2018, section 3.2).

Why: an integer-only runtime has no BatchNorm; the BN after a conv/linear is folded into it,
``W' = W * gamma / sqrt(var + eps)`` and ``b' = beta + (b - mean) * gamma / sqrt(var + eps)``,
and it is ``W'`` that must be on the int8 grid. The BN module stays where it was (same
Parameters, buffers and state-dict names) as an identity; the layer before it does the work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FOLDABLE", "FoldedBN", "FoldedBatchNorm1d", "FoldedBatchNorm2d", "bn_batch_stats",
           "bn_factor", "share_bn"]


class FoldedBN:
    """A BatchNorm whose affine map now lives in the preceding layer: identity in forward, but
    it keeps the Parameters and running statistics (same state-dict names as before)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FoldedBatchNorm1d(FoldedBN, nn.BatchNorm1d):
    pass


class FoldedBatchNorm2d(FoldedBN, nn.BatchNorm2d):
    pass


FOLDABLE: dict[type, type] = {nn.BatchNorm1d: FoldedBatchNorm1d, nn.BatchNorm2d: FoldedBatchNorm2d}


def share_bn(bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """The folded twin of ``bn`` holding the very same Parameter and buffer objects."""
    cls = FOLDABLE[type(bn)]
    twin = torch.nn.utils.skip_init(cls, bn.num_features, bn.eps, bn.momentum, bn.affine,
                                    bn.track_running_stats)
    twin.weight, twin.bias = bn.weight, bn.bias
    twin.running_mean, twin.running_var = bn.running_mean, bn.running_var
    twin.num_batches_tracked = bn.num_batches_tracked
    twin.train(bn.training)
    return twin


def bn_batch_stats(bn: nn.modules.batchnorm._BatchNorm, y: torch.Tensor) -> torch.Tensor:
    """``bn`` in training mode on ``y`` (batch statistics, running statistics updated)."""
    momentum = bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, True,
                        momentum or 0.0, bn.eps)


def bn_factor(bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """``gamma / sqrt(running_var + eps)``, shape (C,): the per-channel weight multiplier."""
    gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
    return gamma / torch.sqrt(bn.running_var + bn.eps)
