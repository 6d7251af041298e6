"""Student families, each one ``Family`` record in one file (timm-style registry).

``build_student("cnn", {"depth": 2, "widths": [8, 16]}, (1, 8, 8), 10)`` returns an
``nn.Module`` with ``.spec`` (the normalised spec), ``.family`` and ``.feature_taps``. Adding a
family is one file that calls ``register_family`` plus its import below and a YAML space.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from autokd.errors import ConfigError
from autokd.models import (  # noqa: F401  (each registers its families)
    conv,
    hf,
    mbv2,
    mlp,
    resnet,
    transformer,
)
from autokd.models._family import (
    FAMILIES,
    INPUT_KINDS,
    Family,
    TeacherInit,
    TeacherRecipe,
    family_for,
    get_family,
    input_kind,
    register_family,
)
from autokd.models._spec import parse_value

if TYPE_CHECKING:
    from autokd.data.schema import TokenInfo

__all__ = [
    "FAMILIES",
    "INPUT_KINDS",
    "Family",
    "TeacherInit",
    "TeacherRecipe",
    "build_student",
    "default_family",
    "family_for",
    "get_family",
    "input_kind",
    "parse_student_arg",
    "register_family",
]


def build_student(family: str, spec: dict[str, Any], input_shape: tuple[int, ...],
                  num_classes: int, tokens: TokenInfo | None = None) -> nn.Module:
    """Build a student; ``width`` is accepted as shorthand for ``widths``.

    With ``tokens`` (token-id data) the input kind is ``tokens`` and the spec gets the data's
    ``vocab_size`` and ``pad_id``; a token family keeps them in its spec, so a saved student
    (family, spec, input shape) rebuilds without the data: a spec holding ``vocab_size``
    means token input too.
    """
    record = get_family(family)
    spec = dict(spec)
    if tokens is not None:
        spec.update(vocab_size=tokens.vocab_size, pad_id=tokens.pad_id)
    if "width" in spec:
        spec["widths"] = spec.pop("width")
    if num_classes < 2:
        raise ConfigError(f"need at least 2 classes, got {num_classes}")
    # a saved token student rebuilds from its spec alone; a tokens-only family reads ids
    from_spec = "tokens" in record.inputs and (spec.get("vocab_size") is not None
                                               or record.inputs == ("tokens",))
    kind = "tokens" if tokens is not None or from_spec else input_kind(tuple(input_shape))
    record.check_input(tuple(input_shape), kind)
    model = record.build(spec, tuple(input_shape), num_classes)
    model.family = family
    return model


def parse_student_arg(text: str) -> tuple[str, dict[str, Any]]:
    """Parse ``"cnn:depth=2,width=16"`` (lists as ``widths=8/16``) into (family, spec)."""
    family, _, rest = text.partition(":")
    get_family(family.strip())
    spec: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"bad student option {item!r}; expected key=value, e.g. cnn:depth=2,width=16")
        spec[key.strip()] = parse_value(value.strip())
    return family.strip(), spec


def default_family(input_shape: tuple[int, ...], tokens: TokenInfo | None = None) -> str:
    """The natural family for a data shape: images -> cnn, signals -> cnn1d, token ids (given
    ``tokens``) -> transformer, else mlp."""
    return family_for(input_kind(tuple(input_shape), tokens)).name
