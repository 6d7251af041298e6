"""``autokd search``: data + teacher + space -> a study in results/<name>/, resumable.

The CLI and the Python API (``autokd.search``) both call ``run_search``; what a search shares
with workers joining it (the study's record, the run loop, finalize) is in ``autokd.runner``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from autokd._api import callable_module
from autokd._io import atomic_write
from autokd.config import DEFAULT_STRATEGY, CostConfig, DataConfig, SearchConfig, SearchSettings
from autokd.controllers.base import Budget, ProgressFn, parse_budget
from autokd.data import DataSplits, load_data
from autokd.datafree import apply_data_free
from autokd.errors import ConfigError, StudyError
from autokd.hf_teacher import hf_data_config, hf_space, hf_student_spec
from autokd.kd_gain import check_seeds, run_baselines
from autokd.models import build_student, family_for, input_kind
from autokd.objective import Objective
from autokd.pipeline import teacher_profile
from autokd.pool import run_pool, search_worker_args
from autokd.quant.deploy import resolve_runtime
from autokd.record import SearchRecord, budget_used
from autokd.runner import (
    check_results_dir,
    controller_module,
    finalize,
    record_search,
    run_controllers,
    write_config,
)
from autokd.runtime_front import check_runtime, front_runtime_latency
from autokd.space import SearchSpace, load_space, with_recipe
from autokd.study import StudyPaths, open_study, recover_stale_trials, storage_url, study_paths
from autokd.teachers import Teacher, default_teacher, load_teachers

__all__ = ["SearchConfig", "SearchOutcome", "default_space_name", "run_search", "search"]

logger = logging.getLogger(__name__)


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
    return family_for(input_kind(data.input_shape, data.tokens)).space_name


def _slug(text: str) -> str:
    if ":" in text:
        kind, _, rest = text.partition(":")
        text = f"{kind}-{Path(rest).stem}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "study"


def _teacher(cfg: SearchConfig, data: DataSplits, paths: StudyPaths) -> tuple[Teacher, str]:
    if cfg.teacher:
        return load_teachers(cfg.teacher, trust=cfg.trust, data=data), ", ".join(cfg.teacher)
    teacher, cached = default_teacher(data, seed=cfg.seed, device=cfg.device)
    local = paths.root / "teacher.pt"
    if not local.exists():
        # an interrupted copy must not leave a truncated teacher.pt that a resumed search keeps
        atomic_write(local, lambda tmp: shutil.copyfile(cached, tmp))
    return teacher, str(local)


def _settings(cfg: SearchConfig) -> SearchSettings:
    settings = dataclasses.replace(cfg.settings)
    settings.train = dataclasses.replace(settings.train, seed=cfg.seed, device=cfg.device)
    return settings.validate()


def _runtime(cfg: SearchConfig, settings: SearchSettings, study: optuna.Study) -> SearchSettings:
    """The latency runtime made concrete (a resumed study keeps its own; another is refused),
    and whether trials are timed in it (latency ranks or limits them) or only the front is,
    after the search (``autokd.runtime_front``)."""
    cost = resolve_runtime(check_runtime(study, settings.cost))
    per_trial = settings.needs_latency or cfg.strategy_options.get("target_metric") == "latency"
    cost = dataclasses.replace(cost, defer_runtime=cost.runtime != "torch" and not per_trial)
    return dataclasses.replace(settings, cost=cost)


def prepare(cfg: SearchConfig) -> tuple[DataSplits, SearchSpace, StudyPaths]:
    """Data, space and results folder; fails fast (before a teacher is trained) when the
    family cannot take this data or the folder cannot be written."""
    cfg.data = hf_data_config(cfg.data, cfg.teacher)  # text: read with an hf: teacher's tokenizer
    data = load_data(cfg.data)
    space = load_space(cfg.space or default_space_name(data))
    if cfg.recipe:  # the modified YAML is what the study records, so workers/resume see it
        space = SearchSpace.from_dict(with_recipe(space.raw or {}, cfg.recipe), space.source)
    space = hf_space(space, cfg.teacher)
    build_student(space.family, hf_student_spec(space.family, {}, cfg.teacher), data.input_shape,
                  data.num_classes, tokens=data.tokens)
    _check_augment(space, data.kind)
    name = cfg.name or f"{_slug(cfg.data.source)}-{space.name}"
    paths = study_paths(name, cfg.results)
    check_results_dir(paths.root)
    return data, space, paths


def _check_augment(space: SearchSpace, kind: str) -> None:
    """Every augmentation the space can sample must suit this data (a crop for an MLP on a
    CSV), checked once here rather than failing every trial."""
    from autokd.data.augment import get_augment

    for p in space.group("training"):
        if p.name == "augment":
            for value in [p.value] if p.kind == "fixed" else p.choices:
                try:
                    get_augment(value, kind)
                except ConfigError as exc:
                    raise ConfigError(f"{space.source}: training.augment: {exc}") from None


def _resumed_strategy(name: str, url: str) -> str | None:
    """The strategy an existing study was started with (None for a new study)."""
    try:
        study = open_study(name, url, create=False)
    except StudyError:
        return None
    record = SearchRecord.of(study)
    return record.strategy if record.exists else None


def run_search(cfg: SearchConfig, progress: ProgressFn | None = None,
               on_ready: Any = None) -> SearchOutcome:
    """Create or resume the study and run the controller until the budget is spent."""
    budget = parse_budget(cfg.budget)
    check_seeds(cfg.baseline_seeds)
    settings = _settings(cfg)
    if cfg.strategy is not None:
        controller_module(cfg.strategy)  # an unknown strategy fails before any work
    data, space, paths = prepare(cfg)
    # the storage and the strategy's options (sampler, pruner, ...) fail before the teacher work
    url = storage_url(paths, cfg.storage)
    cfg.strategy = cfg.strategy or _resumed_strategy(paths.root.name, url) or DEFAULT_STRATEGY
    module = controller_module(cfg.strategy)
    study = module.open_for_search(paths.root.name, url, cfg, settings)
    settings = _runtime(cfg, settings, study)
    teacher, teacher_ref = _teacher(cfg, data, paths)
    data = apply_data_free(data, teacher, cfg.data)  # the study records the synthetic split
    full = dataclasses.replace(CostConfig(), latency=settings.cost.latency,
                               batch_size=settings.cost.batch_size, threads=settings.cost.threads,
                               device=settings.cost.device, runtime=settings.cost.runtime,
                               defer_runtime=settings.cost.defer_runtime)
    profile = teacher_profile(teacher, data, full)  # measured once, with full timing
    record = record_search(study, cfg, data, space, settings, profile, teacher_ref, budget, paths)
    write_config(paths, record, cfg.storage)
    requeued = recover_stale_trials(study) if cfg.storage is None else []
    outcome = SearchOutcome(study, paths, "finished", record.teacher, budget, requeued)
    if on_ready is not None:
        on_ready(outcome)
    if budget.trials is not None and budget_used(study) >= budget.trials:
        outcome.status = "already_finished"
        try:  # a rerun finishes (or adds) the baselines and runtime latencies it lacks
            _baselines(cfg, study, data, teacher, settings)
            front_runtime_latency(study, data, teacher, settings.cost, full)
        finally:
            finalize(study, paths)
        return outcome
    objective = Objective(space, data, teacher, settings, paths, record.teacher,
                          strategy=cfg.strategy, scale=record.scale, artifacts=record.artifacts)
    try:
        if cfg.jobs > 1:  # N local `autokd worker` processes; this one only shows progress
            run_pool(study, paths, url, cfg.jobs, search_worker_args(cfg, paths), progress,
                     budget, cfg.seed)
        else:
            run_controllers(module, study, objective, budget, progress, cfg)
        _baselines(cfg, study, data, teacher, settings)
        front_runtime_latency(study, data, teacher, settings.cost, full)
    finally:
        finalize(study, paths)
    return outcome


def _baselines(cfg: SearchConfig, study: optuna.Study, data: DataSplits, teacher: Teacher,
               settings: SearchSettings) -> None:
    """Scratch twins with ``--baseline``; N-seed repeats too with ``--baseline-seeds N``."""
    if cfg.baseline or cfg.baseline_seeds:
        run_baselines(study, data, teacher, settings, seeds=cfg.baseline_seeds)


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


callable_module(__name__, search)  # ``autokd.search(...)`` calls the API function
