"""MobileNetV2-style students (``mbv2``): inverted residual blocks, for images and signals.

Read top to bottom: a conv stem, ``stages`` stages of inverted-residual blocks (Sandler et al.
2018: 1x1 expand -> depthwise kxk -> optional squeeze-and-excitation -> linear 1x1 project, a
residual add when shapes match), an optional MobileNetV3 last 1x1 conv, a global pool and a
linear classifier. One family serves both kinds of input: the rank of a sample picks 2-D
layers for (C, H, W) and 1-D layers for (C, L) when the model is built, so the same spec
searches images and signals. ``stages.i`` is the feature tap of stage i.

Strides depend on the input, not on the spec, so a spec that fits 8x8 digits also fits 28x28
MNIST: the stem strides 2 only on inputs at least 64 wide, and each stage's first block
strides 2 while the map is at least 8 wide (maps never shrink below 4).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autokd.errors import ConfigError
from autokd.models import blocks
from autokd.models._family import Family, TeacherRecipe, register_family
from autokd.models._spec import resolve_spec
from autokd.models.supernet import IRForm

__all__ = [
    "FAMILY",
    "MBV2_DEFAULTS",
    "InvertedResidual",
    "MobileNetV2",
    "SqueezeExcite",
    "make_divisible",
    "normalise_spec",
    "stage_strides",
    "stem_stride",
]

make_divisible = blocks.make_divisible
stem_stride = blocks.stem_stride
stage_strides = blocks.stage_strides

MBV2_DEFAULTS: dict[str, Any] = {
    "stem_width": 16,
    "stages": 3,
    "depths": 2,
    "widths": [16, 24, 32, 48, 64, 96],  # truncated to ``stages``
    "expansion": 4,
    "kernel": 3,
    "se": False,
    "activation": "relu",
    "head_width": 0,
    "dropout": 0.0,
}
EXPANSIONS = (1, 3, 4, 6)
KERNELS = (3, 5, 7)
MBV2_ACTIVATIONS = ("relu", "hardswish")


class SqueezeExcite(nn.Module):
    """MobileNetV3's channel gate: pool -> 1x1 squeeze -> ReLU -> 1x1 expand -> hard-sigmoid."""

    def __init__(self, dim: int, channels: int) -> None:
        super().__init__()
        squeeze = make_divisible(channels / 4, 8)
        self.pool = blocks.global_pool(dim)
        self.reduce = blocks.conv(dim, channels, squeeze, 1)
        self.act = nn.ReLU()
        self.expand = blocks.conv(dim, squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, *S); the gate is (B, C, 1...) and broadcasts over the spatial dims
        w = self.gate(self.expand(self.act(self.reduce(self.pool(x)))))
        return x * w


