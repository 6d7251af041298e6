"""Parsing and validating a search space's YAML (pure data, loaded with ``yaml.safe_load``)."""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any

from autokd.config import TrainConfig
from autokd.data.augment import get_augment
from autokd.distill import SHORTHAND, TERMS, KDConfig
from autokd.errors import ConfigError, SpaceError
from autokd.models import FAMILIES, get_family
from autokd.space.params import (
    DIST_KEYS,
    GROUPS,
    PARAM_KEYS,
    TERM_PREFIX,
    TOP_KEYS,
    TRAIN_KEYS,
    Param,
    recipe_from_values,
)

__all__ = ["SpaceParser"]


class SpaceParser:
    """YAML dict -> (family, parameters, description), one clear error naming file and key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, msg: str) -> SpaceError:
        return SpaceError(f"{self.source}: {path}: {msg}" if path else f"{self.source}: {msg}")

    def parse(self, raw: Any) -> tuple[str, list[Param], str]:
        if not isinstance(raw, dict):
            raise self.fail("", f"expected a mapping at the top level, got {type(raw).__name__}")
        self._unknown("", raw, TOP_KEYS)
        family = raw.get("family")
        if not isinstance(family, str) or family not in FAMILIES:
            raise self.fail("family", f"unknown student family {family!r}; known: "
                            f"{', '.join(FAMILIES.names())}")
        params: list[Param] = []
        for group in GROUPS:
            block = raw.get(group) or {}
            if not isinstance(block, dict):
                raise self.fail(group, "expected a mapping of parameter: distribution")
            allowed = self._allowed(group, family)
            self._unknown(group, block, allowed)
            for k, v in block.items():
                params += self._params(group, str(k), v)
        self.family = family
        self._check_refs(params)
        return family, params, str(raw.get("description") or "")

    @staticmethod
    def _allowed(group: str, family: str) -> tuple[str, ...]:
        if group == "architecture":
            return tuple(get_family(family).defaults)
        if group == "distillation":
            return tuple(f.name for f in dataclasses.fields(KDConfig))
        return TRAIN_KEYS

    def _unknown(self, path: str, block: dict[str, Any], allowed: tuple[str, ...]) -> None:
        for key in block:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                where = f"{path}.{key}" if path else str(key)
                raise self.fail(where, f"unknown key{hint}; known: {', '.join(allowed)}")

    def _params(self, group: str, name: str, raw: Any) -> list[Param]:
        """One parameter, or one per term of a ``terms: {kl: ..., ce: ...}`` recipe."""
        if group != "distillation" or name != "terms":
            return [self._param(group, name, raw)]
        if not isinstance(raw, dict) or not raw:
            raise self.fail("distillation.terms", "expected a mapping of KD term: weight, "
                            "e.g. {kl: 0.9, ce: 0.1}")
        for term in raw:
            self._unknown("distillation.terms", {term: None}, tuple(TERMS.names()))
        return [self._param(group, f"{TERM_PREFIX}{term}", spec) for term, spec in raw.items()]

    def _param(self, group: str, name: str, raw: Any) -> Param:
        path = f"{group}.{name}"
        if not isinstance(raw, dict):
            return self._fixed(path, group, name, raw)
        self._unknown(path, raw, PARAM_KEYS)
        kinds = [k for k in DIST_KEYS if k in raw]
        if len(kinds) != 1:
            raise self.fail(path, f"give exactly one of {', '.join(DIST_KEYS)}")
        kind = kinds[0]
        common = {"when": self._when(path, raw.get("when")), "per_stage": self._stage(path, raw)}
        if kind == "fixed":
            return Param(name, group, "fixed", value=raw["fixed"], **common)
        if kind == "choice":
            return Param(name, group, "choice", choices=self._choices(path, raw["choice"]), **common)
        return self._range(path, group, name, kind, raw, common)

    def _fixed(self, path: str, group: str, name: str, raw: Any) -> Param:
        if isinstance(raw, (list, dict)) and group != "architecture":
            raise self.fail(path, "a fixed value must be a scalar (or use {choice: [...]})")
        return Param(name, group, "fixed", value=raw)

    def _choices(self, path: str, raw: Any) -> tuple[Any, ...]:
        if not isinstance(raw, list) or not raw:
            raise self.fail(path, "choice needs a non-empty list")
        for v in raw:
            if not isinstance(v, (str, int, float, bool)) or v is None:
                raise self.fail(path, f"choice values must be scalars, got {v!r}")
        if len(set(map(repr, raw))) != len(raw):
            raise self.fail(path, "choice has duplicate values")
        return tuple(raw)

    def _range(self, path: str, group: str, name: str, kind: str, raw: dict[str, Any],
               common: dict[str, Any]) -> Param:
        bounds = raw[kind]
        if not (isinstance(bounds, list) and len(bounds) == 2):
            raise self.fail(path, f"{kind} needs [low, high]")
        want = int if kind == "int" else (int, float)
        if any(isinstance(b, bool) or not isinstance(b, want) for b in bounds):
            raise self.fail(path, f"{kind} bounds must be {'integers' if kind == 'int' else 'numbers'}")
        low, high = bounds
        if not all(math.isfinite(b) for b in bounds):
            raise self.fail(path, "bounds must be finite")
        if low > high:
            raise self.fail(path, f"low {low} > high {high}")
        log, step = raw.get("log", False), raw.get("step")
        if not isinstance(log, bool):
            raise self.fail(path, "log must be true or false")
        if log and low <= 0:
            raise self.fail(path, "a log range needs low > 0")
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, want) or step <= 0:
                raise self.fail(path, "step must be a positive number")
            if log:
                raise self.fail(path, "step and log cannot be combined")
        return Param(name, group, kind, low=low, high=high, step=step, log=log, **common)

    def _when(self, path: str, raw: Any) -> tuple[tuple[str, str, Any], ...]:
        if raw is None:
            return ()
        if not isinstance(raw, dict) or not raw:
            raise self.fail(f"{path}.when", "expected a mapping {param: value}")
        out = []
        for ref, cond in raw.items():
            if isinstance(cond, dict):
                if len(cond) != 1 or next(iter(cond)) not in ("ne", "in", "eq"):
                    raise self.fail(f"{path}.when.{ref}", "use a value, {ne: v}, {eq: v} or {in: [..]}")
                op, value = next(iter(cond.items()))
                if op == "in" and not isinstance(value, list):
                    raise self.fail(f"{path}.when.{ref}", "in needs a list")
                out.append((str(ref), op, tuple(value) if op == "in" else value))
            else:
                out.append((str(ref), "eq", cond))
        return tuple(out)

    def _stage(self, path: str, raw: dict[str, Any]) -> str | None:
        ref = raw.get("per_stage")
        if ref is not None and not isinstance(ref, str):
            raise self.fail(f"{path}.per_stage", "per_stage names the depth parameter")
        return ref

    def _check_refs(self, params: list[Param]) -> None:
        seen: dict[str, Param] = {}
        for p in params:
            path = f"{p.group}.{p.name}"
            for ref, _, _ in p.when:
                if ref not in seen:
                    raise self.fail(f"{path}.when", f"{ref!r} is not a parameter declared before it")
            if p.per_stage:
                depth = seen.get(p.per_stage)
                if depth is None or not _is_count(depth):
                    raise self.fail(f"{path}.per_stage", f"{p.per_stage!r} must be an integer "
                                    "parameter declared before it")
                if p.kind == "float":
                    raise self.fail(path, "per_stage parameters must be discrete")
            seen[p.name] = p
        self._check_values(params)
        self._check_arch(params)
        self._check_train(params)

    def _check_arch(self, params: list[Param]) -> None:
        """Every discrete architecture value, and both ends of a range, must be one the family
        can build (``depth: {int: [1, 100000]}`` would otherwise sample 100000 widths)."""
        family = get_family(self.family)
        # the stage counts (``depth`` for cnn, ``stages`` for mbv2) are pinned to 1 so that a
        # one-entry per-stage value is a complete spec
        counts = {q.per_stage for q in params if q.per_stage} | ({"depth"} & set(family.defaults))
        for p in params:
            if p.group != "architecture":
                continue
            values = ([p.value] if p.kind == "fixed" else [p.low, p.high]
                      if p.kind in ("int", "float") else list(p.choices))
            for v in values:
                spec = {p.name: [v] if p.per_stage else v}
                spec.update({c: 1 for c in counts if c != p.name})
                try:
                    family.normalise(spec)
                except Exception as exc:
                    raise self.fail(f"architecture.{p.name}", f"value {v!r}: {exc}") from None

    def _check_train(self, params: list[Param]) -> None:
        """Every discrete training value must make a valid ``TrainConfig``, and an augmentation
        must suit some input the family takes (no crops for an MLP on tabular data)."""
        kinds = get_family(self.family).inputs
        for p in params:
            if p.group != "training" or p.kind not in ("fixed", "choice"):
                continue
            for v in [p.value] if p.kind == "fixed" else p.choices:
                try:
                    TrainConfig(**{p.name: v}).validate()
                    if p.name == "augment" and not any(
                            k in get_augment(v).kinds for k in kinds):
                        get_augment(v, kinds[0])  # raises, naming the kind
                except ConfigError as exc:
                    raise self.fail(f"training.{p.name}", f"value {v!r}: {exc}") from None

    def _check_values(self, params: list[Param]) -> None:
        """Catch impossible fixed/choice values early by validating the configs they feed."""
        kd_values = {p.name: (p.value if p.kind == "fixed" else (p.choices or (p.low,))[0])
                     for p in params if p.group == "distillation"}
        self._validate_kd("distillation", kd_values)  # first: a bad fixed value is no choice's
        for p in params:
            if p.group == "distillation" and p.kind == "choice":
                for v in p.choices:
                    self._validate_kd(f"distillation.{p.name}", {**kd_values, p.name: v})

    def _validate_kd(self, path: str, values: dict[str, Any]) -> None:
        both = [k for k in SHORTHAND if k in values]
        if both and any(k.startswith(TERM_PREFIX) for k in values):
            raise self.fail(path, f"terms replaces {', '.join(both)}; give one or the other")
        try:
            recipe_from_values(values).validate()
        except Exception as exc:
            raise self.fail(path, str(exc)) from None


def _is_count(p: Param) -> bool:
    """A parameter usable as a stage count: integer-valued, >= 0."""
    if p.kind == "int":
        return True
    values = [p.value] if p.kind == "fixed" else list(p.choices) if p.kind == "choice" else []
    return bool(values) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                for v in values)
