"""Multi-layer perceptron students for tabular data (and flattened images or signals).

Depth 0 is a logistic-regression baseline. Each hidden layer's output is a feature tap
(``layers.i``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from autokd.errors import ConfigError
from autokd.models import blocks
from autokd.models._family import Family, TeacherRecipe, register_family
from autokd.models._spec import per_stage, resolve_spec
from autokd.models.supernet import StackForm

__all__ = ["FAMILY", "MLP", "MLP_DEFAULTS", "normalise_spec"]

MLP_DEFAULTS: dict[str, Any] = {
    "depth": 2,
    "widths": 64,
    "dropout": 0.0,
    "activation": "relu",
    "batch_norm": False,
}


class MLP(nn.Module):
    """Flatten -> [Linear -> (BN) -> act -> dropout] x depth -> Linear."""

    family = "mlp"

    def __init__(self, spec: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.spec = normalise_spec(spec)
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        d_in = math.prod(input_shape)
        layers: list[nn.Module] = []
        for width in self.spec["widths"]:
            block: list[nn.Module] = [nn.Linear(d_in, width)]
            if self.spec["batch_norm"]:
                block.append(nn.BatchNorm1d(width))
            block += [blocks.make_activation(self.spec["activation"]), nn.Dropout(self.spec["dropout"])]
            layers.append(nn.Sequential(*block))
            d_in = width
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(d_in, num_classes)
        self.feature_taps = _taps(self.spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(x.flatten(1))  # (B, D)
        return self.head(h)  # (B, K)


def normalise_spec(spec: dict[str, Any]) -> dict[str, Any]:
    s = resolve_spec("mlp", dict(spec), MLP_DEFAULTS)
    depth = s["depth"]
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= 12:
        raise ConfigError(f"mlp depth must be an integer in 0..12, got {depth!r}")
    s["widths"] = per_stage("mlp", "widths", s["widths"], depth) if depth else []
    blocks.ACTIVATIONS.get(s["activation"])
    if not 0.0 <= float(s["dropout"]) < 1.0:
        raise ConfigError(f"mlp dropout must be in [0, 1), got {s['dropout']!r}")
    s["batch_norm"] = bool(s["batch_norm"])
    return s


def _taps(spec: dict[str, Any]) -> list[str]:
    """Each hidden layer's output, by module path."""
    return [f"layers.{i}" for i in range(spec["depth"])]


FAMILY = register_family(Family(
    name="mlp",
    build=MLP,
    defaults=MLP_DEFAULTS,
    normalise=normalise_spec,
    inputs=("tabular", "signal", "image"),  # flattens images and signals
    default_for=("tabular",),
    feature_taps=_taps,
    teacher=TeacherRecipe({"depth": 2, "widths": 256, "dropout": 0.1}, epochs=60, lr=1e-3),
    supernet=StackForm(dim=0, relaxable=("depth", "widths", "activation", "batch_norm")),
))
