"""``autokd search``: data + teacher + space -> a study in results/<name>/, resumable.

This is the one place that wires the stages together; the CLI and the Python API
(``autokd.search``) both call ``run_search``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from autokd._io import atomic_write
from autokd.config import CostConfig, DataConfig, SearchSettings, TrainConfig, to_dict
from autokd.controllers.base import Budget, ProgressFn, count_done, parse_budget
from autokd.controllers.distributed import is_storage_error
from autokd.data import DataSplits, load_data
from autokd.errors import ConfigError, StudyError
from autokd.models import build_student, family_for, input_kind
from autokd.objective import Objective
from autokd.pareto import pareto_front
from autokd.pipeline import run_distillation, teacher_profile
from autokd.space import SearchSpace, load_space
from autokd.study import (
    StudyPaths,
    atomic_write_text,
    recover_stale_trials,
    redact_url,
    storage_url,
    study_paths,
)
from autokd.tables import write_tables
from autokd.teachers import Teacher, default_teacher, load_teachers

__all__ = ["SearchConfig", "SearchOutcome", "run_search", "search", "default_space_name"]

logger = logging.getLogger(__name__)


@dataclass
class SearchConfig:
    """Everything ``autokd search`` takes (mirrors the CLI flags)."""

    data: DataConfig = field(default_factory=DataConfig)
    teacher: list[str] | None = None
    trust: bool = False
    space: str | None = None  # bundled name or YAML path; None: by data kind
    budget: str | int = 20
    strategy: str = "optuna"
    sampler: str = "tpe"
    pruner: str = "none"
    settings: SearchSettings = field(default_factory=SearchSettings)
    name: str | None = None
    results: str = "results"
    storage: str | None = None
    seed: int = 0
    device: str = "auto"
    baseline: bool = False
    strategy_options: dict[str, Any] = field(default_factory=dict)
    jobs: int = 1  # local worker processes sharing the storage (autokd.workers.run_pool)
    artifacts: str | None = None  # teacher artifact store; None: results/<name>/artifacts
    tuner: str = "tpe"  # --strategy nni: tpe, evolution, anneal or random


@dataclass
class SearchOutcome:
    study: optuna.Study
    paths: StudyPaths
    status: str  # "finished" | "already_finished"
    teacher: dict[str, Any]
    budget: Budget
    requeued: list[int] = field(default_factory=list)


def default_space_name(data: DataSplits) -> str:
    """The bundled space of the default family for this kind of data."""
    return family_for(input_kind(data.input_shape)).space_name


def _slug(text: str) -> str:
    if ":" in text:
        kind, _, rest = text.partition(":")
        text = f"{kind}-{Path(rest).stem}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "study"


def _check_space_fits(space: SearchSpace, data: DataSplits) -> None:
    """Fail fast (before a teacher is trained) when the family cannot take this data."""
    build_student(space.family, {}, data.input_shape, data.num_classes)


def _check_results_dir(root: Path) -> None:
    """Read-only or full disks fail here, before any work, not after the first trial."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-") as fh:
            fh.write(b"0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise StudyError(f"cannot write to results directory {root}: {exc.strerror}") from None
    free = shutil.disk_usage(root).free
    if free < 50 * 2**20:
        raise StudyError(f"only {free // 2**20} MiB free under {root}; a search needs at least 50 MiB")


def _teacher(cfg: SearchConfig, data: DataSplits, paths: StudyPaths) -> tuple[Teacher, str]:
    if cfg.teacher:
        return load_teachers(cfg.teacher, trust=cfg.trust, data=data), ", ".join(cfg.teacher)
    teacher, cached = default_teacher(data, seed=cfg.seed, device=cfg.device)
    local = paths.root / "teacher.pt"
    if not local.exists():
        _atomic_copy(cached, local)
    return teacher, str(local)


def _atomic_copy(src: Path, dst: Path) -> None:
    """An interrupted copy must not leave a truncated teacher.pt that a resumed search would
    keep (it only copies when the file is missing)."""
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def _settings(cfg: SearchConfig) -> SearchSettings:
    settings = dataclasses.replace(cfg.settings)
    settings.train = dataclasses.replace(settings.train, seed=cfg.seed, device=cfg.device)
    return settings.validate()


def _controller_module(strategy: str) -> Any:
    from autokd.controllers import STRATEGIES

    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    return importlib.import_module(STRATEGIES[strategy])


def _record_study(study: optuna.Study, cfg: SearchConfig, data: DataSplits, space: SearchSpace,
                  settings: SearchSettings, profile: dict[str, Any], teacher_ref: str,
                  budget: Budget) -> None:
    attrs = study.user_attrs
    if attrs.get("dataset_hash") not in (None, data.split_hash):
        raise StudyError(f"study {study.study_name!r} was run on another dataset split "
                         f"({attrs['dataset_hash']} != {data.split_hash}); use another --name")
    if attrs.get("teacher_hash") not in (None, profile["hash"]):
        raise StudyError(f"study {study.study_name!r} was run with another teacher "
                         f"({attrs['teacher_hash']} != {profile['hash']}); use another --name")
    if not attrs:
        values = {
            "objectives": settings.objective_names,
            "mode": "score" if settings.score else "pareto",
            "dataset": data.describe(),
            "dataset_hash": data.split_hash,
            "teacher_hash": profile["hash"],
            "teacher": profile,
            "teacher_ref": teacher_ref,
            "space": space.source,
            "space_name": space.name,
            "family": space.family,
            "settings": _settings_dict(settings),
            "limits": settings.limits(),
        }
        for k, v in values.items():
            study.set_user_attr(k, v)
    study.set_user_attr("budget", {"trials": budget.trials, "seconds": budget.seconds})


def _settings_dict(settings: SearchSettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def _write_config(paths: StudyPaths, cfg: SearchConfig, data: DataSplits, space: SearchSpace,
                  teacher_ref: str, budget: Budget) -> None:
    doc = {
        "name": paths.root.name,
        "dataset": to_dict(cfg.data),
        "dataset_hash": data.split_hash,
        "space": space.source,
        "teacher": teacher_ref,
        "trust": cfg.trust,
        "budget": {"trials": budget.trials, "seconds": budget.seconds},
        "strategy": cfg.strategy,
        "sampler": cfg.sampler,
        "pruner": cfg.pruner,
        "seed": cfg.seed,
        "device": cfg.device,
        "baseline": cfg.baseline,
        "storage": redact_url(cfg.storage) if cfg.storage else None,
        "settings": _settings_dict(cfg.settings),
    }
    atomic_write_text(paths.config, yaml.safe_dump(doc, sort_keys=False))


def prepare(cfg: SearchConfig) -> tuple[DataSplits, SearchSpace, StudyPaths]:
    data = load_data(cfg.data)
    space = load_space(cfg.space or default_space_name(data))
    _check_space_fits(space, data)
    name = cfg.name or f"{_slug(cfg.data.source)}-{space.name}"
    paths = study_paths(name, cfg.results)
    _check_results_dir(paths.root)
    return data, space, paths


def run_search(cfg: SearchConfig, progress: ProgressFn | None = None,
               on_ready: Any = None) -> SearchOutcome:
    """Create or resume the study and run the controller until the budget is spent."""
    budget = parse_budget(cfg.budget)
    settings = _settings(cfg)
    module = _controller_module(cfg.strategy)
    data, space, paths = prepare(cfg)
    # the storage and the strategy's options (sampler, pruner, ...) fail before the teacher work
    url = storage_url(paths, cfg.storage)
    study = module.open_for_search(paths.root.name, url, cfg, settings)
    teacher, teacher_ref = _teacher(cfg, data, paths)
    full = dataclasses.replace(CostConfig(), latency=settings.cost.latency,
                               batch_size=settings.cost.batch_size, threads=settings.cost.threads)
    profile = teacher_profile(teacher, data, full)  # measured once, with full timing
    _record_study(study, cfg, data, space, settings, profile, teacher_ref, budget)
    _write_config(paths, cfg, data, space, teacher_ref, budget)
    from autokd import workers  # builds on this module, hence imported here

    workers.publish_study(study, cfg, space, paths)
    requeued = recover_stale_trials(study) if cfg.storage is None else []
    outcome = SearchOutcome(study, paths, "finished", profile, budget, requeued)
    if on_ready is not None:
        on_ready(outcome)
    if budget.trials is not None and count_done(study) >= budget.trials:
        outcome.status = "already_finished"
        finalize(study, paths)
        return outcome
    objective = Objective(space, data, teacher, settings, paths, profile, strategy=cfg.strategy)
    try:
        if cfg.jobs > 1:  # N local `autokd worker` processes; this one only shows progress
            workers.run_pool(study, paths, url, cfg.jobs, workers.search_worker_args(cfg, paths),
                             progress, budget, cfg.seed)
        else:
            workers.run_controllers(module, study, objective, budget, progress, cfg)
        if cfg.baseline:
            run_baselines(study, data, teacher, settings)
    finally:
        finalize(study, paths)
    return outcome


def run_baselines(study: optuna.Study, data: DataSplits, teacher: Teacher,
                  settings: SearchSettings) -> None:
    """Train each Pareto student's scratch twin (same spec, budget and seed) for the KD gain."""
    baseline = dict(study.user_attrs.get("baseline", {}))
    for t in pareto_front(study):
        if str(t.number) in baseline:
            continue
        a = t.user_attrs
        train = TrainConfig(**{**dataclasses.asdict(settings.train), **a.get("train", {}),
                               "seed": a.get("seed", settings.train.seed)})
        if settings.epochs is not None:
            train.epochs = settings.epochs
        kd = _kd(a).scratch()
        run = run_distillation(data, teacher, a["family"], a["spec"], kd, train, settings.cost)
        m = run.metrics()
        baseline[str(t.number)] = {"val_accuracy": m["val_accuracy"],
                                   "test_accuracy": m["test_accuracy"]}
        study.set_user_attr("baseline", baseline)


def _kd(attrs: dict[str, Any]) -> Any:
    from autokd.distill import KDConfig

    return KDConfig(**attrs.get("recipe", {}))


def finalize(study: optuna.Study, paths: StudyPaths) -> None:
    """Write the tables and keep student weights only for the Pareto members (and trials still
    running in other workers); skipped with a warning while the storage is unreachable, so an
    outage error is not masked."""
    try:
        write_tables(study, paths)
        keep = {t.number for t in pareto_front(study)}
        keep |= {t.number for t in study.get_trials(deepcopy=False) if not t.state.is_finished()}
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        logger.warning("tables not written: the study's storage is unreachable")
        return
    if not paths.students.exists():
        return
    for child in paths.students.iterdir():
        if child.is_dir() and child.name.isdigit() and int(child.name) not in keep:
            shutil.rmtree(child, ignore_errors=True)


def search(dataset: str = "digits", budget: str | int = 20, **kwargs: Any) -> optuna.Study:
    """Python API mirroring ``autokd search``; returns the Optuna study.

    Keyword arguments are ``SearchConfig`` fields, ``SearchSettings`` fields (objectives,
    max_flops, epochs, ...) or ``DataConfig`` fields (val_fraction, target, ...).
    """
    cfg = SearchConfig(budget=budget)
    data_kw, settings_kw, cfg_kw = {}, {}, {}
    data_fields = {f.name for f in dataclasses.fields(DataConfig)}
    settings_fields = {f.name for f in dataclasses.fields(SearchSettings)}
    cfg_fields = {f.name for f in dataclasses.fields(SearchConfig)}
    for k, v in kwargs.items():
        if k in cfg_fields:
            cfg_kw[k] = v
        elif k in settings_fields:
            settings_kw[k] = v
        elif k in data_fields:
            data_kw[k] = v
        else:
            raise ConfigError(f"search() got an unknown argument {k!r}")
    cfg = dataclasses.replace(cfg, **cfg_kw)
    cfg.data = DataConfig(source=dataset, **data_kw).validate()
    cfg.settings = dataclasses.replace(cfg.settings, **settings_kw)
    return run_search(cfg).study
