"""Teachers: load one (or several), check it fits the data, cache its outputs, train a default.

Formats: an autokd checkpoint (weights + spec, loaded with ``weights_only=True``), a TorchScript
file, ``module:function[@STATE_DICT]`` (imports code: needs ``trust``), a scikit-learn
estimator saved with joblib that has ``predict_proba`` (unpickles code: needs ``trust``) and
``hf:DIR``, a Hugging Face classifier (``autokd.hf_teacher``).
Tree ensembles distilled into networks are a real use case, so sklearn teachers are first-class.

Why outputs are cached: computing teacher logits once per (teacher, split) instead of every
batch made KD 3.5x faster; they are kept in memory and on disk keyed by both hashes. A teacher
reads ``Teacher.view(data)``: every column under ``--student-features``, never the student's.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autokd._io import cache_dir
from autokd.config import TrainConfig
from autokd.data import DataSplits
from autokd.distill import KDConfig
from autokd.distill.hooks import model_tap_groups
from autokd.errors import TeacherError
from autokd.hf_teacher import is_hf, load_hf_teacher
from autokd.inference import fast_inference
from autokd.model_files import (
    _atomic_torch_save,
    _reason,
    _torch_load,
    is_torchscript,
    load_checkpoint,
    save_checkpoint,
)
from autokd.models import build_student, family_for, get_family, input_kind
from autokd.progress import ProgressMeter, epoch_callback
from autokd.train import TrainResult, distill, evaluate, seed_everything
from autokd.train_taps import split_taps

__all__ = [
    "Teacher",
    "cache_dir",
    "default_teacher",
    "default_teacher_spec",
    "is_torchscript",
    "load_checkpoint",
    "load_teacher",
    "load_teachers",
    "network_teacher",
    "save_checkpoint",
    "teacher_metrics",
    "train_teacher",
]

logger = logging.getLogger(__name__)
_MODULE_FN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(@.+)?$")
_OUTPUT_CACHE: dict[tuple[str, str, str], torch.Tensor] = {}
_FEATURE_CACHE: dict[tuple[str, str, str], list[torch.Tensor]] = {}


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class _Member:
    """One teacher network (or estimator) with a uniform ``logits(x)``."""

    name: str
    kind: str
    hash: str
    module: nn.Module | None = None
    estimator: Any = None
    feature_taps: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    denormalize: Any = None  # sklearn teachers see raw features
    # BatchNorm-folded channels-last copy (``autokd.inference``), or the module itself when
    # none is faster and equal; built once per device on the first batch it labels
    _fast: dict[str, nn.Module] = field(default_factory=dict, repr=False, compare=False)

    def _inference_graph(self, probe: torch.Tensor) -> nn.Module:
        key = str(probe.device)
        if key not in self._fast:
            self._fast[key] = fast_inference(self.module, probe) or self.module
        return self._fast[key]

    @torch.no_grad()
    def logits(self, x: torch.Tensor, batch: int = 1024,
               on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
        """Logits (N, K) on the CPU; ``on_batch(n)`` is told each finished chunk's size."""
        if self.estimator is not None:
            raw = self.denormalize(x) if self.denormalize else x
            probs = self.estimator.predict_proba(raw.reshape(len(raw), -1).numpy())
            if on_batch is not None:
                on_batch(len(x))
            return torch.log(torch.as_tensor(np.asarray(probs), dtype=torch.float32).clamp_min(1e-7))
        self.module.eval()
        device = next(iter(self.module.parameters()), torch.empty(0)).device
        net = self._inference_graph(x[:64].to(device))
        chunks = []
        for i in range(0, len(x), batch):
            chunks.append(net(x[i:i + batch].to(device)).float())
            if on_batch is not None:
                on_batch(len(chunks[-1]))
        return torch.cat(chunks).cpu()  # one copy back, not one host sync per chunk


