"""Hugging Face sequence classifiers: the one-tensor adapter and the ``hf`` student family.

Why an adapter: every autokd model takes one tensor and returns logits, so the trainer, the
teacher cache, cost measurement and export treat an HF model like any other. ``HFClassifier``
takes token ids ``(B, L)``, derives ``attention_mask = ids != pad_id`` itself and exposes the
tap groups of the transformer contract: hidden states and attentions come back from the model
(``output_hidden_states`` / ``output_attentions``) and are routed through identity probes, so
``FeatureHooks`` captures them by module path like any other feature.

Why ``hf`` students are built from the teacher's config: a DistilBERT-style student is the
teacher's own class with fewer layers (optionally narrower), which can start from the
teacher's embedding and layers (``teacher_init``). The spec keeps the teacher's config (a
plain dict) so a saved student rebuilds without the teacher's directory.

``transformers`` is imported only when a model is built: it is the optional ``autokd[hf]``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autokd.distill.mapping import map_layers
from autokd.errors import AutokdError, ConfigError, InitError
from autokd.models._family import Family, register_family
from autokd.models._spec import resolve_spec

__all__ = [
    "FAMILY",
    "HF_DEFAULTS",
    "TAP_GROUPS",
    "HFClassifier",
    "HFStudent",
    "TapProbe",
    "config_from_dict",
    "layer_list",
    "normalise_spec",
    "require_transformers",
    "teacher_init",
    "value_paths",
]

TAP_GROUPS = ("features", "embedding", "hidden", "attention", "values")
VALUE_NAMES = ("value", "v_proj", "v_lin")  # BERT/RoBERTa, LLaMA/BART-style, DistilBERT
# config keys that describe a checkpoint, not an architecture (left out of a student's spec)
_NOT_ARCHITECTURE = ("id2label", "label2id", "architectures", "transformers_version",
                     "_name_or_path", "num_labels", "problem_type", "dtype", "torch_dtype")

HF_DEFAULTS: dict[str, Any] = {
    "base": None,  # the teacher's save_pretrained directory (filled in from --teacher hf:DIR)
    "config": None,  # the teacher's config as a dict (read from base/config.json)
    "layers": None,  # None: half the teacher's layers (at least 1)
    "hidden_scale": 1.0,
    "intermediate_scale": 1.0,
    "vocab_size": None,  # the data's tokenizer (build_student(tokens=...))
    "pad_id": None,
}


def require_transformers(error: type[AutokdError] = ConfigError) -> Any:
    """The ``transformers`` module, or one line naming the extra that installs it."""
    try:
        import transformers
    except ImportError:
        raise error("Hugging Face models need the transformers package: "
                    "pip install 'autokd[hf]'") from None
    return transformers


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars or load chatter from transformers inside the block (autokd reports
    progress and problems itself); the user's settings are restored afterwards."""
    logging = require_transformers().utils.logging
    bars, level = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


class TapProbe(nn.Identity):
    """An identity module that a forward hook can tap (the adapter calls it on a tensor)."""


class HFClassifier(nn.Module):
    """An ``AutoModelForSequenceClassification`` model behind ``forward(input_ids) -> logits``.

    Tap groups (module paths, for ``FeatureHooks``), each computed only while enabled:
    ``embedding`` (B, L, D), ``hidden`` (B, L, D) per layer, ``attention`` (B, H, L, L) per
    layer (the model runs eager attention then), ``features`` (B, D, L) per layer; ``values``
    (B, L, D) hooks each layer's value projection (absent when the model has none by name).
    """

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.model = model
        self.pad_id = int(pad_id)
        n = int(model.config.num_hidden_layers)
        self.taps = nn.ModuleDict({
            "embedding": TapProbe(),
            "hidden": nn.ModuleList(TapProbe() for _ in range(n)),
            "attention": nn.ModuleList(TapProbe() for _ in range(n)),
            "features": nn.ModuleList(TapProbe() for _ in range(n)),
        })
        self.tap_groups: dict[str, list[str]] = {
            "features": [f"taps.features.{i}" for i in range(n)],
            "embedding": ["taps.embedding"],
            "hidden": [f"taps.hidden.{i}" for i in range(n)],
            "attention": [f"taps.attention.{i}" for i in range(n)],
        }
        values = value_paths(model)
        if values:
            self.tap_groups["values"] = [f"model.{p}" for p in values]
        self.feature_taps = self.tap_groups["features"]
        self._enabled: frozenset[str] = frozenset()
        self._attn_default = str(getattr(model.config, "_attn_implementation", None) or "eager")

    @property
    def vocab_size(self) -> int:
        """Token ids the embedding takes: example inputs for cost measurement draw from these."""
        return int(self.model.config.vocab_size)

    def enable_taps(self, groups: set[str]) -> None:
        """Compute what ``groups`` need from now on; ``set()`` returns to the fast path.

        Attentions are materialised only by eager attention (fused SDPA never forms them),
        so "attention" switches the model to eager and an empty set switches it back.
        """
        unknown = sorted(set(groups) - set(self.tap_groups))
        if unknown:
            raise ConfigError(f"this Hugging Face model has no tap group(s) {unknown}; "
                              f"known: {', '.join(self.tap_groups)}")
        self._enabled = frozenset(groups)
        self._set_attention("eager" if "attention" in groups else self._attn_default)

    def _set_attention(self, impl: str) -> None:
        config = self.model.config
        if getattr(config, "_attn_implementation", None) == impl:
            return
        setter = getattr(self.model, "set_attn_implementation", None)
        if setter is not None:
            setter(impl)
        else:  # remote-code models without the setter read the config at call time
            config._attn_implementation = impl

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != self.pad_id).long()  # (B, L): 1 = real token
        want = self._enabled
        hidden = bool(want & {"embedding", "hidden", "features"})
        attention = "attention" in want
        out = self.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=hidden,
                         output_attentions=attention, return_dict=True)
        if hidden:
            self._route_hidden(out.hidden_states, want)
        if attention:
            for probe, a in zip(self.taps["attention"], out.attentions, strict=True):
                probe(a)  # (B, H, L, L)
        return out.logits  # (B, K)

    def _route_hidden(self, states: tuple[torch.Tensor, ...], want: frozenset[str]) -> None:
        """hidden_states[0] is the embedding output, [1:] each layer's output (B, L, D)."""
        if "embedding" in want:
            self.taps["embedding"](states[0])
        for i, h in enumerate(states[1:]):
            if "hidden" in want:
                self.taps["hidden"][i](h)
            if "features" in want:
                self.taps["features"][i](h.transpose(1, 2))  # (B, D, L), channels first


