"""Chains of teachers: teacher assistants and born-again generations.

Teacher assistant (Mirzadeh et al. 2020, "Improved Knowledge Distillation via Teacher
Assistant"): when the teacher is far larger than the student, distilling first into an
intermediate-size network and from it into the student narrows the capacity gap. The recipe key
``assistant: auto`` picks the assistant's size at the geometric mean of the teacher's and the
student's FLOPs, ``sqrt(F_T * F_S)``:

- in a search, the closest COMPLETED trial of the same study (feasible, its weights kept, not
  itself taught by an assistant, not an int8 recipe, more FLOPs than the student) whose FLOPs
  lie within ``ASSISTANT_FACTOR`` (2x) of that target, nearest in log scale; its kept weights
  teach the student (``assistant_of`` records it). Only finished trials and their saved files
  are read, so parallel workers never wait for or write each other's trials;
- else (no such trial, weights not kept or not visible to this worker, or ``autokd distill``)
  one is built inside the run: the student's family, the depth/width in the space that best
  matches the target FLOPs, distilled from the teacher with the candidate's recipe minus the
  assistant; its CPU time is part of the run's (``assistant_seconds`` says how much).

Born-again networks (Furlanello et al. 2018): generation 1 has the teacher's own architecture
and is distilled from the teacher; generation g+1, the same architecture, from generation g.

Every link of a chain is wrapped as a ``Teacher`` (``network_teacher``), so response, feature,
relation and attention terms all read it as they read a teacher, with its outputs cached
under a hash of its weights.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from autokd.config import CostConfig, TrainConfig
from autokd.cost import count_flops
from autokd.data import DataSplits
from autokd.distill import KDConfig
from autokd.errors import ConfigError, InitError, TeacherError
from autokd.models import build_student, get_family
from autokd.pipeline import (
    RunResult,
    build_seeded,
    init_student,
    run_distillation,
    teacher_profile,
)
from autokd.record import TrialRecord, feasible
from autokd.space import SearchSpace, load_space
from autokd.teachers import Teacher, load_checkpoint, network_teacher

__all__ = [
    "ASSISTANT_FACTOR",
    "Assistant",
    "born_again",
    "born_again_architecture",
    "find_parent",
    "fit_spec",
    "load_parent",
    "plain_recipe",
    "resolve_assistant",
    "target_flops",
    "train_assistant",
]

logger = logging.getLogger(__name__)
#: a completed trial may serve as assistant when its FLOPs are within this factor of the target
ASSISTANT_FACTOR = 2.0
#: spec keys that set a network's capacity; an assistant varies these, keeps the rest
CAPACITY_KEYS = ("depth", "stages", "depths", "widths", "stem_width", "layers", "hidden",
                 "hidden_scale", "intermediate_scale")
_MAX_GRID = 256
_FLOPS: dict[str, int] = {}


@dataclass
class Assistant:
    """The network that teaches the student in place of the teacher, and where it came from."""

    teacher: Teacher
    family: str
    spec: dict[str, Any]
    flops: int
    target_flops: float
    parent: int | None = None  # the completed trial it is; None: trained inside this run
    cpu_seconds: float | None = None  # training it (inside only)
    wall_seconds: float | None = None
    val_accuracy: float | None = None
    test_accuracy: float | None = None

    def record(self) -> dict[str, Any]:
        """The trial fields it adds: ``assistant_of``/``assistant_seconds`` and extras."""
        return {"assistant_of": self.parent, "assistant_seconds": self.cpu_seconds,
                "assistant_wall_seconds": self.wall_seconds, "assistant_family": self.family,
                "assistant_spec": self.spec, "assistant_flops": self.flops,
                "assistant_target_flops": self.target_flops,
                "assistant_val_accuracy": self.val_accuracy,
                "assistant_test_accuracy": self.test_accuracy}


def plain_recipe(kd: KDConfig) -> KDConfig:
    """The recipe an assistant is trained with: the candidate's, minus the assistant, and
    float (an int8 recipe's rounding would only blur what the assistant passes on)."""
    changes: dict[str, Any] = {"assistant": "none"}
    if getattr(kd, "quantize", "none") != "none":
        changes["quantize"] = "none"
    return dataclasses.replace(kd, **changes)


def target_flops(teacher_flops: float | None, student_flops: float | None) -> float:
    """The assistant's size: the geometric mean of teacher and student FLOPs.

    Raises:
        ConfigError: A teacher whose FLOPs are unknown (e.g. scikit-learn), or one that is
            not larger than the student (nothing to bridge).
    """
    if not teacher_flops:
        raise ConfigError("assistant: auto needs the teacher's FLOPs (a network teacher whose "
                          "FLOPs can be counted)")
    if not student_flops or student_flops >= teacher_flops:
        raise ConfigError(f"assistant: auto needs a student smaller than the teacher "
                          f"({student_flops} vs {teacher_flops} FLOPs)")
    return math.sqrt(float(teacher_flops) * float(student_flops))


def _log_gap(flops: float, target: float) -> float:
    return abs(math.log(float(flops) / target))


# -- an assistant from the study -------------------------------------------------------------
def find_parent(trials: Iterable[FrozenTrial], root: Path, *, target: float,
                student_flops: float, teacher_hash: str | None = None,
                dataset_hash: str | None = None,
                factor: float = ASSISTANT_FACTOR) -> tuple[FrozenTrial, Path] | None:
    """The completed trial nearest ``target`` FLOPs in log scale (within ``factor``) that can
    teach: feasible, trained, weights on disk under ``root``, same teacher and data, taught by
    the teacher itself, float. Ties go to the better validation accuracy, then the older trial.
    """
    best: tuple[float, float, int] | None = None
    chosen: tuple[FrozenTrial, Path] | None = None
    for t in trials:
        path = _usable_parent(t, root, student_flops, teacher_hash, dataset_hash)
        if path is None:
            continue
        rec = TrialRecord.of(t)
        gap = _log_gap(rec.flops, target)
        if gap > math.log(factor) + 1e-12:
            continue
        key = (gap, -(rec.val_accuracy or 0.0), t.number)
        if best is None or key < best:
            best, chosen = key, (t, path)
    return chosen


def _usable_parent(t: FrozenTrial, root: Path, student_flops: float, teacher_hash: str | None,
                   dataset_hash: str | None) -> Path | None:
    """The kept weights of a trial that may teach, else None."""
    if t.state != TrialState.COMPLETE or not feasible(t):
        return None
    rec = TrialRecord.of(t)
    recipe = rec.recipe or {}
    if rec.infeasible or rec.val_accuracy is None or not rec.flops or not rec.checkpoint:
        return None
    if recipe.get("assistant", "none") != "none" or recipe.get("quantize", "none") != "none":
        return None
    if rec.flops <= student_flops:
        return None
    if (teacher_hash and rec.teacher_hash and rec.teacher_hash != teacher_hash) or (
            dataset_hash and rec.dataset_hash and rec.dataset_hash != dataset_hash):
        return None
    path = root / rec.checkpoint
    return path if path.exists() else None


def load_parent(t: FrozenTrial, path: Path, data: DataSplits, target: float) -> Assistant | None:
    """A completed trial's kept student as an assistant; None when its file cannot be used
    (damaged, or trained on another split): the caller then trains one."""
    rec = TrialRecord.of(t)
    try:
        model, payload = load_checkpoint(path)
    except TeacherError as exc:
        logger.warning("trial %d cannot teach: %s", t.number, exc)
        return None
    used = ((payload.get("meta") or {}).get("data") or {}).get("split_hash")
    if used and used != data.split_hash:
        logger.warning("trial %d was trained on split %s, not %s", t.number, used,
                       data.split_hash)
        return None
    teacher = network_teacher(model, f"trial {t.number}", kind="assistant")
    return Assistant(teacher, model.family, dict(model.spec), int(rec.flops), target,
                     parent=t.number, val_accuracy=rec.val_accuracy,
                     test_accuracy=rec.test_accuracy)


# -- an assistant built inside the run -------------------------------------------------------
def fit_spec(family: str, like: dict[str, Any], target: float, data: DataSplits,
             space: SearchSpace | None = None) -> tuple[dict[str, Any], int]:
    """The spec of ``family`` whose FLOPs are nearest ``target`` in log scale.

    Capacity keys (``CAPACITY_KEYS``: depth, widths, layers, hidden ...) range over the
    space's options (the family's bundled space when none is given; a per-stage key takes one
    value for every stage); every other key stays as in ``like``, the student's spec. Ties go
    to fewer FLOPs.
    """
    space = space or load_space(get_family(family).space_name)
    grid = _capacity_grid(space)
    best: tuple[float, int] | None = None
    chosen: tuple[dict[str, Any], int] | None = None
    for combo in grid:
        spec = _with_capacity(like, combo, space)
        flops = _flops(family, spec, data)
        if flops is None:
            continue
        key = (_log_gap(flops, target), flops)
        if best is None or key < best:
            best, chosen = key, (get_family(family).normalise(spec), flops)
    if chosen is None:
        raise ConfigError(f"no {family} assistant could be built from the space's "
                          f"{', '.join(CAPACITY_KEYS)} options")
    return chosen


def _capacity_grid(space: SearchSpace) -> list[dict[str, Any]]:
    """Every combination of the capacity parameters' options (deterministically thinned to
    ``_MAX_GRID`` when larger)."""
    options: dict[str, list[Any]] = {}
    for p in space.group("architecture"):
        if p.name in CAPACITY_KEYS:
            options[p.name] = _numeric_options(p)
    combos = [dict(zip(options, values)) for values in itertools.product(*options.values())]
    if len(combos) > _MAX_GRID:
        combos = random.Random(0).sample(combos, _MAX_GRID)
    return combos or [{}]


def _numeric_options(p: Any) -> list[Any]:
    if p.kind in ("fixed", "choice", "int"):
        return p.options()
    low, high = float(p.low), float(p.high)  # a float range: five points across it
    if p.log and low > 0:
        return [low * (high / low) ** (i / 4) for i in range(5)]
    return [low + (high - low) * i / 4 for i in range(5)]


def _with_capacity(like: dict[str, Any], combo: dict[str, Any],
                   space: SearchSpace) -> dict[str, Any]:
    """``like`` with the capacity values of ``combo``; per-stage keys follow the depth."""
    spec = {**like, **combo}
    per_stage = {p.name: p.per_stage for p in space.group("architecture") if p.per_stage}
    for key, depth_key in per_stage.items():
        n = int(spec.get(depth_key) or 0)
        value = spec.get(key)
        if key in combo:
            spec[key] = [combo[key]] * n
        elif isinstance(value, list) and value:  # e.g. kernel per stage: stretch or cut
            spec[key] = [value[min(i, len(value) - 1)] for i in range(n)]
    return spec


def _flops(family: str, spec: dict[str, Any], data: DataSplits) -> int | None:
    key = json.dumps([family, spec, list(data.input_shape), data.num_classes], sort_keys=True,
                     default=str)
    if key not in _FLOPS:
        try:
            model = build_student(family, spec, data.input_shape, data.num_classes,
                                  tokens=data.tokens)
            _FLOPS[key] = count_flops(model, tuple(data.input_shape))
        except Exception as exc:  # noqa: BLE001 - an impossible combination (heads vs hidden)
            logger.debug("skipping %s %s: %s", family, spec, exc)
            _FLOPS[key] = -1
    return None if _FLOPS[key] < 0 else _FLOPS[key]


def train_assistant(data: DataSplits, teacher: Teacher, family: str, spec: dict[str, Any],
                    kd: KDConfig, cfg: TrainConfig, target: float,
                    flops: int | None = None) -> Assistant:
    """Distil an assistant of ``spec`` from ``teacher`` with ``plain_recipe(kd)``; its CPU and
    wall seconds are recorded (they are part of the caller's run)."""
    clock = (time.perf_counter(), time.process_time())
    recipe = plain_recipe(kd)
    model = build_seeded(family, spec, data, cfg.seed)
    try:
        init_student(model, recipe, teacher)
    except InitError as exc:  # init: teacher with other widths: the assistant starts at random
        logger.info("assistant starts from random weights: %s", exc)
    run = run_distillation(data, teacher, family, spec, recipe, cfg, CostConfig(latency=False),
                           model=model)
    network = run.model
    wall, cpu = time.perf_counter() - clock[0], time.process_time() - clock[1]
    logger.info("trained a %s assistant (%s FLOPs) in %.1f s", family, run.cost.flops, wall)
    return Assistant(network_teacher(network, f"assistant {family}", kind="assistant"),
                     family, dict(network.spec), int(flops or run.cost.flops), target,
                     cpu_seconds=cpu, wall_seconds=wall,
                     val_accuracy=run.train.val.get("accuracy"),
                     test_accuracy=run.train.test.get("accuracy"))


def resolve_assistant(data: DataSplits, teacher: Teacher, teacher_flops: float | None,
                      family: str, spec: dict[str, Any], student_flops: float, kd: KDConfig,
                      cfg: TrainConfig, *, space: SearchSpace | None = None,
                      trials: Iterable[FrozenTrial] = (), root: Path | None = None) -> Assistant:
    """The assistant for a student: a completed trial's (``find_parent``), else one trained
    here (``fit_spec`` + ``train_assistant``)."""
    target = target_flops(teacher_flops, student_flops)
    if root is not None:
        found = find_parent(trials, root, target=target, student_flops=student_flops,
                            teacher_hash=teacher.hash, dataset_hash=data.split_hash)
        parent = load_parent(*found, data, target) if found else None
        if parent is not None:
            parent.teacher.check(data)
            return parent
    a_spec, a_flops = fit_spec(family, spec, target, data, space)
    return train_assistant(data, teacher, family, a_spec, kd, cfg, target, a_flops)


# -- born-again generations ------------------------------------------------------------------
def born_again_architecture(teacher: Teacher) -> tuple[str, dict[str, Any]]:
    """The teacher's own family and spec, from its autokd checkpoint.

    Raises:
        TeacherError: An ensemble, or a teacher that is not an autokd network (TorchScript,
            module:function, scikit-learn, Hugging Face): its architecture is unknown.
    """
    if len(teacher.members) != 1:
        raise TeacherError("--born-again needs one teacher, not an ensemble")
    module = teacher.module
    family, spec = getattr(module, "family", None), getattr(module, "spec", None)
    if teacher.members[0].kind != "autokd" or not family or not isinstance(spec, dict):
        raise TeacherError(f"--born-again needs an autokd teacher checkpoint (its family and "
                           f"spec); {teacher.name} is a {teacher.members[0].kind} teacher")
    return str(family), dict(spec)


def born_again(data: DataSplits, teacher: Teacher, generations: int, kd: KDConfig,
               cfg: TrainConfig, cost_cfg: CostConfig | None = None,
               on_generation: Callable[[int], dict[str, list[Any]]] | None = None,
               ) -> list[RunResult]:
    """``generations`` students of the teacher's architecture, each taught by the previous
    (generation 1 by the teacher). Generation g starts from seed ``cfg.seed + g - 1``, so
    generation 1 is the plain distillation with ``cfg.seed``. ``on_generation(g)`` gives the
    trainer callbacks of generation g (progress). Every run's ``teacher`` (and so its
    retention) is the original teacher's profile."""
    if generations < 1:
        raise ConfigError(f"--born-again needs at least 1 generation, got {generations}")
    family, spec = born_again_architecture(teacher)
    profile = teacher_profile(teacher, data, cost_cfg)
    runs: list[RunResult] = []
    source = teacher
    for g in range(1, generations + 1):
        gen_cfg = dataclasses.replace(cfg, seed=cfg.seed + g - 1)
        callbacks = on_generation(g) if on_generation else None
        run = run_distillation(data, source, family, spec, kd, gen_cfg, cost_cfg, callbacks)
        run.teacher = profile
        runs.append(run)
        source = network_teacher(run.model, f"generation {g}", kind="born-again")
    return runs
