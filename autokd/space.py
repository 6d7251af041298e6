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

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from autokd.config import TrainConfig
from autokd.distill import SHORTHAND, TERMS, KDConfig
from autokd.errors import SpaceError
from autokd.models import FAMILIES, get_family

__all__ = ["Param", "Candidate", "SearchSpace", "load_space", "recipe_from_values", "space_names",
           "SPACES_DIR"]

SPACES_DIR = Path(__file__).resolve().parent / "search_spaces"
GROUPS = ("architecture", "distillation", "training")
TOP_KEYS = ("family", "description", *GROUPS)
TRAIN_KEYS = ("lr", "weight_decay", "batch_size", "epochs", "optimizer", "scheduler")
DIST_KEYS = ("choice", "int", "float", "fixed")
PARAM_KEYS = (*DIST_KEYS, "log", "step", "when", "per_stage")
TERM_PREFIX = "terms."  # a recipe's term weights are parameters named terms.<term>


class TrialLike(Protocol):
    """The subset of ``optuna.Trial`` that sampling uses (also ``FixedTrial``)."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...


@dataclass(frozen=True)
class Param:
    """One searchable (or fixed) parameter."""

    name: str
    group: str
    kind: str  # choice | int | float | fixed
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    value: Any = None
    when: tuple[tuple[str, str, Any], ...] = ()  # (param, op, value); op in eq|ne|in
    per_stage: str | None = None

    def active(self, values: dict[str, Any]) -> bool:
        for name, op, target in self.when:
            if name not in values:
                return False
            v = values[name]
            ok = v in target if op == "in" else (v == target) == (op == "eq")
            if not ok:
                return False
        return True

    def suggest(self, trial: TrialLike, name: str | None = None) -> Any:
        name = name or self.name
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)

    def options(self) -> list[Any]:
        """Every value a discrete parameter can take (used by DARTS and NNI)."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise SpaceError(f"{self.group}.{self.name} is continuous and has no finite options")

    def contains(self, value: Any) -> bool:
        if self.kind == "fixed":
            return value == self.value
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return float(self.low) - 1e-12 <= float(value) <= float(self.high) + 1e-12


@dataclass
class Candidate:
    """A concrete point of the space: a student spec, a KD recipe and training overrides."""

    family: str
    spec: dict[str, Any]
    kd: KDConfig
    train: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)

    def train_config(self, base: TrainConfig) -> TrainConfig:
        return dataclasses.replace(base, **self.train).validate()


class SearchSpace:
    """A validated space; sample it with an Optuna trial or rebuild a candidate from params."""

    def __init__(self, family: str, params: list[Param], source: str = "<dict>",
                 description: str = "") -> None:
        self.family, self.params, self.source, self.description = family, params, source, description
        self.name = Path(source).stem if source != "<dict>" else family

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<dict>") -> SearchSpace:
        return _Parser(source).parse(raw)

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

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "source": self.source,
                "params": [dataclasses.asdict(p) for p in self.params]}


class _Parser:
    """YAML dict -> SearchSpace, with one clear error naming the file and key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, msg: str) -> SpaceError:
        return SpaceError(f"{self.source}: {path}: {msg}" if path else f"{self.source}: {msg}")

    def parse(self, raw: Any) -> SearchSpace:
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
        desc = raw.get("description") or ""
        return SearchSpace(family, params, self.source, str(desc))

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

    def _check_arch(self, params: list[Param]) -> None:
        """Every discrete architecture value, and both ends of a range, must be one the family
        can build (``depth: {int: [1, 100000]}`` would otherwise sample 100000 widths)."""
        normalise = get_family(self.family).normalise
        for p in params:
            if p.group != "architecture":
                continue
            values = ([p.value] if p.kind == "fixed" else [p.low, p.high]
                      if p.kind in ("int", "float") else list(p.choices))
            for v in values:
                spec = {p.name: [v] if p.per_stage else v}
                if p.name != "depth":
                    spec["depth"] = 1
                try:
                    normalise(spec)
                except Exception as exc:
                    raise self.fail(f"architecture.{p.name}", f"value {v!r}: {exc}") from None

    def _check_values(self, params: list[Param]) -> None:
        """Catch impossible fixed/choice values early by validating the configs they feed."""
        kd_values = {p.name: (p.value if p.kind == "fixed" else (p.choices or (p.low,))[0])
                     for p in params if p.group == "distillation"}
        for p in params:
            if p.group == "distillation" and p.kind == "choice":
                for v in p.choices:
                    self._validate_kd(f"distillation.{p.name}", {**kd_values, p.name: v})
        self._validate_kd("distillation", kd_values)

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


def recipe_from_values(values: dict[str, Any]) -> KDConfig:
    """The recipe of a candidate's distillation values (``terms.kl`` -> ``terms["kl"]``)."""
    kd = {k: v for k, v in values.items() if not k.startswith(TERM_PREFIX)}
    terms = {k[len(TERM_PREFIX):]: v for k, v in values.items() if k.startswith(TERM_PREFIX)}
    return KDConfig(**kd, **({"terms": terms} if terms else {}))


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