class Teacher:
    """A frozen teacher or ensemble; ``outputs`` gives cached logits (M, N, K) per split."""

    def __init__(self, members: list[_Member]) -> None:
        if not members:
            raise TeacherError("no teacher given")
        self.members = members
        self.hash = hashlib.sha256("+".join(m.hash for m in members).encode()).hexdigest()[:16]

    def view(self, data: DataSplits) -> DataSplits:
        """The data it reads (a teacher trained on the student's columns overrides this)."""
        return data.for_teacher()

    @property
    def name(self) -> str:
        return " + ".join(m.name for m in self.members)

    @property
    def module(self) -> nn.Module | None:
        """The network used for feature losses (the first member's)."""
        return self.members[0].module

    @property
    def feature_taps(self) -> list[str]:
        return self.members[0].feature_taps

    @property
    def meta(self) -> dict[str, Any]:
        return self.members[0].meta

    def logits(self, x: torch.Tensor, label: str | None = None) -> torch.Tensor:
        """Every member's logits, (M, N, K); with ``label``, shown as progress."""
        if label is None:
            return torch.stack([m.logits(x) for m in self.members])
        with ProgressMeter(len(x) * len(self.members), label, "samples") as meter:
            return torch.stack([m.logits(x, on_batch=meter.update) for m in self.members])

    def outputs(self, data: DataSplits, split: str) -> torch.Tensor:
        """Logits for a whole split or ``unlabeled``, computed once (memory, then disk)."""
        data = self.view(data)
        key = (self.hash, data.split_hash, split)
        if key not in _OUTPUT_CACHE:
            _OUTPUT_CACHE[key] = self._load_or_compute(data, split)
        return _OUTPUT_CACHE[key]

    @property
    def tap_groups(self) -> dict[str, list[str]]:
        """The first member's tap groups (``model_tap_groups``: ``features`` by default)."""
        return model_tap_groups(self.module, self.feature_taps)

    def feature_outputs(self, data: DataSplits, split: str) -> list[torch.Tensor] | None:
        """The first member's feature-tap outputs for a split (``tap_outputs`` of ``features``)."""
        out = self.tap_outputs(data, split, {"features"})
        return None if out is None else out["features"]

    def tap_outputs(self, data: DataSplits, split: str,
                    groups: set[str]) -> dict[str, list[torch.Tensor]] | None:
        """The first member's tap-group outputs for a split, computed once (memory only).

        Each group is cached on its own, so recipes reading different groups share them.
        Returns None when the teacher lacks a group or the missing groups' maps would exceed
        ``AUTOKD_FEATURE_CACHE_MB`` (default 1024; attention maps are ``H·L²`` per layer and
        sample): the trainer then runs the teacher per batch.
        """
        module, available = self.module, self.tap_groups
        if module is None or not groups or not set(groups) <= set(available):
            return None
        data = self.view(data)
        keys = {g: (self.hash, data.split_hash, f"{g}:{split}") for g in sorted(groups)}
        todo = {g: available[g] for g, k in keys.items() if k not in _FEATURE_CACHE}
        if todo:
            limit = float(os.environ.get("AUTOKD_FEATURE_CACHE_MB", "1024")) * 2**20
            taps = split_taps(module, todo, data.inputs(split), limit)
            if taps is None:
                return None
            _FEATURE_CACHE.update({keys[g]: tensors for g, tensors in taps.items()})
        return {g: _FEATURE_CACHE[k] for g, k in keys.items()}

    def _load_or_compute(self, data: DataSplits, split: str) -> torch.Tensor:
        path = cache_dir() / "outputs" / f"{self.hash}-{data.split_hash}-{split}.pt"
        if path.exists():
            try:
                return torch.load(path, weights_only=True)
            except Exception:  # a corrupt cache entry is recomputed, never trusted
                logger.warning("ignoring unreadable teacher-output cache %s", path)
        n = len(data.inputs(split)) * len(self.members)
        with ProgressMeter(n, f"teacher outputs ({split})", "samples") as meter:
            out = torch.cat([torch.stack([m.logits(xb, on_batch=meter.update)
                                          for m in self.members])
                             for xb in data.chunks(split, 1024)], dim=1)
        _atomic_torch_save(out, path)
        return out

    def check(self, data: DataSplits) -> None:
        """Reject a teacher that does not fit the data before any training starts."""
        data = self.view(data)
        xb = data.head("val", 8)
        for m in self.members:
            try:
                out = m.logits(xb)
            except Exception as exc:  # the user's model: any failure is a fit problem
                raise TeacherError(f"teacher {m.name} fails on a batch of shape "
                                   f"{tuple(xb.shape)}: {_reason(exc)}") from None
            if out.ndim != 2 or out.shape[1] != data.num_classes:
                raise TeacherError(f"teacher {m.name} outputs shape {tuple(out.shape)}, but the "
                                   f"dataset has {data.num_classes} classes")
            if not torch.isfinite(out).all():
                raise TeacherError(f"teacher {m.name} produces NaN/inf outputs")

    def accuracy(self, data: DataSplits, split: str = "test") -> float:
        y = data.split(split)[1]
        probs = torch.softmax(self.outputs(data, split), -1).mean(0)
        return (probs.argmax(1) == y).float().mean().item()


