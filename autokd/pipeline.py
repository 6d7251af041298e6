"""One distillation run end to end: build -> distil -> evaluate -> measure cost -> compare.

Why a module of its own: ``autokd distill``, every search trial and ``autokd export``'s
retraining are the same run; keeping it here means they report identical metrics.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from autokd.config import CostConfig, TrainConfig
from autokd.cost import CostReport, measure_cost
from autokd.data import DataSplits
from autokd.distill import KDConfig
from autokd.errors import InitError
from autokd.metrics import classification_metrics
from autokd.models import build_student, get_family
from autokd.quant import QAT_FAMILIES, float_onnx_cost, int8_cost, int8_metrics, prepare_qat
from autokd.quant.deploy import resolve_runtime, runtime_cost
from autokd.teachers import Teacher
from autokd.train import Callback, Trainer, TrainResult, seed_everything
from autokd.train_state import TrainState

__all__ = [
    "RunResult",
    "build_seeded",
    "compare",
    "init_student",
    "measure_student_cost",
    "run_distillation",
    "teacher_profile",
    "teacher_scores",
]

logger = logging.getLogger(__name__)
_PROFILE_CACHE: dict[tuple[str, str, bool, str], dict[str, Any]] = {}


@dataclass
class RunResult:
    """A trained student, its metrics and its costs, next to the teacher's."""

    family: str
    spec: dict[str, Any]
    kd: KDConfig
    train: TrainResult
    cost: CostReport
    teacher: dict[str, Any] = field(default_factory=dict)
    #: an int8 student's deployed-model numbers (``deploy_int8``); empty for a float one
    deployed: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> nn.Module:
        return self.train.model

    def metrics(self) -> dict[str, Any]:
        """Flat metrics: accuracy/NLL/KD loss per split, costs, and ratios vs the teacher."""
        out: dict[str, Any] = {}
        for split, values in (("val", self.train.val), ("test", self.train.test)):
            out.update({f"{split}_{k}": v for k, v in values.items()})
        out.update(self.cost.to_dict())
        out.update(train_seconds=self.train.train_seconds, best_epoch=self.train.best_epoch,
                   epochs_run=self.train.epochs_run)
        out.update(self.deployed)
        out.update(compare(out, self.teacher))
        return out


def compare(student: dict[str, Any], teacher: dict[str, Any]) -> dict[str, float | None]:
    """Retention (student/teacher accuracy) and compression factors (teacher/student)."""

    def ratio(num: Any, den: Any) -> float | None:
        return float(num) / float(den) if num and den else None

    return {
        "retention": ratio(student.get("test_accuracy"), teacher.get("test_accuracy")),
        "val_retention": ratio(student.get("val_accuracy"), teacher.get("val_accuracy")),
        "params_compression": ratio(teacher.get("params"), student.get("params")),
        "flops_compression": ratio(teacher.get("flops"), student.get("flops")),
        "latency_speedup": ratio(teacher.get("latency_ms"), student.get("latency_ms")),
    }


def teacher_profile(teacher: Teacher, data: DataSplits, cost_cfg: CostConfig | None = None) -> dict[str, Any]:
    """Accuracy and costs of the teacher (ensemble: summed costs), cached per process.

    Latency is timed in the runtime the students are timed in now (``trial_runtime``), so
    ``latency_speedup`` compares like with like; a teacher that cannot be exported there is
    timed in eager PyTorch and ``latency_fallback`` says why (its speed-ups then mix runtimes).
    """
    cost_cfg = resolve_runtime(cost_cfg or CostConfig())
    key = (teacher.hash, data.split_hash, cost_cfg.latency, cost_cfg.trial_runtime)
    if key in _PROFILE_CACHE:
        return _PROFILE_CACHE[key]
    out: dict[str, Any] = {
        "name": teacher.name,
        "hash": teacher.hash,
        "val_accuracy": teacher.accuracy(data, "val"),
        "test_accuracy": teacher.accuracy(data, "test"),
    }
    for split in ("val", "test"):
        scores = teacher_scores(teacher, data, split)
        out.update({f"{split}_{k}": scores[k] for k in
                    ("balanced_accuracy", "macro_f1", "per_class_accuracy")})
    view = teacher.view(data)  # the teacher's inputs: every column under --student-features
    costs = [_member_cost(m.module, view, cost_cfg) for m in teacher.members]
    if all(c is not None for c in costs):
        for name in ("params", "flops", "bytes", "latency_ms", "latency_ms_batch"):
            values = [getattr(c, name) for c in costs]
            out[name] = sum(values) if all(v is not None for v in values) else None
        runtimes = sorted({c.latency_runtime for c in costs if c.latency_runtime})
        out["latency_runtime"] = "+".join(runtimes) or None
        reasons = [c.latency_fallback for c in costs if c.latency_fallback]
        out["latency_fallback"] = "; ".join(reasons) or None
    _PROFILE_CACHE[key] = out
    return out


def teacher_scores(teacher: Teacher, data: DataSplits, split: str) -> dict[str, Any]:
    """The teacher's metrics on a split (``autokd.metrics``), from its cached outputs; an
    ensemble predicts by its mean probabilities, as ``Teacher.accuracy`` does."""
    y = data.split(split)[1]
    pred = torch.softmax(teacher.outputs(data, split), -1).mean(0).argmax(1)  # (N,)
    return classification_metrics(pred, y, data.num_classes)


