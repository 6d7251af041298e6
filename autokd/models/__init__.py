"""Student families, created by name through one registry (timm-style).

``build_student("cnn", {"depth": 2, "widths": [8, 16]}, (1, 8, 8), 10)`` returns an
``nn.Module`` with ``.spec`` (the normalised spec), ``.family`` and ``.feature_taps``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from autokd.errors import ConfigError
from autokd.models._spec import parse_value
from autokd.models.conv import build_cnn, build_cnn1d
from autokd.models.mlp import build_mlp
from autokd.registry import Registry

__all__ = ["STUDENTS", "build_student", "parse_student_arg", "default_family"]

StudentBuilder = Callable[[dict[str, Any], tuple[int, ...], int], nn.Module]
STUDENTS: Registry[StudentBuilder] = Registry("student family")
STUDENTS.register("cnn", build_cnn)
STUDENTS.register("cnn1d", build_cnn1d)
STUDENTS.register("mlp", build_mlp)


def build_student(family: str, spec: dict[str, Any], input_shape: tuple[int, ...],
                  num_classes: int) -> nn.Module:
    """Build a student; ``width`` is accepted as shorthand for ``widths``."""
    spec = dict(spec)
    if "width" in spec:
        spec["widths"] = spec.pop("width")
    if num_classes < 2:
        raise ConfigError(f"need at least 2 classes, got {num_classes}")
    model = STUDENTS.get(family)(spec, tuple(input_shape), num_classes)
    model.family = family
    return model


def parse_student_arg(text: str) -> tuple[str, dict[str, Any]]:
    """Parse ``"cnn:depth=2,width=16"`` (lists as ``widths=8/16``) into (family, spec)."""
    family, _, rest = text.partition(":")
    STUDENTS.get(family.strip())
    spec: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"bad student option {item!r}; expected key=value, e.g. cnn:depth=2,width=16")
        spec[key.strip()] = parse_value(value.strip())
    return family.strip(), spec


def default_family(input_shape: tuple[int, ...]) -> str:
    """The natural family for a data shape: images -> cnn, signals -> cnn1d, else mlp."""
    return {3: "cnn", 2: "cnn1d"}.get(len(input_shape), "mlp")
