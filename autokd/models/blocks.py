"""Candidate operations shared by the fixed students and the DARTS supernet.

Why one file: a conv block in a searched student and the same block inside the supernet must be
the same op, or the supernet's expected cost would describe a different network.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from autokd.registry import Registry

__all__ = [
    "ACTIVATIONS",
    "batch_norm",
    "conv",
    "conv_bn_act",
    "depthwise_conv",
    "global_pool",
    "make_activation",
    "make_divisible",
    "max_pool",
    "pool",
    "stage_strides",
    "stem_stride",
]

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


def depthwise_conv(dim: int, channels: int, kernel: int, stride: int = 1) -> nn.Module:
    """A 'same'-padded depthwise convolution (one filter per channel, no bias: BN follows)."""
    cls = nn.Conv1d if dim == 1 else nn.Conv2d
    return cls(channels, channels, kernel, stride=stride, padding=kernel // 2, groups=channels,
               bias=False)


def conv_bn_act(dim: int, c_in: int, c_out: int, kernel: int, stride: int = 1,
                activation: str | None = "relu") -> nn.Sequential:
    """conv (no bias) -> BN -> activation; ``activation=None`` keeps it linear (a bottleneck)."""
    layers = [conv(dim, c_in, c_out, kernel, stride, bias=False), batch_norm(dim, c_out)]
    if activation is not None:
        layers.append(make_activation(activation))
    return nn.Sequential(*layers)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10 %.

    The MobileNet rule (Sandler et al. 2018): hardware likes multiples of 8, and rounding
    down by more than a tenth would change the layer's capacity noticeably.
    """
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def batch_norm(dim: int, channels: int) -> nn.Module:
    return nn.BatchNorm1d(channels) if dim == 1 else nn.BatchNorm2d(channels)


def pool(dim: int, kind: str) -> nn.Module:
    """A 2x down-sampling pool (``kind`` is "max" or "avg")."""
    if dim == 1:
        return nn.MaxPool1d(2) if kind == "max" else nn.AvgPool1d(2)
    return nn.MaxPool2d(2) if kind == "max" else nn.AvgPool2d(2)


def max_pool(dim: int, kernel: int = 3, stride: int = 2) -> nn.Module:
    """The ResNet stem's overlapping max pool (padding ``kernel // 2``)."""
    cls = nn.MaxPool1d if dim == 1 else nn.MaxPool2d
    return cls(kernel, stride=stride, padding=kernel // 2)


def global_pool(dim: int) -> nn.Module:
    return nn.AdaptiveAvgPool1d(1) if dim == 1 else nn.AdaptiveAvgPool2d(1)


def stem_stride(side: int) -> int:
    """The stem down-samples only inputs at least 64 wide (ImageNet-like, not MNIST)."""
    return 2 if side >= 64 else 1


def stage_strides(side: int, stages: int, first: int = 0) -> tuple[list[int], int]:
    """Stride of each stage's first block, and the final map side.

    A stage from index ``first`` on strides 2 while the map is at least 8 wide, so a map
    never shrinks below 4; a 'same'-padded stride-2 conv rounds up (7 -> 4).
    """
    strides = []
    for i in range(stages):
        stride = 2 if i >= first and side >= 8 else 1
        side = (side + 1) // 2 if stride == 2 else side
        strides.append(stride)
    return strides, side
