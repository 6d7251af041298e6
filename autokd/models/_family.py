"""The ``Family`` record: everything autokd knows about one student family, in one place.

Why a record: the search space, the default teacher, the DARTS supernet, the CLI and the
reports all need per-family facts (which spec keys exist, their defaults, what data the family
takes, how a teacher of it is trained, whether it relaxes into a supernet). Keeping them in
parallel tables across modules meant a new family touched five files; now a family is one file
that registers one ``Family`` (timm's ``register_model``, with the facts next to the builder),
plus a YAML space.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from torch import nn

from autokd.errors import ConfigError
from autokd.registry import Registry

__all__ = [
    "FAMILIES",
    "INPUT_KINDS",
    "Family",
    "SupernetForm",
    "TeacherInit",
    "TeacherRecipe",
    "family_for",
    "get_family",
    "input_kind",
    "register_family",
    "relaxed_options",
    "supernet_form",
]

# input kind -> rank of one sample (tokens are (L,) integer ids)
INPUT_KINDS: dict[str, int] = {"image": 3, "signal": 2, "tabular": 1, "tokens": 1}
_WHAT = {"image": "image (C, H, W)", "signal": "1-D signal (C, L)", "tabular": "feature (D,)",
         "tokens": "token (L,)"}

Builder = Callable[[dict[str, Any], tuple[int, ...], int], nn.Module]
#: ``teacher_init(student, teacher_module, mapping)``: copy the teacher's layers into the
#: student in place (``autokd.distill.init``); raises ``InitError`` when it cannot.
TeacherInit = Callable[[nn.Module, nn.Module, str], None]


class SupernetForm(Protocol):
    """How a family relaxes into a DARTS supernet (see ``autokd.models.supernet``)."""

    relaxable: tuple[str, ...]

    def build(self, family: str, decisions: dict[str, list[Any]], fixed: dict[str, Any],
              input_shape: tuple[int, ...], num_classes: int, relaxation: Any = None,
              seed: int = 0) -> nn.Module:
        """The supernet over ``decisions`` with every other spec key at ``fixed``."""
        ...


@dataclass(frozen=True)
class TeacherRecipe:
    """How the default teacher of this family is trained when the user brings none."""

    spec: dict[str, Any]
    epochs: int
    lr: float
    batch_size: int = 64


@dataclass(frozen=True)
class Family:
    """One student family.

    Attributes:
        name: Registry name (``cnn``); also the bundled space's name unless ``space`` says.
        build: ``build(spec, input_shape, num_classes) -> nn.Module`` (it normalises the spec);
            the module exposes ``.spec`` and ``.feature_taps`` (module paths for hooks).
        defaults: Every spec key and its default; the YAML ``architecture`` keys.
        normalise: Validate and complete a spec (equal architectures get equal specs).
        inputs: Input kinds the family can take (``image``, ``signal``, ``tabular``,
            ``tokens``); a sample's rank is checked against them before anything is built.
        default_for: Input kinds this family is the default student and teacher for.
        teacher: The default teacher's spec and training when this family is the default.
        supernet: How the family relaxes into a DARTS supernet; None: DARTS cannot search it.
        feature_taps: The module paths of the feature taps of a normalised spec.
        space: Name of the bundled YAML space (None: ``name``).
        teacher_init: ``teacher_init(student, teacher_module, mapping)`` copies a teacher's
            weights into the student in place (embedding and the mapped layers); raises
            ``InitError`` when it cannot. None: the family cannot start from its teacher.
    """

    name: str
    build: Builder
    defaults: Mapping[str, Any]
    normalise: Callable[[dict[str, Any]], dict[str, Any]]
    inputs: tuple[str, ...]
    feature_taps: Callable[[dict[str, Any]], list[str]]
    default_for: tuple[str, ...] = ()
    teacher: TeacherRecipe | None = None
    supernet: SupernetForm | None = None
    space: str | None = None
    teacher_init: TeacherInit | None = None

    @property
    def space_name(self) -> str:
        return self.space or self.name

    def check_input(self, input_shape: tuple[int, ...], kind: str | None = None) -> None:
        """Raise a clear error when one sample is not a kind this family takes.

        ``kind`` defaults to what the shape says (``input_kind``); it must be given for token
        ids, which share rank 1 with tabular features.
        """
        kind = input_kind(tuple(input_shape)) if kind is None else kind
        if kind not in INPUT_KINDS:
            raise ConfigError(f"unknown input kind {kind!r}; known: {', '.join(INPUT_KINDS)}")
        ranks = {INPUT_KINDS[k] for k in self.inputs}
        if len(input_shape) not in ranks or kind not in self.inputs \
                or len(input_shape) != INPUT_KINDS[kind]:
            what = " or ".join(_WHAT[k] for k in self.inputs)
            raise ConfigError(f"{self.name} students need {what} input; this dataset's samples "
                              f"are {kind} with shape {tuple(input_shape)}")


FAMILIES: Registry[Family] = Registry("student family")


def register_family(family: Family) -> Family:
    """Register ``family`` under its name (a later registration of the name wins, warned)."""
    for kind in (*family.inputs, *family.default_for):
        if kind not in INPUT_KINDS:
            raise ConfigError(f"family {family.name}: unknown input kind {kind!r}; known: "
                              f"{', '.join(INPUT_KINDS)}")
    FAMILIES.register(family.name, family)
    return family


def get_family(name: str) -> Family:
    """The family called ``name``; an unknown name lists the known ones."""
    return FAMILIES.get(name)


def input_kind(input_shape: tuple[int, ...], tokens: object | None = None) -> str:
    """The kind of data a sample shape stands for: (C, H, W) image, (C, L) signal, else tabular;
    ``tokens`` (the data's ``TokenInfo``) marks rank-1 samples as token ids."""
    if tokens is not None:
        return "tokens"
    return {3: "image", 2: "signal"}.get(len(input_shape), "tabular")


def family_for(kind: str) -> Family:
    """The default family for an input kind (the first by name that claims it)."""
    for name in FAMILIES.names():
        family = FAMILIES.get(name)
        if kind in family.default_for:
            return family
    raise ConfigError(f"no student family is the default for {kind} data; pick one with "
                      f"--space or --student (known: {', '.join(FAMILIES.names())})")


FormT = TypeVar("FormT")


def supernet_form(family: str, kind: type[FormT], what: str = "supernet") -> FormT:
    """``family``'s supernet form when it is a ``kind``; else one line naming the families
    whose form is (each supernet class builds only its own kind of relaxation)."""
    form = get_family(family).supernet if family in FAMILIES else None
    if not isinstance(form, kind):
        known = [n for n in FAMILIES.names() if isinstance(FAMILIES.get(n).supernet, kind)]
        raise ConfigError(f"no {what} for student family {family!r}; known: "
                          f"{', '.join(known) or 'none'}")
    return form


def relaxed_options(form: SupernetForm, family: str, name: str, key: str,
                    options: list[Any]) -> list[Any]:
    """The options of decision ``name`` (spec key ``key``), checked relaxable and non-empty."""
    if key not in form.relaxable:
        raise ConfigError(f"{family} supernet cannot relax {name!r}; relaxable: "
                          f"{', '.join(form.relaxable)}")
    if not options:
        raise ConfigError(f"decision {name!r} has no options")
    return list(options)
