"""The distillation recipe: a weighted sum of named KD terms plus the options they read.

Why the shorthand stays: YAML spaces and CLI flags written for ``soft_loss/alpha/hint_weight``
keep working; they expand to terms (``weights()``), which is all the loss, DARTS, the CLI and
the reports look at. A recipe may also name its terms directly (``terms: {kl: 0.9, ce: 0.1,
fitnet: 0.5}``), which reaches any registered term, including ones added later.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass
from typing import Any

from autokd.distill._term import TERMS, names_of_kind
from autokd.distill.mapping import STRATEGIES
from autokd.distill.schedules import SCHEDULES
from autokd.distill.weighting import IMPORTANCE, TEACHER_WEIGHTINGS
from autokd.errors import ConfigError

__all__ = ["ASSISTANTS", "INITS", "QUANTIZE", "SHORTHAND", "KDConfig", "hint_mappings",
           "recipe_summary"]

#: How a student's weights start: its family's random initialisation, or copies of its
#: teacher's layers (``autokd.distill.init``; the layers picked by ``hint_mapping``).
INITS = ("random", "teacher")
#: Who teaches the student: the teacher itself (``none``), or an intermediate-size network
#: taught by the teacher (``auto``: a teacher assistant, Mirzadeh et al. 2020; found or built
#: by ``autokd.chains``), which narrows a wide capacity gap.
ASSISTANTS = ("none", "auto")
#: What the student ships as: float, or int8 trained with fake quantisation (``autokd.quant``)
#: and costed as the INT8 ONNX model.
QUANTIZE = ("none", "int8")

# the fields that ``terms`` replaces (a recipe gives one form or the other)
SHORTHAND = ("soft_loss", "alpha", "hint_weight", "relation", "relation_weight",
             "attention_weight")


def hint_mappings() -> list[str]:
    """The fixed layer-mapping rules plus ``learned``."""
    return [*STRATEGIES.names(), "learned"]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _finite(name: str, value: Any, low: float, high: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    _check(ok, f"{name} must be a number")
    _check(value >= low, f"{name} must be >= {low}, got {value}")
    _check(value <= high, f"{name} must be <= {high}, got {value}")


def _has_onnx_runtime() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def _one_of(name: str, value: Any, known: list[str]) -> None:
    _check(value in known, f"unknown {name} {value!r}; known: {', '.join(known)}")


@dataclass
class KDConfig:
    """The distillation recipe (DESIGN.md §2). ``soft_loss='none'`` with alpha=0 is scratch.

    Terms and weights come from ``terms`` when given, else from the shorthand: ``soft_loss``
    with weight ``alpha`` and ``ce`` with ``1 − alpha`` (``ce`` alone when ``soft_loss`` is
    ``none``), ``fitnet`` with ``hint_weight``, the ``relation`` term with
    ``relation_weight`` and ``attention`` with ``attention_weight``. The remaining fields are
    options the terms read (temperature and its schedule, label smoothing, the hint layer
    mapping) and how samples and teachers are weighted. ``init`` is where the student's
    weights start (``random`` or ``teacher``: copies of the teacher's layers, picked by
    ``hint_mapping``; see ``autokd.distill.init``). ``assistant: auto`` distils through a
    teacher assistant (``autokd.chains``) instead of from the teacher directly.
    ``quantize: int8`` trains the student with fake-quantised weights and activations plus
    ``qat_weight * ||W - Q(W)||^2`` (Polino et al. 2018) and scores it as the deployed INT8
    model (``autokd.quant``).
    """

    soft_loss: str = "kl"
    temperature: float = 4.0
    t_schedule: str = "constant"
    t_decay: float = 3.0  # lambda of exp schedule, per unit of training progress
    alpha: float = 0.9
    label_smoothing: float = 0.0
    hint_weight: float = 0.0
    hint_mapping: str = "uniform"
    relation: str = "none"
    relation_weight: float = 0.0
    attention_weight: float = 0.0
    importance: str = "none"
    teacher_weighting: str = "mean"
    terms: dict[str, float] | None = None
    init: str = "random"
    assistant: str = "none"
    quantize: str = "none"
    qat_weight: float = 0.0

    def validate(self) -> KDConfig:
        _one_of("soft_loss", self.soft_loss, [*names_of_kind("soft"), "none"])
        _one_of("t_schedule", self.t_schedule, SCHEDULES.names())
        _one_of("hint_mapping", self.hint_mapping, hint_mappings())
        _one_of("relation", self.relation, ["none", *names_of_kind("relation")])
        _one_of("importance", self.importance, IMPORTANCE.names())
        _one_of("teacher_weighting", self.teacher_weighting, TEACHER_WEIGHTINGS.names())
        _one_of("init", self.init, list(INITS))
        _one_of("assistant", self.assistant, list(ASSISTANTS))
        _one_of("quantize", self.quantize, list(QUANTIZE))
        _check(self.quantize == "none" or _has_onnx_runtime(),
               "quantize: int8 is scored as its ONNX Runtime model and needs onnx and "
               "onnxruntime: pip install 'autokd[export]'")
        _finite("qat_weight", self.qat_weight, 0.0, 1e4)
        _finite("temperature", self.temperature, 0.05, 100.0)
        _finite("t_decay", self.t_decay, 0.0, 100.0)
        _finite("alpha", self.alpha, 0.0, 1.0)
        _finite("label_smoothing", self.label_smoothing, 0.0, 0.99)
        for name in ("hint_weight", "relation_weight", "attention_weight"):
            _finite(name, getattr(self, name), 0.0, 1e4)
        if self.terms is not None:
            self._validate_terms()
        return self

    def _validate_terms(self) -> None:
        _check(isinstance(self.terms, dict) and bool(self.terms),
               "terms must be a non-empty mapping of KD term: weight")
        for name, weight in self.terms.items():
            TERMS.get(str(name))  # unknown names list the known ones
            _finite(f"terms.{name}", weight, 0.0, 1e4)
        _check(any(w > 0 for w in self.terms.values()), "terms needs a weight > 0")

    # -- what the recipe is made of ----------------------------------------------------------
    def weights(self) -> dict[str, float]:
        """The active terms and their weights (weight 0 terms are left out), in loss order."""
        if self.terms is not None:
            return {str(n): float(w) for n, w in self.terms.items() if w > 0}
        out: dict[str, float] = {}
        if self.soft_loss != "none":
            out[self.soft_loss] = self.alpha
            out["ce"] = 1.0 - self.alpha
        else:
            out["ce"] = 1.0
        out["fitnet"] = self.hint_weight
        if self.relation != "none":
            out[self.relation] = self.relation_weight
        out["attention"] = self.attention_weight
        return {n: w for n, w in out.items() if w > 0}

    @property
    def uses_teacher(self) -> bool:
        return any(TERMS.get(n).needs_teacher for n in self.weights())

    def tap_groups(self) -> set[str]:
        """The tap groups its active terms read (``features``, ``hidden``, ``attention`` ...):
        the trainer hooks, enables and caches exactly these on student and teacher."""
        return {g for n in self.weights() for g in TERMS.get(n).tap_groups()}

    @property
    def needs_features(self) -> bool:
        """Feature-level terms need intermediate activations (any tap group)."""
        return bool(self.tap_groups())

    def without_features(self) -> KDConfig:
        """The recipe minus every term that reads taps (a supernet's taps change with alpha)."""
        keep = {n: w for n, w in self.weights().items() if not TERMS.get(n).tap_groups()}
        return dataclasses.replace(self, terms=keep or {"ce": 1.0})

    def scratch(self) -> KDConfig:
        """The same recipe with every teacher term switched off and a random start (the
        KD-gain comparison: nothing of the teacher reaches the student)."""
        return KDConfig(soft_loss="none", alpha=0.0, label_smoothing=self.label_smoothing,
                        quantize=self.quantize, qat_weight=self.qat_weight)

    def summary(self) -> str:
        """A short label for tables and reports, written by the terms themselves."""
        weights = self.weights()
        init = f"init={self.init}" if self.init != "random" else ""
        if self.quantize != "none":
            init = " ".join(p for p in (init, self._quant_label()) if p)
        if set(weights) <= {"ce"}:
            return " ".join(p for p in ("scratch", init) if p)
        if self.assistant != "none":
            init = " ".join(p for p in (init, f"assistant={self.assistant}") if p)
        parts = [_response_label(self, weights)]
        for name, weight in weights.items():
            if TERMS.get(name).kind not in ("soft", "hard"):
                parts.append(TERMS.get(name).label(weight, self))
        return " ".join(p for p in (*parts, init) if p)

    def _quant_label(self) -> str:
        return self.quantize + (f" qat={self.qat_weight:g}" if self.qat_weight else "")


def _response_label(kd: KDConfig, weights: dict[str, float]) -> str:
    """``kl a=0.90 T=4.0 constant`` for a soft/hard pair, else each term with its weight."""
    soft = [n for n in weights if TERMS.get(n).kind == "soft"]
    hard = weights.get("ce", 0.0)
    if len(soft) == 1 and math.isclose(weights[soft[0]] + hard, 1.0):
        head = f"{soft[0]} a={weights[soft[0]]:.2f}"
    else:
        head = " ".join(f"{n}={weights[n]:g}" for n in weights
                        if TERMS.get(n).kind in ("soft", "hard"))
    options = [TERMS.get(n).label(weights[n], kd) for n in soft]
    return " ".join(p for p in (head, *options) if p)


def recipe_summary(recipe: Any) -> str:
    """The label of a recorded recipe dict (``""`` when it is not one)."""
    if not isinstance(recipe, dict):
        return ""
    known = {f.name for f in dataclasses.fields(KDConfig)}
    try:
        return KDConfig(**{k: v for k, v in recipe.items() if k in known}).summary()
    except (ConfigError, TypeError, ValueError):
        return ""
