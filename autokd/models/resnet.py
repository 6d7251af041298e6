"""ResNet students (``resnet``) of basic residual blocks, for images and signals.

Read top to bottom: a stem (one 3x3 conv, three 3x3 convs as in ResNet-C / the "deep stem" of
He et al. 2019 "Bag of Tricks", or the original 7x7 stride-2 conv + max pool), ``stages``
stages of basic blocks (two 3x3 conv -> BN, ReLU, a 1x1 conv + BN projection shortcut when
the shape changes; He et al. 2016), a global pool and a linear classifier. The rank of a
sample picks 2-D or 1-D layers at build time. ``stages.i`` is the feature tap of stage i.

Strides follow the input like ``mbv2``: the 7x7 stem strides (and pools) only on inputs at
least 64 wide, and each stage after the first halves the map while it is at least 8 wide.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autokd.errors import ConfigError
from autokd.models import blocks
from autokd.models._family import Family, TeacherRecipe, register_family
from autokd.models._spec import per_stage, resolve_spec

__all__ = ["FAMILY", "RESNET_DEFAULTS", "STEMS", "BasicBlock", "ResNet", "normalise_spec"]

RESNET_DEFAULTS: dict[str, Any] = {
    "stem": "conv3",
    "stem_width": 16,
    "stages": 3,
    "depths": 1,
    "widths": [16, 32, 64, 128, 256, 512],  # truncated to ``stages``
    "dropout": 0.0,
}
STEMS = ("conv3", "conv3x3", "conv7")


class BasicBlock(nn.Module):
    """conv3 -> BN -> ReLU -> conv3 -> BN, plus the (projected) input, then ReLU."""

    def __init__(self, dim: int, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = blocks.conv_bn_act(dim, c_in, c_out, 3, stride, "relu")
        self.conv2 = blocks.conv_bn_act(dim, c_out, c_out, 3, 1, activation=None)
        self.shortcut = (blocks.conv_bn_act(dim, c_in, c_out, 1, stride, activation=None)
                         if stride != 1 or c_in != c_out else nn.Identity())
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))  # (B, C_out, *S')


def _stem(kind: str, dim: int, c_in: int, width: int, side: int) -> tuple[nn.Module, int]:
    """The stem and the map side after it."""
    if kind == "conv3":
        return blocks.conv_bn_act(dim, c_in, width, 3), side
    if kind == "conv3x3":  # ResNet-C: three 3x3 convs, half width for the first two
        mid = max(8, width // 2)
        return nn.Sequential(blocks.conv_bn_act(dim, c_in, mid, 3),
                             blocks.conv_bn_act(dim, mid, mid, 3),
                             blocks.conv_bn_act(dim, mid, width, 3)), side
    if side < 64:  # conv7 on a small input: no down-sampling, which would leave nothing
        return blocks.conv_bn_act(dim, c_in, width, 7), side
    # stride-2 7x7 conv (rounds up) then a stride-2 3x3 max pool (padding 1, rounds up too)
    return nn.Sequential(blocks.conv_bn_act(dim, c_in, width, 7, 2),
                         blocks.max_pool(dim)), ((side + 1) // 2 + 1) // 2


class ResNet(nn.Module):
    """Stem -> stages of basic blocks -> global pool -> dropout -> classifier."""

    family = "resnet"

    def __init__(self, spec: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.spec = normalise_spec(spec)
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        s, dim = self.spec, len(input_shape) - 1  # (C, H, W) -> 2-D, (C, L) -> 1-D
        self.stem, side = _stem(s["stem"], dim, input_shape[0], s["stem_width"],
                                min(input_shape[1:]))
        strides, _ = blocks.stage_strides(side, s["stages"], first=1)
        stages, c_in = [], s["stem_width"]
        for i in range(s["stages"]):
            layers = []
            for j in range(s["depths"][i]):
                layers.append(BasicBlock(dim, c_in, s["widths"][i], strides[i] if j == 0 else 1))
                c_in = s["widths"][i]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = blocks.global_pool(dim)
        self.dropout = nn.Dropout(s["dropout"])
        self.classifier = nn.Linear(c_in, num_classes)
        self.feature_taps = _taps(self.spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W) or (B, C, L)
        h = self.pool(self.stages(self.stem(x))).flatten(1)  # (B, C_last)
        return self.classifier(self.dropout(h))  # (B, K)


def normalise_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Validate ``spec`` and expand the per-stage keys to lists."""
    s = resolve_spec("resnet", dict(spec), RESNET_DEFAULTS)
    if s["stem"] not in STEMS:
        raise ConfigError(f"resnet stem must be one of {', '.join(STEMS)}, got {s['stem']!r}")
    n = s["stages"]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 6:
        raise ConfigError(f"resnet stages must be an integer in 1..6, got {n!r}")
    for key in ("stem_width",):
        if isinstance(s[key], bool) or not isinstance(s[key], int) or s[key] < 1:
            raise ConfigError(f"resnet {key} must be a positive integer, got {s[key]!r}")
    s["depths"] = per_stage("resnet", "depths", s["depths"], n)
    if max(s["depths"]) > 8:
        raise ConfigError(f"resnet depths must be at most 8 blocks per stage, got {s['depths']}")
    s["widths"] = per_stage("resnet", "widths", s["widths"], n)
    dropout = s["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
            or not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"resnet dropout must be in [0, 1), got {dropout!r}")
    s["dropout"] = float(dropout)
    return s


def _taps(spec: dict[str, Any]) -> list[str]:
    """Each stage's output, by module path."""
    return [f"stages.{i}" for i in range(spec["stages"])]


FAMILY = register_family(Family(
    name="resnet",
    build=ResNet,
    defaults=RESNET_DEFAULTS,
    normalise=normalise_spec,
    inputs=("image", "signal"),
    feature_taps=_taps,
    teacher=TeacherRecipe({"stem": "conv3", "stem_width": 32, "stages": 3, "depths": 2,
                           "widths": [32, 64, 128], "dropout": 0.1}, epochs=30, lr=2e-3),
))