def _from_file(path: Path, trust: bool, data: DataSplits | None) -> _Member:
    if not path.exists():
        raise TeacherError(f"teacher file not found: {path}")
    if path.is_dir():
        raise TeacherError(f"teacher {path} is a directory, not a file")
    digest = file_hash(path)
    if path.suffix in (".joblib", ".pkl", ".pickle"):
        return _sklearn_member(path, trust, digest, data)
    if is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise TeacherError(f"{path} is not a loadable TorchScript file: "
                               f"{_reason(exc)}") from None
        return _Member(path.name, "torchscript", digest, module=module.eval())
    payload = _torch_load(path, trust)
    if isinstance(payload, nn.Module):  # a whole pickled module, only with --trust
        return _Member(path.name, "pickled-module", digest, module=payload.eval())
    model, payload = load_checkpoint(path, trust)
    return _Member(path.name, "autokd", digest, module=model,
                   feature_taps=list(model.feature_taps), meta=payload.get("meta", {}))


def _sklearn_member(path: Path, trust: bool, digest: str, data: DataSplits | None) -> _Member:
    if not trust:
        raise TeacherError(f"{path} is a joblib/pickle file, and loading it runs code; "
                           "pass --trust if you trust it")
    import joblib

    try:
        est = joblib.load(path)
    except Exception as exc:
        raise TeacherError(f"cannot read {path}: {_reason(exc)}") from None
    if not hasattr(est, "predict_proba"):
        raise TeacherError(f"{path} holds a {type(est).__name__}, which has no predict_proba")
    denorm = data.for_teacher().denormalize if data is not None else None
    return _Member(path.name, "sklearn", digest, estimator=est, denormalize=denorm)


