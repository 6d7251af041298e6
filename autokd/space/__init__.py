"""Search spaces: parse and validate ``search_spaces/*.yaml``, then sample concrete candidates.

One definition serves every controller: ``sample(trial)`` for Optuna (define-by-run, so
conditional parameters only exist when their condition holds), ``from_params(dict)`` for NNI
and replays, and ``architecture_choices()`` for the DARTS supernet.

YAML forms for a parameter (the file is pure data, loaded with ``yaml.safe_load``)::

    depth: 2                                  # fixed value (also {fixed: 2})
    kernel: {choice: [3, 5]}                  # categorical
    depth: {int: [1, 3]}                      # integer range, optional step / log
    lr: {float: [1.0e-3, 1.0e-2], log: true}  # float range, optional step / log
    widths: {choice: [8, 16, 32], per_stage: depth}   # one value per stage
    t_decay: {float: [0.5, 5], when: {t_schedule: exp}}   # conditional
    hint_mapping: {choice: [uniform, top_down], when: {hint_weight: {ne: 0.0}}}
    terms: {kl: {float: [0.5, 1.0]}, ce: 0.1, fitnet: {choice: [0.0, 0.5]}}  # named KD terms

A ``terms`` recipe (any registered KD term, each weight a parameter named ``terms.<term>``)
replaces the shorthand ``soft_loss/alpha/hint_weight/relation/relation_weight/attention_weight``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from pathlib import Path
from typing import Any

import yaml

from autokd.errors import SpaceError
from autokd.space.params import (
    GROUPS,
    TERM_PREFIX,
    Candidate,
    Param,
    TrialLike,
    recipe_from_values,
)
from autokd.space.parse import SpaceParser

__all__ = ["SPACES_DIR", "TERM_PREFIX", "Candidate", "Param", "SearchSpace", "TrialLike",
           "load_space", "recipe_from_values", "space_names", "with_recipe"]

SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"


class SearchSpace:
    """A validated space; sample it with an Optuna trial or rebuild a candidate from params."""

    def __init__(self, family: str, params: list[Param], source: str = "<dict>",
                 description: str = "") -> None:
        self.family, self.params, self.source, self.description = family, params, source, description
        self.name = Path(source).stem if source != "<dict>" else family
        self.raw: dict[str, Any] | None = None  # the YAML dict it was parsed from

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<dict>") -> SearchSpace:
        family, params, description = SpaceParser(source).parse(raw)
        space = cls(family, params, source, description)
        space.raw = copy.deepcopy(raw)
        return space

    def group(self, group: str) -> list[Param]:
        return [p for p in self.params if p.group == group]

    def sample(self, trial: TrialLike) -> Candidate:
        values: dict[str, Any] = {}
        for p in self.params:
            if not p.active(values):
                continue
            if p.per_stage:
                n = int(values[p.per_stage])
                values[p.name] = [p.suggest(trial, f"{p.name}_{i}") for i in range(n)]
            else:
                values[p.name] = p.suggest(trial)
        return self._candidate(values)

    def from_params(self, flat: dict[str, Any]) -> Candidate:
        """Rebuild a candidate from flat params (Optuna's ``trial.params`` form)."""
        values: dict[str, Any] = {}
        for p in self.params:
            if not p.active(values):
                continue
            if p.per_stage:
                n = int(values[p.per_stage])
                values[p.name] = [self._lookup(flat, p, f"{p.name}_{i}") for i in range(n)]
            else:
                values[p.name] = self._lookup(flat, p, p.name)
        return self._candidate(values)

    @staticmethod
    def _lookup(flat: dict[str, Any], p: Param, key: str) -> Any:
        if p.kind == "fixed":
            return p.value
        if key not in flat:
            raise SpaceError(f"parameter {key!r} is missing from the given values")
        if not p.contains(flat[key]):
            raise SpaceError(f"value {flat[key]!r} of {key!r} is outside the space")
        return flat[key]

    def _candidate(self, values: dict[str, Any]) -> Candidate:
        groups: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
        for p in self.params:
            if p.name in values:
                groups[p.group][p.name] = values[p.name]
        kd = recipe_from_values(groups["distillation"])
        flat = {k: v for k, v in values.items() if not isinstance(v, list)}
        for k, v in values.items():
            if isinstance(v, list):
                flat.update({f"{k}_{i}": x for i, x in enumerate(v)})
        return Candidate(self.family, groups["architecture"], kd, groups["training"], flat)

    def architecture_choices(self) -> dict[str, list[Any]]:
        """Every architecture decision and its options (per-stage params expand per stage)."""
        out: dict[str, list[Any]] = {}
        for p in self.group("architecture"):
            if p.per_stage:
                depth = next(q for q in self.params if q.name == p.per_stage)
                for i in range(max(depth.options())):
                    out[f"{p.name}_{i}"] = p.options()
            else:
                out[p.name] = p.options()
        return out

    def offers_int8(self) -> bool:
        """True when ``quantize`` may be int8 beside float: then every candidate is costed as
        the ONNX file it ships as, so int8 and float members share one runtime."""
        p = next((q for q in self.group("distillation") if q.name == "quantize"), None)
        return p is not None and "int8" in p.options() and len(set(p.options())) > 1

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "source": self.source,
                "params": [dataclasses.asdict(p) for p in self.params]}


def with_recipe(raw: dict[str, Any], overrides: dict[str, list[Any]]) -> dict[str, Any]:
    """A copy of a space's YAML dict whose ``distillation`` group sets each key in ``overrides``:
    one value fixes it, several make it a choice (``--recipe quantize=none,int8``).

    Pure: ``raw`` is not changed. Keys and values are checked when the result is parsed
    (``SearchSpace.from_dict``), so a typo is the parser's one-line ``SpaceError``.

    Raises:
        SpaceError: ``raw`` is not a mapping, or a key has no value.
    """
    if not isinstance(raw, dict):
        raise SpaceError("a search space must be a mapping to override its recipe")
    out = copy.deepcopy(raw)
    group = dict(out.get("distillation") or {})
    for key, values in overrides.items():
        if not values:
            raise SpaceError(f"--recipe {key}: give at least one value")
        group[key] = values[0] if len(values) == 1 else {"choice": list(values)}
    out["distillation"] = group
    return out


def space_names() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load a bundled space by name (``cnn``, ``mlp``, ...) or a user's YAML file."""
    text = str(name_or_path)
    path = Path(text)
    if not path.suffix and not path.exists():
        bundled = SPACES_DIR / f"{text}.yaml"
        if not bundled.exists():
            close = difflib.get_close_matches(text, space_names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpaceError(f"unknown search space {text!r}{hint}; known: "
                             f"{', '.join(space_names())}, or a path to a .yaml file")
        path = bundled
    if not path.exists():
        raise SpaceError(f"search space file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]  # one line
        raise SpaceError(f"{path}: invalid YAML{where}: {problem}") from None
    except RecursionError:  # the parser recurses per level: [[[[...]]]] thousands deep
        raise SpaceError(f"{path}: invalid YAML: nested too deeply") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceError(f"cannot read {path}: {exc}") from None
    return SearchSpace.from_dict(raw, str(path))