def value_paths(model: nn.Module) -> list[str]:
    """Each layer's value projection: Linear modules named ``value``/``v_proj``/``v_lin``,
    one per layer in order; [] when the model has no such modules (e.g. a fused QKV)."""
    n = int(model.config.num_hidden_layers)
    found = [name for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and name.rpartition(".")[2] in VALUE_NAMES]
    return found if len(found) == n else []


def layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The encoder's layer list (``bert.encoder.layer``...): the ModuleList with one entry per
    configured layer whose entries hold parameters."""
    n = int(model.config.num_hidden_layers)
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) == n and any(True for _ in m.parameters()):
            return name, m
    raise InitError(f"cannot find the layers of {type(model).__name__}")


# -- the hf student family ---------------------------------------------------------------------
def config_from_dict(raw: dict[str, Any]) -> Any:
    """A transformers config object from a plain dict holding ``model_type``."""
    transformers = require_transformers()
    model_type = raw.get("model_type")
    mapping = transformers.CONFIG_MAPPING
    if model_type not in mapping:
        raise ConfigError(f"hf students need a model type transformers knows; got "
                          f"{model_type!r} (models with their own code cannot be students)")
    return mapping[model_type].from_dict(dict(raw))


def _read_base(base: Any) -> dict[str, Any]:
    if not base:
        raise ConfigError("hf students are built from a Hugging Face teacher's config: pass "
                          "--teacher hf:DIR (or spec key base=DIR)")
    path = Path(str(base)) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the hf base config {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not a Hugging Face config")
    if "auto_map" in raw:
        raise ConfigError(f"{base} needs its own Python code; hf students use built-in "
                          "model classes only")
    return {k: v for k, v in raw.items() if k not in _NOT_ARCHITECTURE}


def _scale(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"hf spec {name!r} must be a number in (0, 1], got {value!r}")
    return float(value)


def normalise_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Validate; read the base's config once and keep it, resolve the default depth.

    Without a base (a search space checked before any teacher is known) only the keys' own
    ranges are checked; building such a spec asks for the teacher.
    """
    s = resolve_spec("hf", dict(spec), HF_DEFAULTS)
    if s["config"] is None and s["base"]:
        s["config"] = _read_base(s["base"])
    if s["config"] is not None and not isinstance(s["config"], dict):
        raise ConfigError("hf spec 'config' must be a mapping (a Hugging Face config)")
    n_teacher = (int(config_from_dict(s["config"]).num_hidden_layers) if s["config"]
                 else None)
    layers = s["layers"]
    if layers is None and n_teacher is not None:
        layers = max(1, n_teacher // 2)
    top = n_teacher or 10**6
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int)
                               or not 1 <= layers <= top):
        raise ConfigError(f"hf layers must be an integer in 1..{n_teacher} (the teacher's "
                          f"depth), got {layers!r}" if n_teacher else
                          f"hf layers must be a positive integer, got {layers!r}")
    s["layers"] = layers
    s["hidden_scale"] = _scale("hidden_scale", s["hidden_scale"])
    s["intermediate_scale"] = _scale("intermediate_scale", s["intermediate_scale"])
    for key in ("vocab_size", "pad_id"):
        if s[key] is not None and (isinstance(s[key], bool) or not isinstance(s[key], int)
                                   or s[key] < 0):
            raise ConfigError(f"hf spec {key!r} must be an integer >= 0, got {s[key]!r}")
    return s


