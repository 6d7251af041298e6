"""``autokd export`` and ``autokd evaluate``: pick a student, export it, prove the export right.

Why it is built like this:
- A student is picked only among complete, feasible trials (the search's hard limits hold), by
  trial number, by a named rule, or by a ``--where`` filter parsed by a tiny grammar (never
  ``eval``): a filter string may come from a script or a shared command line
  (:mod:`autokd.export.select`, :mod:`autokd.export.where`).
- Weights the search kept for Pareto members are reused by default; otherwise (or with
  ``retrain``) the student is trained again with its recorded recipe, against the search's own
  teacher and data split, both checked by hash so an export never mixes runs
  (:mod:`autokd.export.source`).
- Everything is written to a staging folder and renamed into place only after every artifact
  verified: TorchScript, torch.export and ONNX match the PyTorch student within ``PARITY_TOL``
  on the whole test split, and each format's test accuracy equals the card's. A failed export
  leaves nothing (:mod:`autokd.export.formats`, :mod:`autokd.export.verify`,
  :mod:`autokd.export.publish`).
- INT8 (``student.int8.onnx``) is the QAT student's deployed model, or post-training
  quantisation of a float student (the baseline); it is exempt from float parity, reproduces
  the INT8 model whose accuracy the card states, and reports its deviation from the float
  student (:mod:`autokd.export.int8`).
- The model card records sha256 of every artifact, so ``evaluate`` and ``load_student`` refuse
  a file that was changed after export (:mod:`autokd.export.card`).

This module holds the entry point, :func:`export_student`, and re-exports the public names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autokd._api import callable_module
from autokd.cost import measure_cost
from autokd.export import hf as _hf  # noqa: F401  (registers the hf student formats)
from autokd.export.card import (
    CARD_JSON,
    CARD_MD,
    ExportRecord,
    build_card,
    card_markdown,
    checkpoint_meta,
    write_card,
)
from autokd.export.formats import (
    ARTIFACT_NAMES,
    FORMATS,
    ArtifactFormat,
    OnnxModule,
    applicable_formats,
    artifact_format,
    format_names,
    parse_formats,
    run_artifact,
    sha256_file,
    write_artifacts,
)
from autokd.export.int8 import (
    INT8,
    calibration_samples,
    float_student,
    int8_method,
    int8_reference,
    int8_sizes,
)
from autokd.export.publish import export_target, staged
from autokd.export.select import PICKS, select_trial
from autokd.export.source import (
    RETRAIN_FACTOR,
    cost_config,
    kept_weights,
    search_epochs,
    student_model,
    study_data,
    study_teacher,
)
from autokd.export.verify import (
    PARITY_TOL,
    check_card,
    evaluate_artifact,
    latency_table,
    load_student,
    test_metrics,
    verify_artifacts,
)
from autokd.export.where import parse_where, where_matches, where_metrics
from autokd.quant import is_qat
from autokd.runtime_front import runtime_latency
from autokd.study import StudyPaths

__all__ = [
    "ARTIFACT_NAMES",
    "CARD_JSON",
    "CARD_MD",
    "FORMATS",
    "PARITY_TOL",
    "PICKS",
    "RETRAIN_FACTOR",
    "ArtifactFormat",
    "ExportResult",
    "OnnxModule",
    "applicable_formats",
    "artifact_format",
    "build_card",
    "card_markdown",
    "check_card",
    "cost_config",
    "evaluate_artifact",
    "export_student",
    "format_names",
    "kept_weights",
    "latency_table",
    "load_student",
    "parse_formats",
    "parse_where",
    "run_artifact",
    "search_epochs",
    "select_trial",
    "sha256_file",
    "student_model",
    "study_data",
    "study_teacher",
    "test_metrics",
    "verify_artifacts",
    "where_matches",
    "where_metrics",
    "write_artifacts",
    "write_card",
]


@dataclass
class ExportResult:
    """What ``export_student`` wrote and measured."""

    trial: int
    directory: Path
    artifacts: dict[str, Path]
    card: dict[str, Any]
    selection: str
    warnings: list[str] = field(default_factory=list)

    @property
    def latency(self) -> dict[str, Any]:
        """Search-time vs export-time latency (and per exported format)."""
        return self.card["costs"]["latency"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as text), for ``autokd export --json``."""
        return {"trial": self.trial, "directory": str(self.directory),
                "artifacts": {k: str(v) for k, v in self.artifacts.items()},
                "selection": self.selection, "warnings": self.warnings, "card": self.card}


