"""Convolutional students for images (``cnn``) and 1-D signals (``cnn1d``): two families.

Read top to bottom: a stack of conv -> [BN] -> act -> [2x pool] stages, a global average pool
and a linear head. Each stage's output is a named feature tap (``stages.i``) so hint, relation
and attention losses attach by module path without editing the model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autokd.errors import ConfigError
from autokd.models import blocks
from autokd.models._family import Family, TeacherRecipe, register_family
from autokd.models._spec import per_stage, resolve_spec
from autokd.models.supernet import StackForm

__all__ = ["CNN", "CNN1D", "CNN_DEFAULTS", "POOLS", "ConvNet", "normalise_spec"]

CNN_DEFAULTS: dict[str, Any] = {
    "depth": 2,
    "widths": 16,
    "kernel": 3,
    "pool": "max",
    "batch_norm": True,
    "activation": "relu",
    "dropout": 0.0,
}
POOLS = ("max", "avg", "stride", "none")


class ConvNet(nn.Module):
    """A plain conv stack; ``dim`` is 2 for (C, H, W) inputs and 1 for (C, L)."""

    def __init__(self, spec: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
                 dim: int, family: str) -> None:
        super().__init__()
        self.family, self.dim = family, dim
        self.spec = normalise_spec(family, spec)
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        depth, widths, kernels = self.spec["depth"], self.spec["widths"], self.spec["kernel"]
        stages: list[nn.Module] = []
        c_in, size = input_shape[0], min(input_shape[1:])
        for i in range(depth):
            stage, size = self._stage(c_in, widths[i], kernels[i], size)
            stages.append(stage)
            c_in = widths[i]
        self.stages = nn.Sequential(*stages)
        self.pool = blocks.global_pool(dim)
        self.dropout = nn.Dropout(self.spec["dropout"])
        self.head = nn.Linear(c_in, num_classes)
        self.feature_taps = _taps(self.spec)

    def _stage(self, c_in: int, c_out: int, kernel: int, size: int) -> tuple[nn.Module, int]:
        """One stage; down-samples only while the map is at least 2 wide."""
        kind, can_shrink = self.spec["pool"], size >= 2
        stride = 2 if kind == "stride" and can_shrink else 1
        bn = self.spec["batch_norm"]
        layers = [blocks.conv(self.dim, c_in, c_out, kernel, stride, bias=not bn)]
        if bn:
            layers.append(blocks.batch_norm(self.dim, c_out))
        layers.append(blocks.make_activation(self.spec["activation"]))
        if kind in ("max", "avg") and can_shrink:
            layers.append(blocks.pool(self.dim, kind))
        if not can_shrink or kind == "none":
            return nn.Sequential(*layers), size
        # a stride-2 'same' conv rounds up, a 2x pool rounds down (odd sizes: 7 -> 4 vs 3)
        return nn.Sequential(*layers), (size + 1) // 2 if kind == "stride" else size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W) or (B, C, L)
        h = self.stages(x)
        h = self.pool(h).flatten(1)  # (B, C_last)
        return self.head(self.dropout(h))  # (B, K)


def normalise_spec(family: str, spec: dict[str, Any]) -> dict[str, Any]:
    s = resolve_spec(family, dict(spec), CNN_DEFAULTS)
    depth = s["depth"]
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 12:
        raise ConfigError(f"{family} depth must be an integer in 1..12, got {depth!r}")
    s["widths"] = per_stage(family, "widths", s["widths"], depth)
    s["kernel"] = per_stage(family, "kernel", s["kernel"], depth)
    if s["pool"] not in POOLS:
        raise ConfigError(f"{family} pool must be one of {', '.join(POOLS)}, got {s['pool']!r}")
    blocks.ACTIVATIONS.get(s["activation"])
    if not 0.0 <= float(s["dropout"]) < 1.0:
        raise ConfigError(f"{family} dropout must be in [0, 1), got {s['dropout']!r}")
    s["batch_norm"] = bool(s["batch_norm"])
    return s


def _taps(spec: dict[str, Any]) -> list[str]:
    """Each stage's output, by module path (hooks attach there; the model needs no edits)."""
    return [f"stages.{i}" for i in range(spec["depth"])]


_RELAXABLE = ("depth", "widths", "kernel", "pool", "activation", "batch_norm")


def _conv_family(name: str, dim: int, kind: str, teacher: TeacherRecipe) -> Family:
    """One conv family: the same stack in 2-D (images) or 1-D (signals)."""
    return register_family(Family(
        name=name,
        build=lambda spec, shape, k: ConvNet(spec, shape, k, dim=dim, family=name),
        defaults=CNN_DEFAULTS,
        normalise=lambda spec: normalise_spec(name, spec),
        inputs=(kind,),
        default_for=(kind,),
        feature_taps=_taps,
        teacher=teacher,
        supernet=StackForm(dim=dim, relaxable=_RELAXABLE, pools=POOLS),
    ))


CNN = _conv_family("cnn", 2, "image", TeacherRecipe(
    {"depth": 3, "widths": [64, 128, 128], "kernel": 3, "pool": "max"}, epochs=30, lr=2e-3))
CNN1D = _conv_family("cnn1d", 1, "signal", TeacherRecipe(
    {"depth": 3, "widths": [64, 128, 128], "kernel": 5, "pool": "max"}, epochs=60, lr=2e-3))
