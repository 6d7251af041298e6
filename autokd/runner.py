"""What ``autokd search`` and ``autokd worker`` share: the study's record, the run loop, finalize.

Why one module: a search and a worker joining it must agree on how the search is recorded (one
``SearchRecord``, written here by the search and read here by workers), on how the budget is
read, how a controller runs across database outages and what is written when it stops. Both
import this module; neither imports the other's internals.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import yaml

from autokd import __version__
from autokd.artifacts import publish_teacher, store_location
from autokd.config import CostConfig, SearchConfig, SearchSettings, TrainConfig, from_dict, to_dict
from autokd.controllers import STRATEGIES
from autokd.controllers.base import Budget, ProgressFn
from autokd.controllers.distributed import Backoff, is_storage_error, run_resilient
from autokd.data import DataSplits
from autokd.errors import StudyError
from autokd.front import pareto_front
from autokd.objective import Objective
from autokd.record import SEARCH_ATTR, SearchRecord
from autokd.scale import majority_accuracy, space_scale
from autokd.space import SearchSpace
from autokd.study import StudyPaths, atomic_write_text, redact_url
from autokd.tables import write_tables

__all__ = [
    "check_results_dir",
    "controller_module",
    "finalize",
    "record_search",
    "remaining_budget",
    "run_controllers",
    "settings_of",
    "write_config",
]

logger = logging.getLogger(__name__)


def check_results_dir(root: Path) -> None:
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


def controller_module(strategy: str) -> Any:
    """The module of a search strategy (``open_for_search``, ``make_controller``).

    Imported on demand: the ``nni`` strategy is an optional extra.
    """
    return importlib.import_module(STRATEGIES.get(strategy))


# -- the study's record of the search -----------------------------------------------------------
def record_search(study: optuna.Study, cfg: SearchConfig, data: DataSplits, space: SearchSpace,
                  settings: SearchSettings, profile: dict[str, Any], teacher_ref: str,
                  budget: Budget, paths: StudyPaths) -> SearchRecord:
    """Check a resumed study matches, then record (or refresh) the search in one attribute.

    Teacher files are uploaded as study artifacts once (a resumed search reuses them when the
    file is unchanged).
    """
    old = SearchRecord.of(study)
    if old.exists and old.dataset_hash != data.split_hash:
        raise StudyError(f"study {study.study_name!r} was run on another dataset split "
                         f"({old.dataset_hash} != {data.split_hash}); use another --name")
    if old.exists and old.teacher_hash not in (None, profile["hash"]):
        raise StudyError(f"study {study.study_name!r} was run with another teacher "
                         f"({old.teacher_hash} != {profile['hash']}); use another --name")
    old_metric = (old.settings or {}).get("metric", "accuracy")
    if old.exists and old_metric != settings.metric:
        raise StudyError(f"study {study.study_name!r} selects by --metric {old_metric}, not "
                         f"{settings.metric}; use the same --metric or another --name")
    if old.exists and SEARCH_ATTR not in study.user_attrs:
        logger.info("study %s was written by autokd 0.1; its settings are now also recorded in "
                    "the current layout", study.study_name)
    location = store_location(cfg.artifacts, paths)
    known = {t.get("sha"): t for t in old.teachers if t.get("artifact_id")}
    refs = cfg.teacher or [str(paths.root / "teacher.pt")]
    record = SearchRecord(
        version=__version__,
        objectives=old.objectives if old.exists else settings.objective_names,
        mode=old.mode if old.exists else ("score" if settings.score else "pareto"),
        data=to_dict(cfg.data), dataset={**data.describe(), "class_names": _names(data)},
        dataset_hash=data.split_hash,
        teacher_ref=teacher_ref, teacher_hash=profile["hash"],
        teacher=old.teacher if old.exists and old.teacher else profile,
        teachers=[publish_teacher(study, ref, location, known) for ref in refs],
        trust=cfg.trust, artifacts=location, space=space.source, space_yaml=_space_yaml(space),
        space_name=space.name, family=space.family,
        settings=old.settings if old.exists else dataclasses.asdict(settings),
        metric=settings.metric, majority_accuracy=majority_accuracy(data),
        limits=old.limits if old.exists else settings.limits(),
        budget={"trials": budget.trials, "seconds": budget.seconds}, strategy=cfg.strategy,
        sampler=cfg.sampler, pruner=cfg.pruner, tuner=cfg.tuner, seed=cfg.seed,
        strategy_options=cfg.strategy_options, device=cfg.device, baseline=cfg.baseline,
        baseline_seeds=cfg.baseline_seeds,
        started_at=time.time(),  # a time budget ends at started_at + seconds for every worker
        scale=old.scale if old.exists and old.scale else _scale(space, data, settings, profile))
    study.set_user_attr(SEARCH_ATTR, record.to_dict())
    return record


def _names(data: DataSplits) -> list[str]:
    """The data's class names, for reports (per-class accuracy)."""
    return [str(n) for n in (getattr(data, "class_names", None) or [])]