def export_student(study: optuna.Study, paths: StudyPaths, *, trial: int | None = None,
                   pick: str | None = None, where: str | None = None,
                   min_retention: float = 0.95, retrain: bool = False, epochs: int | None = None,
                   formats: tuple[str, ...] | list[str] | str | None = None,
                   out: str | Path | None = None, trust: bool = False) -> ExportResult:
    """Pick, (re)obtain, measure, export, verify and publish one student.

    Args:
        study, paths: The study and its results directory.
        trial, pick, where: How to choose (one of them; default ``pick="accuracy"``).
        min_retention: Validation retention that ``pick`` smallest/fastest must keep.
        retrain: Train again with the recorded recipe even if the search kept weights.
        epochs: Training epochs when the student is trained again (default: with ``retrain``
            the search's epochs x ``RETRAIN_FACTOR``; for a trial whose weights were not kept,
            the search's epochs, which reproduces the trial).
        formats: Any of the registered ``FORMATS`` (``pt``, ``torchscript``, ``pt2``,
            ``onnx``, ``int8``, and for ``hf`` students ``hf_onnx``, ``hf``); default every
            format the student fits, ``int8`` only for a student trained with
            ``quantize: int8`` (for a float student it is the post-training baseline).
        out: Output directory (default ``results/<study>/export/<trial>``).
        trust: Allow a teacher whose loading runs code when the student is trained again
            (``--trust``; what the study's config.yaml says is not enough).

    Raises:
        ConfigError, ExportError: Bad selection or output; a failed export writes nothing.
    """
    named = None if formats is None else parse_formats(formats)
    t, selection, notes = select_trial(study, trial=trial, pick=pick, where=where,
                                       min_retention=min_retention)
    target = export_target(paths, t.number, out)
    with staged(target) as staging:
        ex = _prepare(study, paths, t, selection, retrain, epochs, trust)
        formats = applicable_formats(named, ex.model)
        card = _produce(ex, staging, formats)
    artifacts = {fmt: target / FORMATS.get(fmt).filename for fmt in formats}
    artifacts.update(card_json=target / CARD_JSON, card_md=target / CARD_MD)
    return ExportResult(t.number, target, artifacts, card, selection, notes)


def _prepare(study: optuna.Study, paths: StudyPaths, t: FrozenTrial, selection: str,
             retrain_it: bool, epochs: int | None, trust: bool = False) -> ExportRecord:
    """The student (kept or trained again) with its test metrics and costs."""
    data = study_data(study, paths)
    model, weights = student_model(study, paths, t, data, retrain_it, epochs, trust=trust)
    model = model.cpu().eval()
    ex = ExportRecord(study, paths, t, selection, data, model, weights)
    ex.float_model = float_student(model)  # what the float artifacts hold
    ex.metrics = ex.float_metrics = test_metrics(ex.float_model, data)
    ex.cost = measure_cost(ex.float_model, data.input_shape, cost_config(study)).to_dict()
    return ex


def _produce(ex: ExportRecord, folder: Path, formats: tuple[str, ...]) -> dict[str, Any]:
    """Write, verify and time every artifact into ``folder``, then the card."""
    cfg = cost_config(ex.study)
    example = ex.data.head("test", 2)  # (2, *input_shape): batch > 1 so the batch axis stays free
    floats = tuple(f for f in formats if f != INT8)
    calibration = reference = None
    if INT8 in formats:
        calibration = None if is_qat(ex.model) else calibration_samples(ex.data)
        reference = int8_reference(ex.model, example, calibration, cfg.threads)
        ex.int8 = {"method": int8_method(ex.model),
                   "calibration_samples": None if calibration is None else len(calibration),
                   **test_metrics(reference, ex.data)}
        if is_qat(ex.model):  # the deployed model is the INT8 one: the card states its numbers
            ex.metrics = {s: ex.int8[s] for s in ("val", "test")}
    meta = checkpoint_meta(ex)
    files = write_artifacts(ex.float_model, folder, floats, meta, example)
    if INT8 in formats:
        files |= write_artifacts(ex.model, folder, (INT8,), meta, example, calibration)
        ex.int8["sizes"] = int8_sizes(files[INT8], files.get("onnx"))
    ex.files = {f: files[f] for f in formats}
    ex.verification = verify_artifacts(ex.float_model, ex.files, ex.data, cfg.threads,
                                       int8_reference=reference)
    ex.latency = latency_table(ex.trial, ex.cost, ex.files, ex.data.input_shape, cfg,
                               ex.data.tokens.vocab_size if ex.data.tokens else None)
    deployed = (runtime_latency(ex.study).get("trials") or {}).get(str(ex.trial.number))
    if deployed:  # the front re-timed in the search's deploy runtime after the search
        ex.latency["search_deploy"] = {k: deployed.get(k) for k in
                                       ("latency_ms", "latency_ms_batch", "latency_runtime")}
    card = build_card(ex)
    write_card(card, folder, ex.files)
    return card


callable_module(__name__, export_student)  # ``autokd.export(...)`` calls export_student
