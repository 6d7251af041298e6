"""Where the exported student comes from: the search's data, teacher and kept weights.

Why the hashes: weights the search kept are reused by default; otherwise (or on request) the
student is trained again with its recorded recipe, against the search's own teacher and data
split. Both are checked against the hashes the study recorded, so an export never mixes runs.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial
from torch import nn

from autokd.config import CostConfig, DataConfig, TrainConfig, from_dict
from autokd.data import DataSplits, load_data
from autokd.distill import KDConfig
from autokd.errors import ExportError, TeacherError
from autokd.pipeline import run_distillation
from autokd.record import SearchRecord, TrialRecord
from autokd.study import StudyPaths
from autokd.teachers import Teacher, load_checkpoint, load_teachers, network_teacher

__all__ = ["RETRAIN_FACTOR", "assistant_teacher", "cost_config", "kept_weights", "retrain",
           "search_epochs", "student_model", "study_data", "study_teacher", "trial_train_config"]

logger = logging.getLogger(__name__)
RETRAIN_FACTOR = 2


def _config_yaml(paths: StudyPaths) -> dict[str, Any]:
    """The study's config.yaml as plain data ({} when absent; never runs YAML tags)."""
    if not paths.config.exists():
        return {}
    try:
        cfg = yaml.safe_load(paths.config.read_text()) or {}
    except yaml.YAMLError:
        raise ExportError(f"{paths.config} is not valid YAML") from None
    return cfg if isinstance(cfg, dict) else {}


def study_data(study: optuna.Study, paths: StudyPaths) -> DataSplits:
    """The search's data split, checked against the hash the study recorded."""
    record = SearchRecord.of(study)
    raw = record.data or _config_yaml(paths).get("dataset")  # an early 0.1 study: config.yaml
    if not raw:
        raw = {"source": (record.dataset or {}).get("name", "digits")}
    data = load_data(from_dict(DataConfig, raw).validate())
    expected = record.dataset_hash
    if expected and data.split_hash != expected:
        raise ExportError(f"the dataset split now hashes to {data.split_hash}, but the search "
                          f"used {expected}: the data or its split changed since the search")
    return data


def _teacher_refs(study: optuna.Study, paths: StudyPaths) -> list[str]:
    """Teacher sources; a file missing where the search saw it is looked up in the study dir."""
    text = SearchRecord.of(study).teacher_ref or _config_yaml(paths).get("teacher")
    if not text:
        raise ExportError("the study recorded no teacher; retraining needs one")
    refs = []
    for ref in str(text).split(", "):
        local = paths.root / Path(ref).name
        refs.append(str(local) if not Path(ref).exists() and local.exists() else ref)
    return refs


def study_teacher(study: optuna.Study, paths: StudyPaths, data: DataSplits, *,
                  trust: bool = False) -> Teacher:
    """The search's teacher (or ensemble), checked against the recorded hash.

    ``trust`` comes from the caller, never from config.yaml: a study directory made by someone
    else must not be able to switch on loading code by writing ``trust: true`` there.
    """
    try:
        teacher = load_teachers(_teacher_refs(study, paths), trust=trust, data=data)
    except TeacherError as exc:
        raise ExportError(f"retraining needs the search's teacher: {exc}") from None
    expected = SearchRecord.of(study).teacher_hash
    if expected and teacher.hash != expected:
        raise ExportError(f"the teacher now hashes to {teacher.hash}, but the search used "
                          f"{expected}; retraining would distil from another teacher")
    return teacher


def kept_weights(paths: StudyPaths, t: FrozenTrial, data: DataSplits) -> nn.Module | None:
    """The weights the search kept for this trial, or None when it did not keep them."""
    path = paths.root / _checkpoint(t)
    if not path.exists():
        return None
    try:
        model, payload = load_checkpoint(path)
    except TeacherError as exc:
        raise ExportError(f"kept weights unusable: {exc}; rerun with --retrain") from None
    used = ((payload.get("meta") or {}).get("data") or {}).get("split_hash")
    if used and used != data.split_hash:
        raise ExportError(f"{path} was trained on split {used}, not {data.split_hash}")
    return model


def _checkpoint(t: FrozenTrial) -> str:
    """The kept weights' path relative to the study folder."""
    return TrialRecord.of(t).checkpoint or f"students/{t.number}/student.pt"


def search_epochs(study: optuna.Study, t: FrozenTrial) -> int:
    """Epochs the trial trained for: over all its rungs (``--strategy asha``), else the search's
    override, else the space's, else default."""
    total = TrialRecord.of(t).epochs_total
    if total:
        return int(total)
    settings = SearchRecord.of(study).settings
    return int(settings.get("epochs") or (TrialRecord.of(t).train or {}).get("epochs")
               or (settings.get("train") or {}).get("epochs") or TrainConfig().epochs)


