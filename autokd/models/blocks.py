"""Candidate operations shared by the fixed students and the DARTS supernet.

Why one file: a conv block in a searched student and the same block inside the supernet must be
the same op, or the supernet's expected cost would describe a different network.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from autokd.registry import Registry

__all__ = ["ACTIVATIONS", "batch_norm", "conv", "global_pool", "make_activation", "pool"]

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
ACTIVATIONS.register("relu", lambda: nn.ReLU(inplace=False))
ACTIVATIONS.register("gelu", nn.GELU)
ACTIVATIONS.register("silu", nn.SiLU)
ACTIVATIONS.register("hardswish", nn.Hardswish)
ACTIVATIONS.register("tanh", nn.Tanh)
ACTIVATIONS.register("leaky_relu", lambda: nn.LeakyReLU(0.1))


def make_activation(name: str) -> nn.Module:
    return ACTIVATIONS.get(name)()


def conv(dim: int, c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = True) -> nn.Module:
    """A 'same'-padded convolution of dimension ``dim`` (1 for signals, 2 for images)."""
    cls = nn.Conv1d if dim == 1 else nn.Conv2d
    return cls(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias)


def batch_norm(dim: int, channels: int) -> nn.Module:
    return nn.BatchNorm1d(channels) if dim == 1 else nn.BatchNorm2d(channels)


def pool(dim: int, kind: str) -> nn.Module:
    """A 2x down-sampling pool (``kind`` is "max" or "avg")."""
    if dim == 1:
        return nn.MaxPool1d(2) if kind == "max" else nn.AvgPool1d(2)
    return nn.MaxPool2d(2) if kind == "max" else nn.AvgPool2d(2)


def global_pool(dim: int) -> nn.Module:
    return nn.AdaptiveAvgPool1d(1) if dim == 1 else nn.AdaptiveAvgPool2d(1)