class InvertedResidual(nn.Module):
    """[1x1 expand -> BN -> act] -> depthwise -> BN -> act -> [SE] -> 1x1 project -> BN (+x)."""

    def __init__(self, dim: int, c_in: int, c_out: int, expansion: int, kernel: int, stride: int,
                 se: bool, activation: str) -> None:
        super().__init__()
        c_exp = c_in * expansion
        layers: dict[str, nn.Module] = {}
        if expansion != 1:
            layers["expand"] = blocks.conv_bn_act(dim, c_in, c_exp, 1, activation=activation)
        layers["depthwise"] = nn.Sequential(blocks.depthwise_conv(dim, c_exp, kernel, stride),
                                            blocks.batch_norm(dim, c_exp),
                                            blocks.make_activation(activation))
        if se:
            layers["se"] = SqueezeExcite(dim, c_exp)
        layers["project"] = blocks.conv_bn_act(dim, c_exp, c_out, 1, activation=None)
        self.body = nn.Sequential()
        for name, layer in layers.items():
            self.body.add_module(name, layer)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)  # (B, C_out, *S')
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """Stem -> stages of inverted residuals -> [head conv] -> pool -> dropout -> classifier."""

    family = "mbv2"

    def __init__(self, spec: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.spec = normalise_spec(spec)
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        s, dim = self.spec, len(input_shape) - 1  # (C, H, W) -> 2-D, (C, L) -> 1-D
        acts = s["activation"]
        side = min(input_shape[1:])
        first = stem_stride(side)
        side = (side + 1) // 2 if first == 2 else side
        self.stem = blocks.conv_bn_act(dim, input_shape[0], s["stem_width"], 3, first, acts[0])
        strides, _ = stage_strides(side, s["stages"])
        stages, c_in = [], s["stem_width"]
        for i in range(s["stages"]):
            layers = []
            for j in range(s["depths"][i]):
                layers.append(InvertedResidual(dim, c_in, s["widths"][i], s["expansion"][i],
                                               s["kernel"][i], strides[i] if j == 0 else 1,
                                               s["se"][i], acts[i]))
                c_in = s["widths"][i]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        if s["head_width"]:
            self.head_conv = blocks.conv_bn_act(dim, c_in, s["head_width"], 1, 1, acts[-1])
            c_in = s["head_width"]
        self.pool = blocks.global_pool(dim)
        self.dropout = nn.Dropout(s["dropout"])
        self.classifier = nn.Linear(c_in, num_classes)
        self.feature_taps = _taps(self.spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W) or (B, C, L)
        h = self.stages(self.stem(x))
        if self.spec["head_width"]:
            h = self.head_conv(h)
        h = self.pool(h).flatten(1)  # (B, C_last)
        return self.classifier(self.dropout(h))  # (B, K)


def _int(key: str, value: Any, low: int, high: int, multiple: int = 1) -> int:
    ok = not isinstance(value, bool) and isinstance(value, int) and low <= value <= high
    if not ok or value % multiple:
        extra = f", a multiple of {multiple}" if multiple > 1 else ""
        raise ConfigError(f"mbv2 {key} must be an integer in {low}..{high}{extra}, got {value!r}")
    return value


def _per_stage(key: str, value: Any, stages: int, check: Any) -> list[Any]:
    """A scalar broadcast to every stage, or a list with at least one entry per stage."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * stages
    if len(values) < stages:
        raise ConfigError(f"mbv2 spec {key!r} has {len(values)} entries for {stages} stages")
    return [check(key, v) for v in values[:stages]]


def _choice(options: tuple[Any, ...]) -> Any:
    def check(key: str, v: Any) -> Any:
        if isinstance(v, bool) or v not in options:
            raise ConfigError(f"mbv2 {key} must be one of {', '.join(map(str, options))}, "
                              f"got {v!r}")
        return v
    return check


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"mbv2 {key} must be true or false, got {v!r}")
    return v


def normalise_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Validate ``spec`` against the mbv2 schema and expand per-stage keys to lists."""
    s = resolve_spec("mbv2", dict(spec), MBV2_DEFAULTS)
    s["stem_width"] = _int("stem_width", s["stem_width"], 8, 128, 8)
    n = s["stages"] = _int("stages", s["stages"], 1, 6)
    s["depths"] = _per_stage("depths", s["depths"], n, lambda k, v: _int(k, v, 1, 6))
    s["widths"] = _per_stage("widths", s["widths"], n, lambda k, v: _int(k, v, 8, 1024, 8))
    s["expansion"] = _per_stage("expansion", s["expansion"], n, _choice(EXPANSIONS))
    s["kernel"] = _per_stage("kernel", s["kernel"], n, _choice(KERNELS))
    s["se"] = _per_stage("se", s["se"], n, _bool)
    s["activation"] = _per_stage("activation", s["activation"], n, _choice(MBV2_ACTIVATIONS))
    if s["head_width"] != 0:
        s["head_width"] = _int("head_width", s["head_width"], 8, 4096, 8)
    if isinstance(s["dropout"], bool) or not isinstance(s["dropout"], (int, float)) \
            or not 0.0 <= float(s["dropout"]) < 1.0:
        raise ConfigError(f"mbv2 dropout must be in [0, 1), got {s['dropout']!r}")
    s["dropout"] = float(s["dropout"])
    return s


def _taps(spec: dict[str, Any]) -> list[str]:
    """Each stage's output, by module path."""
    return [f"stages.{i}" for i in range(spec["stages"])]


FAMILY = register_family(Family(
    name="mbv2",
    build=MobileNetV2,
    defaults=MBV2_DEFAULTS,
    normalise=normalise_spec,
    inputs=("image", "signal"),
    feature_taps=_taps,
    teacher=TeacherRecipe({"stem_width": 32, "stages": 3, "depths": [2, 3, 3],
                           "widths": [32, 64, 96], "expansion": 6, "kernel": 3,
                           "head_width": 256, "dropout": 0.1}, epochs=30, lr=3e-3),
    supernet=IRForm(),  # FBNet/ProxylessNAS-style relaxation (autokd.models.supernet.ir)
))