def _scale(space: SearchSpace, data: DataSplits, settings: SearchSettings,
           profile: dict[str, Any]) -> dict[str, Any]:
    """The hypervolume's scale, fixed before the first trial (empty in score mode)."""
    top = profile.get(f"val_{settings.metric}")
    if settings.score or top is None:
        return {}
    scale = space_scale(space, data, top, settings.objective_names, settings.cost,
                        metric=settings.metric)
    return scale.to_dict()


def _space_yaml(space: SearchSpace) -> Any:
    """The space's YAML (``--recipe`` applied): a worker elsewhere rebuilds the space from it."""
    if space.raw is not None:
        return space.raw
    try:
        return yaml.safe_load(Path(space.source).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StudyError(f"cannot re-read the search space {space.source} to record it: "
                         f"{exc}") from None


def write_config(paths: StudyPaths, record: SearchRecord, storage: str | None) -> None:
    """results/<name>/config.yaml: the record as readable YAML (never credentials)."""
    doc = {"name": paths.root.name, **record.to_dict(),
           "storage": redact_url(storage) if storage else None}
    doc.pop("space_yaml")
    doc.pop("teacher")
    atomic_write_text(paths.config, yaml.safe_dump(doc, sort_keys=False))


def settings_of(record: SearchRecord, device: str) -> SearchSettings:
    """The search's settings as recorded, trained on ``device`` (a worker's own)."""
    raw = dict(record.settings)
    train = from_dict(TrainConfig, raw.pop("train", None))
    cost = from_dict(CostConfig, raw.pop("cost", None))
    train.device = device
    return from_dict(SearchSettings, {**raw, "train": train, "cost": cost}).validate()


def remaining_budget(record: SearchRecord) -> Budget:
    """The budget left: trials (counted in the storage), or the time left on the clock."""
    raw = record.budget or {}
    if raw.get("seconds"):
        started = float(record.started_at or time.time())
        return Budget(seconds=max(0.0, float(raw["seconds"]) - (time.time() - started)))
    return Budget(trials=int(raw.get("trials") or 0))


# -- running -----------------------------------------------------------------------------------
def run_controllers(module: Any, study: optuna.Study, objective: Objective, budget: Budget,
                    progress: ProgressFn | None, cfg: SearchConfig,
                    backoff: Backoff | None = None) -> None:
    """Run the strategy's controller until the budget is spent, again after each outage.

    A time budget keeps one deadline across restarts, so an outage does not extend it.
    """
    deadline = time.monotonic() + budget.seconds if budget.seconds is not None else None

    def once() -> None:
        left = budget if deadline is None else \
            Budget(seconds=max(0.0, deadline - time.monotonic()))
        module.make_controller(study, objective, left, progress, cfg).run()

    run_resilient(once, study, backoff)


def finalize(study: optuna.Study, paths: StudyPaths) -> None:
    """Write the tables and keep student weights only for the Pareto members (and trials still
    running in other workers, or holding a training state a multi-fidelity search may still
    continue); skipped with a warning while the storage is unreachable, so an outage error is
    not masked."""
    try:
        write_tables(study, paths)
        keep = {t.number for t in pareto_front(study, floor=False)}  # a floor may change
        keep |= {t.number for t in study.get_trials(deepcopy=False) if not t.state.is_finished()}
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        logger.warning("tables not written: the study's storage is unreachable")
        return
    if not paths.students.exists():
        return
    for child in paths.students.iterdir():
        if child.is_dir() and child.name.isdigit() and int(child.name) not in keep \
                and not paths.resume_state(int(child.name)).exists():
            shutil.rmtree(child, ignore_errors=True)
