"""Scale-out: ``autokd worker`` joins a study from any process or machine; ``--jobs N`` locally.

The study is the whole hand-over. ``autokd search`` records in it (``autokd.runner``) what a
worker needs to rebuild the search: the resolved configuration, the search-space YAML itself
(its path may not exist elsewhere), the dataset reference with its split hash, and the teacher
file(s) as Optuna artifacts. A worker given only the storage URL loads all that, refuses to start
when its data or teacher hash differs, and runs trials until the study's budget, counted in the
storage across all workers, is spent (``autokd.controllers.distributed`` keeps that count exact,
retries trials of killed workers once, and rides out database outages).
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from dataclasses import dataclass, field

import optuna

from autokd.artifacts import teacher_file
from autokd.config import DataConfig, SearchConfig, from_dict
from autokd.controllers.base import Budget, ProgressFn
from autokd.controllers.distributed import (
    Backoff,
    is_storage_error,
    storage_error_text,
    worker_id,
)
from autokd.data import DataSplits, load_data
from autokd.datafree import apply_data_free
from autokd.errors import StudyError
from autokd.hf_teacher import hf_space
from autokd.objective import Objective
from autokd.pool import run_pool
from autokd.record import SearchRecord, TrialRecord
from autokd.runner import (
    check_results_dir,
    controller_module,
    finalize,
    remaining_budget,
    run_controllers,
    settings_of,
)
from autokd.space import SearchSpace
from autokd.study import StudyPaths, open_study, redact_url, storage_url, study_paths
from autokd.teachers import Teacher, load_teachers

__all__ = ["WorkerOptions", "WorkerOutcome", "run_worker", "run_worker_pool"]


@dataclass
class WorkerOptions:
    """What ``autokd worker`` takes; everything else comes from the study."""

    name: str
    storage: str | None = None
    results: str = "results"
    artifacts: str | None = None
    device: str = "auto"
    threads: int | None = None
    seed: int | None = None  # sampler seed; None: derived from host and pid (workers differ)
    trust: bool = False
    dataset: str | None = None  # the same data at another path on this machine
    retry_seconds: float = 120.0  # how long to wait for an unreachable database


@dataclass
class WorkerOutcome:
    study: optuna.Study
    paths: StudyPaths
    status: str  # "finished" | "already_finished"
    ran: int = 0  # trials this worker finished
    budget: Budget = field(default_factory=Budget)


def _open(opts: WorkerOptions) -> tuple[optuna.Study, str, SearchRecord]:
    paths = study_paths(opts.name, opts.results)
    url = opts.storage or os.environ.get("AUTOKD_STORAGE")
    if url is None:
        if not paths.db.exists():
            raise StudyError(f"give --storage URL (or set AUTOKD_STORAGE): no local study "
                             f"{paths.db} to join")
        url = storage_url(paths, None)
    study = open_study(opts.name, storage_url(paths, url), create=False)
    record = SearchRecord.of(study)
    if not record.exists or not record.data:
        raise StudyError(f"study {opts.name!r} in {redact_url(url)} does not record its search "
                         "configuration; start or resume it with `autokd search` first")
    return study, url, record


def _search_config(record: SearchRecord, opts: WorkerOptions, url: str) -> SearchConfig:
    data = from_dict(DataConfig, record.data)
    if opts.dataset:
        data = dataclasses.replace(data, source=opts.dataset)
    seed = opts.seed if opts.seed is not None else \
        int(record.seed) + zlib.crc32(worker_id().encode()) % 100_000
    return SearchConfig(
        data=data.validate(), teacher=[t["ref"] for t in record.teachers], trust=opts.trust,
        space=record.space, strategy=record.strategy, sampler=record.sampler,
        pruner=record.pruner, tuner=record.tuner, settings=settings_of(record, opts.device),
        name=opts.name, results=opts.results, storage=url, seed=seed, device=opts.device,
        strategy_options=record.strategy_options or {}, artifacts=opts.artifacts)


def _check_data(data: DataSplits, study: optuna.Study, record: SearchRecord) -> None:
    if record.dataset_hash != data.split_hash:
        extra = ", and for --data-free the same AUTOKD_DATAFREE_STEPS" \
            if "data_free" in data.meta else ""
        raise StudyError(f"this worker's data differs from study {study.study_name!r}: "
                         f"{data.name} splits to {data.split_hash} here but the study ran on "
                         f"{record.dataset_hash} (same data, fractions and --data-seed "
                         f"needed{extra}); not starting")


def _teacher(record: SearchRecord, study: optuna.Study, opts: WorkerOptions, paths: StudyPaths,
             data: DataSplits) -> Teacher:
    location = opts.artifacts or record.artifacts or str(paths.root / "artifacts")
    refs = [teacher_file(entry, location, paths) for entry in record.teachers]
    teacher = load_teachers(refs, trust=opts.trust, data=data)
    if teacher.hash != record.teacher_hash:
        raise StudyError(f"this worker's teacher differs from study {study.study_name!r}: hash "
                         f"{teacher.hash} here, {record.teacher_hash} in the study; not starting")
    return teacher


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def run_worker(opts: WorkerOptions, progress: ProgressFn | None = None) -> WorkerOutcome:
    """Join study ``opts.name`` and run trials until its budget is spent.

    Raises:
        StudyError: no such study, data or teacher differ from the study's, the teacher cannot
            be fetched, or the database stayed unreachable past ``opts.retry_seconds`` (or was
            lost while the worker was starting).
    """
    try:
        return _run_worker(opts, progress)
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        raise StudyError(f"lost the connection to the study's storage while starting: "
                         f"{storage_error_text(exc)}") from None


def _run_worker(opts: WorkerOptions, progress: ProgressFn | None) -> WorkerOutcome:
    _set_threads(opts.threads)
    study, url, record = _open(opts)
    paths = study_paths(opts.name, opts.results)
    check_results_dir(paths.root)
    cfg = _search_config(record, opts, url)
    data = load_data(cfg.data)
    if cfg.data.data_free is None:
        _check_data(data, study, record)
    teacher = _teacher(record, study, opts, paths, data)
    data = apply_data_free(data, teacher, cfg.data)  # the search's synthetic split (cached)
    _check_data(data, study, record)
    space = hf_space(SearchSpace.from_dict(record.space_yaml, record.space or "<study>"),
                     [entry.get("ref") for entry in record.teachers])
    budget = remaining_budget(record)
    if budget.spent(study):
        return WorkerOutcome(study, paths, "already_finished", 0, budget)
    module = controller_module(cfg.strategy)
    study = module.open_for_search(opts.name, url, cfg, cfg.settings)
    objective = Objective(space, data, teacher, cfg.settings, paths, record.teacher,
                          strategy=cfg.strategy, scale=record.scale,
                          artifacts=opts.artifacts or record.artifacts)
    me = worker_id()
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    try:
        run_controllers(module, study, objective, budget, progress, cfg,
                        Backoff(total=opts.retry_seconds))
    finally:
        finalize(study, paths)
    ran = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished()
              and t.number not in before and TrialRecord.of(t).worker == me)
    return WorkerOutcome(study, paths, "finished", ran, budget)


def run_worker_pool(opts: WorkerOptions, jobs: int,
                    progress: ProgressFn | None = None) -> WorkerOutcome:
    """``autokd worker --jobs N``: N local workers with ``opts``, one progress stream."""
    study, url, record = _open(opts)
    paths = study_paths(opts.name, opts.results)
    budget = remaining_budget(record)
    if budget.spent(study):
        return WorkerOutcome(study, paths, "already_finished", 0, budget)
    args = ["--results", opts.results, "--device", opts.device,
            "--retry-seconds", str(opts.retry_seconds)]
    for flag, value in (("--artifacts", opts.artifacts), ("--dataset", opts.dataset)):
        args += [flag, value] if value else []
    args += ["--trust"] if opts.trust else []
    seed = opts.seed if opts.seed is not None else int(record.seed)
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    run_pool(study, paths, url, jobs, args, progress, budget, seed)
    finalize(study, paths)
    ran = sum(1 for t in study.get_trials(deepcopy=False)
              if t.state.is_finished() and t.number not in before)
    return WorkerOutcome(study, paths, "finished", ran, budget)