def trial_train_config(study: optuna.Study, t: FrozenTrial, epochs: int) -> TrainConfig:
    """The search's training settings with the trial's own on top, at ``epochs`` (a rung trial
    reproduced at its own epochs keeps the schedule of its candidate's full run)."""
    base = dict(SearchRecord.of(study).settings.get("train") or {})
    rec = TrialRecord.of(t)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    schedule = rec.schedule_epochs if epochs == rec.epochs_total else None
    merged = {**base, **(rec.train or {}), "epochs": epochs, "schedule_epochs": schedule,
              "seed": rec.get("seed", base.get("seed", 0))}
    return TrainConfig(**{k: v for k, v in merged.items() if k in names}).validate()


def cost_config(study: optuna.Study) -> CostConfig:
    """Full default timing (not the search's cheaper per-trial timing), at the search's batch
    size, threads and device, so export-time numbers are the careful ones."""
    raw = SearchRecord.of(study).settings.get("cost") or {}
    keep = {k: raw[k] for k in ("batch_size", "threads", "device") if raw.get(k) is not None}
    return CostConfig(**keep)


def retrain(study: optuna.Study, paths: StudyPaths, t: FrozenTrial, data: DataSplits,
            epochs: int, *, trust: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Train the trial's student again with its recorded recipe, seed and teacher."""
    rec = TrialRecord.of(t)
    teacher = study_teacher(study, paths, data, trust=trust)
    cfg = trial_train_config(study, t, epochs)
    kd = KDConfig(**(rec.recipe or {})).validate()
    if kd.assistant != "none" and kd.uses_teacher:
        teacher = assistant_teacher(study, paths, rec, data, teacher, kd, cfg)
    logger.info("retraining trial %d for %d epochs", t.number, cfg.epochs)
    run = run_distillation(data, teacher, rec.family, rec.spec, kd, cfg,
                           CostConfig(latency=False))  # timed once, by the caller
    info = {"how": "retrained", "epochs": cfg.epochs, "best_epoch": run.train.best_epoch,
            "train_seconds": run.train.train_seconds}
    return run.model, info


def assistant_teacher(study: optuna.Study, paths: StudyPaths, rec: TrialRecord,
                      data: DataSplits, teacher: Teacher, kd: KDConfig,
                      cfg: TrainConfig) -> Teacher:
    """The assistant that taught a trial (recipe ``assistant: auto``): the parent trial's kept
    weights, else the one kept beside the trial, else one of the recorded spec trained again
    from the teacher (``autokd.chains``)."""
    from autokd.chains import train_assistant

    path = None
    if rec.assistant_of is not None and int(rec.assistant_of) < len(study.trials):
        path = paths.root / _checkpoint(study.trials[int(rec.assistant_of)])
    elif rec.get("assistant_checkpoint"):
        path = paths.root / rec.get("assistant_checkpoint")
    if path is not None and path.exists():
        model, _ = load_checkpoint(path)
        return network_teacher(model, f"assistant of trial {rec.assistant_of}", "assistant")
    spec = rec.get("assistant_spec")
    if not isinstance(spec, dict):
        raise ExportError("this trial was taught by an assistant the study no longer has; "
                          "export a trial taught by the teacher")
    family = rec.get("assistant_family", rec.family)
    logger.info("training the trial's assistant (%s) again", family)
    return train_assistant(data, teacher, family, spec, kd, cfg,
                           float(rec.get("assistant_target_flops", 0.0))).teacher


def student_model(study: optuna.Study, paths: StudyPaths, t: FrozenTrial, data: DataSplits,
                  retrain_it: bool, epochs: int | None, *,
                  trust: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The kept weights; else a student trained again.

    ``retrain_it`` trains for ``epochs`` (default ``RETRAIN_FACTOR`` x the search's epochs; for
    a rung trial of ``--strategy asha``, x its candidate's full epochs).
    Without it, a trial whose weights were not kept is reproduced with the search's own epochs
    and seed, so the export matches what the report showed for that trial.
    """
    model = None if retrain_it else kept_weights(paths, t, data)
    if model is not None:
        return model, {"how": "reused", "checkpoint": _checkpoint(t),
                       "epochs": TrialRecord.of(t).epochs_run}
    factor = RETRAIN_FACTOR if retrain_it else 1
    full = TrialRecord.of(t).schedule_epochs if retrain_it else None  # a rung's full run
    model, info = retrain(study, paths, t, data,
                          epochs or factor * (full or search_epochs(study, t)), trust=trust)
    info["reason"] = "--retrain" if retrain_it else "the search kept no weights for this trial"
    return model, info