def _from_function(text: str, trust: bool) -> _Member:
    if not trust:
        raise TeacherError(f"teacher {text!r} imports and runs Python code; pass --trust to allow it")
    target, _, weights = text.partition("@")
    mod_name, fn_name = target.split(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
        module = fn()
    except Exception as exc:
        raise TeacherError(f"cannot build teacher {target}: {_reason(exc)}") from None
    if not isinstance(module, nn.Module):
        raise TeacherError(f"{target} returned {type(module).__name__}, not a torch nn.Module")
    if weights:
        state = _torch_load(Path(weights), trust=False)
        try:
            module.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except Exception as exc:
            raise TeacherError(f"state dict {weights} does not fit {target}: "
                               f"{_reason(exc)}") from None
    taps = list(getattr(module, "feature_taps", []))
    return _Member(target, "module", _module_digest(target, module), module=module.eval(),
                   feature_taps=taps)


def _module_digest(target: str, module: nn.Module) -> str:
    """Hash of the name and the actual weights, so an edited function or new weights never
    reuse a stale teacher-output cache (the name alone says nothing about the code)."""
    h = hashlib.sha256(target.encode())
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def network_teacher(module: nn.Module, name: str, kind: str = "network") -> Teacher:
    """A trained autokd network (an assistant, a born-again generation) as a frozen teacher,
    hashed by its family and weights so that its cached outputs are its own."""
    family = str(getattr(module, "family", type(module).__name__))
    return Teacher([_Member(name, kind, _module_digest(family, module), module=module.eval(),
                            feature_taps=list(getattr(module, "feature_taps", [])))])


def load_teacher(source: str | Path, *, trust: bool = False, data: DataSplits | None = None) -> Teacher:
    """Load one teacher from a path or ``module:function[@weights]``; checked against ``data``."""
    teacher = Teacher([_load_member(str(source), trust, data)])
    if data is not None:
        teacher.check(data)
    return teacher


def _load_member(text: str, trust: bool, data: DataSplits | None) -> _Member:
    if is_hf(text):  # before module:function, which "hf:name" also matches
        module, digest = load_hf_teacher(text, trust, data)
        return _Member(text, "hf", digest, module=module, feature_taps=list(module.feature_taps))
    if _MODULE_FN.match(text) and not Path(text).exists():
        return _from_function(text, trust)
    return _from_file(Path(text), trust, data)


def load_teachers(sources: list[str], *, trust: bool = False, data: DataSplits | None = None) -> Teacher:
    """Several teachers form an ensemble (weighting is the KD recipe's ``teacher_weighting``)."""
    # data goes to each member too: scikit-learn members need it to see raw features
    members = [_load_member(str(s), trust, data) for s in sources]
    teacher = Teacher(members)
    if data is not None:
        teacher.check(data)
    return teacher


# -- default teacher -----------------------------------------------------------------------
def default_teacher_spec(data: DataSplits,
                         family: str | None = None) -> tuple[str, dict[str, Any], TrainConfig]:
    """A strong teacher from a family's ``TeacherRecipe`` (default: the data kind's family).

    Naming a family (``mbv2``, ``resnet``...) trains that family's wider, deeper recipe, so a
    search over that family distils from a teacher of the same shape of network.
    """
    kind = input_kind(data.input_shape, data.tokens)
    record = family_for(kind) if family is None else get_family(family)
    record.check_input(tuple(data.input_shape), kind)
    recipe = record.teacher
    if recipe is None:
        raise TeacherError(f"family {record.name} defines no default teacher; pass --teacher")
    cfg = TrainConfig(epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size)
    return record.name, dict(recipe.spec), cfg


def train_teacher(data: DataSplits, *, epochs: int | None = None, seed: int = 0,
                  device: str = "cpu", family: str | None = None) -> tuple[nn.Module, TrainResult]:
    """Train a default teacher from scratch (best epoch by validation accuracy)."""
    data = data.for_teacher()  # every column, labelled samples only
    family, spec, cfg = default_teacher_spec(data, family)
    cfg.seed, cfg.device = seed, device
    if epochs is not None:
        cfg.epochs = epochs
    seed_everything(seed)
    model = build_student(family, spec, data.input_shape, data.num_classes, tokens=data.tokens)
    with ProgressMeter(cfg.epochs, f"teacher ({family})", "epochs") as meter:
        result = distill(model, data, None, KDConfig(soft_loss="none", alpha=0.0), cfg,
                         callbacks={"on_epoch_end": [epoch_callback(meter)]})
    return result.model.cpu().eval(), result


def teacher_metrics(model: nn.Module, data: DataSplits, result: TrainResult | None = None) -> dict[str, Any]:
    test = result.test if result else evaluate(model, data.x_test, data.y_test)
    val = result.val if result else evaluate(model, data.x_val, data.y_val)
    return {"test_accuracy": test["accuracy"], "val_accuracy": val["accuracy"],
            "params": sum(p.numel() for p in model.parameters())}


def default_teacher(data: DataSplits, *, seed: int = 0, device: str = "cpu",
                    cache: bool = True) -> tuple[Teacher, Path]:
    """The cached default teacher for this data split (trained on first use)."""
    view = data.for_teacher()  # every column: sized, trained and cached for the teacher's view
    family, spec, cfg = default_teacher_spec(view)
    tag = hashlib.sha256(f"{family}{spec}{cfg.epochs}{seed}".encode()).hexdigest()[:8]
    path = cache_dir() / "teachers" / f"{view.split_hash}-{tag}.pt"
    if not (cache and path.exists()):
        logger.info("training the default teacher for %s (cached at %s)", data.name, path)
        model, result = train_teacher(view, seed=seed, device=device)
        save_checkpoint(model, path, data=view.describe(), metrics=teacher_metrics(model, view, result))
    return load_teacher(path, data=data), path