def student_config(spec: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> Any:
    """The teacher's config with the student's depth, widths, labels and padding."""
    cfg = config_from_dict(spec["config"])
    vocab = int(cfg.vocab_size)
    if spec["vocab_size"] is not None and spec["vocab_size"] > vocab:
        raise ConfigError(f"the data's tokenizer has {spec['vocab_size']} ids but the hf base "
                          f"model embeds {vocab}; tokenise with the teacher's tokenizer")
    limit = getattr(cfg, "max_position_embeddings", None)
    if limit is not None and input_shape[0] > int(limit):
        raise ConfigError(f"sequences of {input_shape[0]} tokens exceed the hf base model's "
                          f"{limit} positions; lower --max-length")
    heads = int(cfg.num_attention_heads)
    cfg.num_hidden_layers = spec["layers"]
    if spec["hidden_scale"] != 1.0:
        cfg.hidden_size = max(heads, round(cfg.hidden_size * spec["hidden_scale"] / heads) * heads)
    if spec["intermediate_scale"] != 1.0:
        if not hasattr(cfg, "intermediate_size"):
            raise ConfigError(f"{cfg.model_type} configs have no intermediate_size to scale")
        cfg.intermediate_size = max(1, round(cfg.intermediate_size * spec["intermediate_scale"]))
    cfg.num_labels = num_classes
    if spec["pad_id"] is not None:
        cfg.pad_token_id = spec["pad_id"]
    return cfg


class HFStudent(HFClassifier):
    """An ``hf`` student: the teacher's model class built from a smaller config."""

    family = "hf"

    def __init__(self, spec: dict[str, Any], input_shape: tuple[int, ...],
                 num_classes: int) -> None:
        spec = normalise_spec(spec)
        if spec["config"] is None:
            _read_base(None)  # one line: hf students need the teacher's config
        cfg = student_config(spec, tuple(input_shape), num_classes)
        transformers = require_transformers()
        with quiet_transformers():
            model = transformers.AutoModelForSequenceClassification.from_config(cfg)
        super().__init__(model, cfg.pad_token_id if cfg.pad_token_id is not None else 0)
        self.spec, self.input_shape, self.num_classes = spec, tuple(input_shape), num_classes


def _taps(spec: dict[str, Any]) -> list[str]:
    return [f"taps.features.{i}" for i in range(normalise_spec(spec)["layers"] or 0)]


# -- initialisation from the teacher -----------------------------------------------------------
def _check_same_shape(student: nn.Module, teacher: nn.Module) -> None:
    s, t = student.config, teacher.config
    if type(student) is not type(teacher):
        raise InitError(f"an {type(student).__name__} student cannot start from a "
                        f"{type(teacher).__name__} teacher")
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "vocab_size"):
        a, b = getattr(s, key, None), getattr(t, key, None)
        if a != b:
            raise InitError(f"student {key} {a} != teacher {key} {b}")


def teacher_init(student: nn.Module, teacher: nn.Module, mapping: str) -> None:
    """Copy the teacher's embeddings, pooler and classifier, and for each student layer the
    teacher layer ``map_layers`` picks (``learned`` has no fixed map: uniform is used).

    Raises:
        InitError: The teacher is not a Hugging Face model of the student's class and widths.
    """
    if not isinstance(student, HFClassifier) or not isinstance(teacher, HFClassifier):
        raise InitError("hf students initialise from --teacher hf:DIR models only")
    s_model, t_model = student.model, teacher.model
    _check_same_shape(s_model, t_model)
    s_path, s_layers = layer_list(s_model)
    t_path, t_layers = layer_list(t_model)
    if s_path != t_path:
        raise InitError(f"student layers at {s_path}, teacher layers at {t_path}")
    pairs = map_layers(len(s_layers), len(t_layers),
                       "uniform" if mapping == "learned" else mapping)
    t_state = t_model.state_dict()
    outside = {k: v for k, v in s_model.state_dict().items() if not k.startswith(s_path + ".")}
    with torch.no_grad():
        for key, tensor in outside.items():
            _copy(key, tensor, t_state.get(key))
        for i, j in enumerate(pairs):
            t_layer = t_layers[j].state_dict()
            for key, tensor in s_layers[i].state_dict().items():
                _copy(f"{s_path}.{i}.{key}", tensor, t_layer.get(key))


def _copy(key: str, dest: torch.Tensor, src: torch.Tensor | None) -> None:
    if src is None or src.shape != dest.shape:
        got = None if src is None else tuple(src.shape)
        raise InitError(f"{key}: the teacher has {got}, the student needs {tuple(dest.shape)}")
    dest.copy_(src)


FAMILY = register_family(Family(
    name="hf",
    build=HFStudent,
    defaults=HF_DEFAULTS,
    normalise=normalise_spec,
    inputs=("tokens",),
    feature_taps=_taps,
    teacher_init=teacher_init,
))