def _member_cost(module: nn.Module | None, data: DataSplits, cfg: CostConfig) -> CostReport | None:
    if module is None:
        return None  # e.g. a scikit-learn estimator: no FLOPs to count
    try:
        return runtime_cost(module, data.input_shape, cfg)
    except Exception as exc:  # counting a user's TorchScript model can fail; costs are optional
        logger.warning("could not measure the teacher's cost: %s", exc)
        return None


def build_seeded(family: str, spec: dict[str, Any], data: DataSplits, seed: int) -> nn.Module:
    """Build a student with a seeded initialisation (the same seed gives the same weights)."""
    seed_everything(seed)
    return build_student(family, spec, data.input_shape, data.num_classes, tokens=data.tokens)


def init_student(model: nn.Module, kd: KDConfig, teacher: Teacher | None) -> None:
    """Put ``model`` in the form the recipe starts from: the teacher's layers copied in when
    it says ``init: teacher``, fake-quantised layers when it says ``quantize: int8``.

    The teacher's network is its first member's (as for feature terms); the layers are picked
    by ``kd.hint_mapping`` (``autokd.distill.init``).

    Raises:
        InitError: No teacher network, a family without ``teacher_init``, shapes that do
            not match, or a family int8 does not cover (``QuantizeError``); a search records
            the candidate infeasible before training.
    """
    if kd.init == "teacher":
        _init_from_teacher(model, kd, teacher)
    if kd.quantize == "int8":
        prepare_qat(model)


def _init_from_teacher(model: nn.Module, kd: KDConfig, teacher: Teacher | None) -> None:
    family = get_family(model.family)
    if family.teacher_init is None:
        raise InitError(f"family {family.name} cannot be initialised from a teacher")
    module = teacher.module if teacher is not None else None
    if module is None:
        raise InitError("init: teacher needs a teacher that is a network (an autokd checkpoint "
                        "or module:function)")
    family.teacher_init(model, module, kd.hint_mapping)


def run_distillation(data: DataSplits, teacher: Teacher | None, family: str, spec: dict[str, Any],
                     kd: KDConfig, train_cfg: TrainConfig, cost_cfg: CostConfig | None = None,
                     callbacks: dict[str, list[Callback]] | None = None,
                     model: nn.Module | None = None, cost: CostReport | None = None,
                     resume: TrainState | None = None, keep_state: bool = False) -> RunResult:
    """Distil (or, with ``kd.soft_loss == 'none'`` and no feature terms, train from scratch).

    ``cost`` may be measured before training (a search checks constraints first); weights do
    not change a model's FLOPs, size or latency, so it is not measured twice. ``resume``
    continues a stopped run; ``keep_state`` leaves the end state in ``result.train.state``.
    A student built here starts as ``kd.init`` says; a ``model`` passed in is trained as it
    is (its caller initialised it: a search checks ``init_student`` before training).
    """
    if model is None:
        model = build_seeded(family, spec, data, train_cfg.seed)
        init_student(model, kd, teacher)
    trainer = Trainer(model, data, train_cfg, kd, teacher)
    trainer.keep_state = keep_state
    if resume is not None:
        trainer.resume(resume)
    for event, fns in (callbacks or {}).items():
        for fn in fns:
            trainer.add_callback(event, fn)
    result = trainer.fit()
    student = result.model.cpu().eval()
    cost = cost or measure_student_cost(student, data, kd, cost_cfg)
    profile = teacher_profile(teacher, data, cost_cfg) if teacher is not None else {}
    run = RunResult(family, dict(student.spec), kd, result, cost, profile)
    return deploy_int8(run, data, teacher) if kd.quantize == "int8" else run


def measure_student_cost(model: nn.Module, data: DataSplits, kd: KDConfig,
                         cost_cfg: CostConfig | None = None,
                         as_onnx: bool = False) -> CostReport:
    """The costs a candidate is ranked by: the network's, and for ``quantize: int8`` the bytes
    and ONNX Runtime latency of its INT8 file (``autokd.quant.int8_cost``). A family int8 does
    not cover keeps its float costs (``init_student`` then refuses it). ``as_onnx`` (a search
    that offers int8 beside float) costs a float student as its float ONNX file under ONNX
    Runtime too, so both kinds of member are measured in the same runtime. Any other student
    is timed in ``cost_cfg.trial_runtime`` (``autokd.quant.deploy.runtime_cost``)."""
    cfg = resolve_runtime(cost_cfg or CostConfig())
    onnx = getattr(model, "family", None) in QAT_FAMILIES and (kd.quantize == "int8" or as_onnx)
    if not onnx:
        return runtime_cost(model, data.input_shape, cfg)
    cost = measure_cost(model, data.input_shape, cfg, latency=False)  # ONNX Runtime's replaces it
    if kd.quantize == "int8":
        return int8_cost(model, data.input_shape, cost, cfg)
    return float_onnx_cost(model, data.input_shape, cost, cfg)


def deploy_int8(run: RunResult, data: DataSplits, teacher: Teacher | None) -> RunResult:
    """Score an int8 run as the model that ships: val/test metrics become the INT8 ONNX
    model's own (ONNX Runtime), the fake-quantised model's kept as ``float_*_accuracy``."""
    logits = {s: teacher.outputs(data, s) for s in ("val", "test")} if teacher else None
    got = int8_metrics(run.model, data, logits, run.kd.temperature)
    run.deployed = {"float_val_accuracy": run.train.val.get("accuracy"),
                    "float_test_accuracy": run.train.test.get("accuracy"),
                    "int8_max_abs_diff": got.max_abs_diff}
    run.train.val, run.train.test = got.val, got.test
    run.cost = dataclasses.replace(run.cost, bytes=got.bytes)
    return run

