"""Test-only ``mbv2_stub`` family: the agreed ``mbv2`` schema built from ``ir_blocks``' layers.

Why a stand-in: the DARTS form must be testable without the real ``mbv2`` family (its tests use
``get_family("mbv2")`` when it is registered). This mirror follows the agreed schema (stride
rule, module paths ``stem``, ``stages.<i>.<j>``, ``head_conv``, ``pool``, ``dropout``,
``classifier``) so the supernet's cost bookkeeping (shapes, strides, widths, depths) is checked
against a whole model counted by ``autokd.cost``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autokd.errors import ConfigError
from autokd.models import FAMILIES, Family, blocks, register_family
from autokd.models._spec import resolve_spec
from autokd.models.supernet.ir import IRForm
from autokd.models.supernet.ir_blocks import (
    InvertedResidual,
    block_stride,
    conv_bn_act,
    stem_layers,
    stem_stride,
)

NAME = "mbv2_stub"
DEFAULTS: dict[str, Any] = {
    "stem_width": 16, "stages": 3, "depths": 2, "widths": [16, 24, 32], "expansion": 4,
    "kernel": 3, "se": False, "activation": "relu", "head_width": 0, "dropout": 0.0,
}
_PER_STAGE = ("depths", "widths", "expansion", "kernel", "se", "activation")


def normalise(spec: dict[str, Any]) -> dict[str, Any]:
    s = resolve_spec(NAME, dict(spec), DEFAULTS)
    n = s["stages"]
    for key in _PER_STAGE:
        value = s[key]
        values = list(value) if isinstance(value, (list, tuple)) else [value] * n
        if len(values) < n:
            raise ConfigError(f"{NAME} spec {key!r} has {len(values)} entries for {n} stages")
        s[key] = values[:n]
    return s


class StubMBV2(nn.Module):
    def __init__(self, spec: dict[str, Any], input_shape: tuple[int, ...],
                 num_classes: int) -> None:
        super().__init__()
        self.spec = s = normalise(spec)
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        dim = len(input_shape) - 1
        stride = stem_stride(tuple(input_shape))
        self.stem = stem_layers(dim, input_shape[0], s["stem_width"], stride, s["activation"][0])
        side = (min(input_shape[1:]) - 1) // stride + 1
        c_in, stages = s["stem_width"], []
        for i in range(s["stages"]):
            blocks_i = []
            for j in range(s["depths"][i]):
                st = block_stride(side, j == 0)
                blocks_i.append(InvertedResidual(dim, c_in, s["widths"][i], s["expansion"][i],
                                                 s["kernel"][i], st, s["se"][i],
                                                 s["activation"][i]))
                side, c_in = (side - 1) // st + 1, s["widths"][i]
            stages.append(nn.Sequential(*blocks_i))
        self.stages = nn.Sequential(*stages)
        if s["head_width"]:
            self.head_conv = conv_bn_act(dim, c_in, s["head_width"], 1, 1, s["activation"][-1])
            c_in = s["head_width"]
        self.pool = blocks.global_pool(dim)
        self.dropout = nn.Dropout(s["dropout"])
        self.classifier = nn.Linear(c_in, num_classes)
        self.feature_taps = [f"stages.{i}" for i in range(s["stages"])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(x))
        if hasattr(self, "head_conv"):
            h = self.head_conv(h)
        return self.classifier(self.dropout(self.pool(h).flatten(1)))


STUB = FAMILIES.get(NAME) if NAME in FAMILIES else register_family(Family(
    name=NAME,
    build=lambda spec, shape, k: StubMBV2(spec, shape, k),
    defaults=DEFAULTS,
    normalise=normalise,
    inputs=("image", "signal"),
    feature_taps=lambda spec: [f"stages.{i}" for i in range(spec["stages"])],
    supernet=IRForm(),
))
