"""``autokd export`` and ``autokd evaluate``: pick a student, export it, prove the export right.

Why it is built like this:
- A student is picked only among complete, feasible trials (the search's hard limits hold), by
  trial number, by a named rule, or by a ``--where`` filter parsed by a tiny grammar (never
  ``eval``): a filter string may come from a script or a shared command line.
- Weights the search kept for Pareto members are reused by default; otherwise (or with
  ``retrain``) the student is trained again with its recorded recipe, against the search's own
  teacher and data split, both checked by hash so an export never mixes runs.
- Everything is written to a staging folder and renamed into place only after every artifact
  verified: TorchScript and ONNX match the PyTorch student within ``PARITY_TOL`` on the whole
  test split, and each format's test accuracy equals the card's. A failed export leaves nothing.
- The model card records sha256 of every artifact, so ``evaluate`` and ``load_student`` refuse
  a file that was changed after export.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial
from torch import nn

from autokd.config import CostConfig
from autokd.cost import measure_cost, measure_latency
from autokd.data import DataSplits
from autokd.errors import ExportError
from autokd.export.formats import (
    ARTIFACT_NAMES,
    FORMATS,
    ArtifactFormat,
    OnnxModule,
    artifact_format,
    format_names,
    parse_formats,
    run_artifact,
    sha256_file,
    write_artifacts,
)
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
from autokd.export.where import parse_where, where_matches, where_metrics
from autokd.pipeline import compare
from autokd.report import storage_label
from autokd.study import StudyPaths, redact_url

__all__ = [
    "ARTIFACT_NAMES",
    "FORMATS",
    "PARITY_TOL",
    "PICKS",
    "RETRAIN_FACTOR",
    "ArtifactFormat",
    "ExportResult",
    "OnnxModule",
    "artifact_format",
    "cost_config",
    "evaluate_artifact",
    "export_student",
    "format_names",
    "kept_weights",
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
    "verify_artifacts",
    "where_matches",
    "where_metrics",
    "write_artifacts",
]

CARD_JSON, CARD_MD = "model_card.json", "model_card.md"
PARITY_TOL = 1e-4


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
        return {"trial": self.trial, "directory": str(self.directory),
                "artifacts": {k: str(v) for k, v in self.artifacts.items()},
                "selection": self.selection, "warnings": self.warnings, "card": self.card}


# -- running any artifact --------------------------------------------------------------------
@torch.inference_mode()
def _predict(model: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch]).float() for i in range(0, len(x), batch)])  # (N, K)


def verify_artifacts(model: nn.Module, files: dict[str, Path], data: DataSplits,
                     threads: int = 1) -> dict[str, Any]:
    """Every artifact against the PyTorch student on the whole test split.

    Raises:
        ExportError: An output differs by more than ``PARITY_TOL`` or a format's test accuracy
            differs from the PyTorch student's (the card's).
    """
    x, y = data.x_test, data.y_test
    ref = _predict(model, x)
    correct = int((ref.argmax(1) == y).sum())
    out: dict[str, Any] = {"test_samples": len(y), "tolerance": PARITY_TOL,
                           "reference_test_accuracy": correct / len(y)}
    for fmt, path in files.items():
        logits = _predict(run_artifact(path, fmt, threads), x)
        diff = float((logits - ref).abs().max())
        got = int((logits.argmax(1) == y).sum())
        out[fmt] = {"max_abs_diff": diff, "test_accuracy": got / len(y), "passed": True}
        if not diff <= PARITY_TOL:
            raise ExportError(f"{fmt} export does not match the PyTorch student: max abs "
                              f"difference {diff:.2e} > {PARITY_TOL:g}")
        if got != correct:
            raise ExportError(f"{fmt} export scores {got}/{len(y)} on test, the PyTorch "
                              f"student {correct}/{len(y)}")
    return out


# -- measuring -------------------------------------------------------------------------------
def _latency_pair(model: nn.Module, shape: tuple[int, ...], cfg: CostConfig) -> dict[str, Any]:
    def timed(batch: int) -> float:
        return measure_latency(model, shape, batch, warmup=cfg.warmup, repeats=cfg.repeats,
                               threads=cfg.threads, min_block_s=cfg.min_block_s)[0]

    return {"latency_ms": timed(1), "latency_ms_batch": timed(cfg.batch_size)}


def latency_table(t: FrozenTrial, cost: dict[str, Any], files: dict[str, Path],
                  shape: tuple[int, ...], cfg: CostConfig) -> dict[str, Any]:
    """Search-time latency next to the re-measured one, plus each exported format's.

    The ``pt`` artifact is the in-memory student reloaded, so its row is ``export``.
    """
    out: dict[str, Any] = {
        "batch_size": cfg.batch_size, "threads": cfg.threads,
        "search": {k: t.user_attrs.get(k) for k in ("latency_ms", "latency_ms_batch")},
        "export": {k: cost.get(k) for k in ("latency_ms", "latency_ms_batch")},
    }
    for fmt in format_names():
        if fmt != "pt" and fmt in files:
            out[fmt] = _latency_pair(run_artifact(files[fmt], fmt, cfg.threads), shape, cfg)
    return out


def test_metrics(model: nn.Module, data: DataSplits) -> dict[str, Any]:
    """Accuracy and NLL of the student on val and test (what the card reports)."""
    out = {}
    for split in ("val", "test"):
        x, y = data.split(split)
        logits = _predict(model, x)
        out[split] = {"accuracy": int((logits.argmax(1) == y).sum()) / len(y),  # exact ratio
                      "nll": float(torch.nn.functional.cross_entropy(logits, y)),
                      "samples": len(y)}
    return out


# -- model card ------------------------------------------------------------------------------
@dataclass
class _Export:
    """Everything one export gathers on its way to the card."""

    study: optuna.Study
    paths: StudyPaths
    trial: FrozenTrial
    selection: str
    data: DataSplits
    model: nn.Module
    weights: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)


def _versions() -> dict[str, str]:
    import onnxruntime

    from autokd import __version__ as autokd_version

    return {"autokd": autokd_version, "torch": torch.__version__, "optuna": optuna.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def _checkpoint_meta(ex: _Export) -> dict[str, Any]:
    """Metadata stored inside student.pt (plain data, loadable with weights_only=True)."""
    a = ex.trial.user_attrs
    return {"data": ex.data.describe(), "recipe": a.get("recipe"), "train": a.get("train"),
            "metrics": {"val_accuracy": ex.metrics["val"]["accuracy"],
                        "test_accuracy": ex.metrics["test"]["accuracy"]},
            "teacher_hash": ex.study.user_attrs.get("teacher_hash"),
            "study": ex.study.study_name, "trial": ex.trial.number,
            "class_names": list(ex.data.class_names)}


def _teacher_card(study: optuna.Study) -> dict[str, Any]:
    profile = dict(study.user_attrs.get("teacher") or {})
    ref = study.user_attrs.get("teacher_ref")
    profile["ref"] = redact_url(str(ref)) if ref else None
    return profile


def build_card(ex: _Export) -> dict[str, Any]:
    """The model card as data (model_card.json); artifacts' hashes are added last."""
    a, teacher = ex.trial.user_attrs, ex.study.user_attrs.get("teacher") or {}
    test, val = ex.metrics["test"], ex.metrics["val"]
    ratios = compare({"test_accuracy": test["accuracy"], "val_accuracy": val["accuracy"],
                      **ex.cost}, teacher)
    return {
        "format": "autokd-model-card", "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"family": ex.model.family, "spec": ex.model.spec,
                  "input_shape": list(ex.model.input_shape),
                  "num_classes": ex.model.num_classes, "class_names": list(ex.data.class_names),
                  "input": "normalised like the training data (see dataset.normalizer)"},
        "dataset": {**ex.data.describe(), "normalizer": _normalizer(ex.data)},
        "teacher": _teacher_card(ex.study),
        "metrics": {"test": test, "val": val, "retention": ratios["retention"],
                    "val_retention": ratios["val_retention"],
                    "search": {k: a.get(k) for k in ("val_accuracy", "test_accuracy")}},
        "costs": {**{k: ex.cost.get(k) for k in ("params", "flops", "bytes",
                                                  "peak_memory_bytes")},
                  **{k: ratios[k] for k in ("params_compression", "flops_compression",
                                            "latency_speedup")}, "latency": ex.latency},
        "hyperparameters": {"recipe": a.get("recipe"), "train": a.get("train"),
                            "search_epochs": search_epochs(ex.study, ex.trial), "seed": a.get("seed")},
        "provenance": _provenance(ex),
        "verification": ex.verification,
    }


def _normalizer(data: DataSplits) -> dict[str, Any]:
    """JSON-safe normaliser description (means/stds as lists)."""
    return json.loads(json.dumps(data.normalizer, default=lambda o: np.asarray(o).tolist()))


def _provenance(ex: _Export) -> dict[str, Any]:
    return {"study": ex.study.study_name, "trial": ex.trial.number,
            "strategy": ex.trial.user_attrs.get("strategy"), "selection": ex.selection,
            "weights": ex.weights, "storage": storage_label(ex.study, ex.paths),
            "dataset_hash": ex.study.user_attrs.get("dataset_hash"),
            "teacher_hash": ex.study.user_attrs.get("teacher_hash"), "versions": _versions()}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def card_markdown(card: dict[str, Any]) -> str:
    """model_card.md: the card for people (same numbers as model_card.json)."""
    m, c, p, lat = card["metrics"], card["costs"], card["provenance"], card["costs"]["latency"]
    ds, t = card["dataset"], card["teacher"]
    lines = [
        f"# Model card: {p['study']} trial {p['trial']}\n",
        (f"A `{card['model']['family']}` student distilled by autokd ({p['strategy']} search), "
        f"picked by {p['selection']}; weights {p['weights']['how']}.\n"),
        "## Data\n", (f"- dataset: {ds['name']} ({ds['kind']}), input shape "
        f"{ds['input_shape']}, {ds['num_classes']} classes"),
        f"- split sizes: {ds['sizes']}; split hash `{ds['split_hash']}`",
        "\n## Teacher\n", (f"- {t.get('name')} (hash `{t.get('hash')}`): test accuracy "
        f"{_fmt(t.get('test_accuracy'))}, params {_fmt(t.get('params'))}, FLOPs "
        f"{_fmt(t.get('flops'))}, latency {_fmt(t.get('latency_ms'))} ms"),
        "\n## Metrics (test split unless noted)\n",
        (f"- test accuracy {_fmt(m['test']['accuracy'])} on {m['test']['samples']} samples "
        f"(NLL {_fmt(m['test']['nll'])}); retention {_fmt(m['retention'])}"),
        (f"- val accuracy {_fmt(m['val']['accuracy'])} (selection split); val retention "
        f"{_fmt(m['val_retention'])}"),
        (f"- at search time: val {_fmt(m['search']['val_accuracy'])}, test "
        f"{_fmt(m['search']['test_accuracy'])}"),
    ]
    lines += _md_costs(c, lat) + _md_hyper(card) + _md_verification(card) + _md_artifacts(card)
    return "\n".join(lines) + "\n"


def _md_costs(c: dict[str, Any], lat: dict[str, Any]) -> list[str]:
    rows = [f"| {name} | {_fmt(v.get('latency_ms'))} | {_fmt(v.get('latency_ms_batch'))} |"
            for name, v in lat.items() if isinstance(v, dict)]
    return ["\n## Costs\n",
            (f"- params {_fmt(c['params'])} ({_fmt(c['params_compression'], 3)}× fewer than the "
            f"teacher), FLOPs {_fmt(c['flops'])} ({_fmt(c['flops_compression'], 3)}×), "
            f"bytes {_fmt(c['bytes'])}, speed-up {_fmt(c['latency_speedup'], 3)}×"),
            (f"\nLatency in ms ({lat['threads']} thread(s); batch 1 and batch {lat['batch_size']})"
            ":\n"), "| measured | batch 1 | batch |", "|---|---|---|", *rows]


def _md_hyper(card: dict[str, Any]) -> list[str]:
    h = card["hyperparameters"]
    return ["\n## Hyperparameters\n", f"- architecture: `{json.dumps(card['model']['spec'])}`",
            f"- distillation recipe: `{json.dumps(h['recipe'])}`",
            (f"- training: `{json.dumps(h['train'])}`, search epochs {h['search_epochs']}, "
            f"seed {h['seed']}"), f"- weights: `{json.dumps(card['provenance']['weights'])}`",
            f"- storage: {card['provenance']['storage']}"]


def _md_verification(card: dict[str, Any]) -> list[str]:
    v = card["verification"]
    rows = [f"| {fmt} | {_fmt(r['max_abs_diff'], 3)} | {_fmt(r['test_accuracy'])} |"
            for fmt, r in v.items() if isinstance(r, dict)]
    return ["\n## Verification\n", (f"On all {v['test_samples']} test samples; tolerance "
            f"{v['tolerance']:g} max abs difference vs the PyTorch student.\n"),
            "| artifact | max abs diff | test accuracy |", "|---|---|---|", *rows]


def _md_artifacts(card: dict[str, Any]) -> list[str]:
    rows = [f"| {name} | {a['bytes']:,} | `{a['sha256']}` |"
            for name, a in card["artifacts"].items()]
    return ["\n## Artifacts\n", "| file | bytes | sha256 |", "|---|---|---|", *rows,
            ("\nLoad: `autokd.load_student('student.pt')`, `torch.jit.load("
            "'student.torchscript.pt')`, or onnxruntime with input `input` (batch, "
            f"{', '.join(map(str, card['model']['input_shape']))}) -> `logits`.")]


def _artifact_entries(folder: Path, names: list[str]) -> dict[str, Any]:
    return {n: {"bytes": (folder / n).stat().st_size, "sha256": sha256_file(folder / n)}
            for n in names}


def write_card(card: dict[str, Any], folder: Path, files: dict[str, Path]) -> None:
    """model_card.md, then model_card.json holding the hashes of every file including the md."""
    card["artifacts"] = _artifact_entries(folder, [p.name for p in files.values()])
    (folder / CARD_MD).write_text(card_markdown(card))
    card["artifacts"].update(_artifact_entries(folder, [CARD_MD]))
    (folder / CARD_JSON).write_text(json.dumps(card, indent=2, default=str))


# -- staging and publishing ------------------------------------------------------------------
def _target(paths: StudyPaths, trial: int, out: str | Path | None) -> Path:
    target = Path(out) if out is not None else paths.export / str(trial)
    if target.exists() and (not target.is_dir() or (any(target.iterdir())
                                                    and not (target / CARD_JSON).exists())):
        raise ExportError(f"{target} exists and is not an autokd export; choose a new or empty "
                          "directory")
    return target


def _staging(target: Path) -> Path:
    """A temp folder next to the target (same filesystem, so publishing is one rename)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    except OSError as exc:
        raise ExportError(f"cannot write to {target.parent}: {exc.strerror}") from None
    folder.chmod(0o755)
    return folder


def _publish(staging: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
        formats: Any of the registered ``FORMATS`` (``pt``, ``torchscript``, ``onnx``);
            default all of them.
        out: Output directory (default ``results/<study>/export/<trial>``).
        trust: Allow a teacher whose loading runs code when the student is trained again
            (``--trust``; what the study's config.yaml says is not enough).

    Raises:
        ConfigError, ExportError: Bad selection or output; a failed export writes nothing.
    """
    formats = parse_formats(format_names() if formats is None else formats)
    t, selection, notes = select_trial(study, trial=trial, pick=pick, where=where,
                                       min_retention=min_retention)
    target = _target(paths, t.number, out)
    parent_existed = target.parent.exists()
    staging = _staging(target)
    try:
        ex = _prepare(study, paths, t, selection, retrain, epochs, trust)
        card = _produce(ex, staging, formats)
        _publish(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
            if not parent_existed:
                with contextlib.suppress(OSError):
                    target.parent.rmdir()  # only if empty: never removes anything else
    artifacts = {fmt: target / ARTIFACT_NAMES[fmt] for fmt in formats}
    artifacts.update(card_json=target / CARD_JSON, card_md=target / CARD_MD)
    return ExportResult(t.number, target, artifacts, card, selection, notes)


def _prepare(study: optuna.Study, paths: StudyPaths, t: FrozenTrial, selection: str,
             retrain_it: bool, epochs: int | None, trust: bool = False) -> _Export:
    data = study_data(study, paths)
    model, weights = student_model(study, paths, t, data, retrain_it, epochs, trust=trust)
    model = model.cpu().eval()
    ex = _Export(study, paths, t, selection, data, model, weights)
    ex.metrics = test_metrics(model, data)
    ex.cost = measure_cost(model, data.input_shape, cost_config(study)).to_dict()
    return ex


def _produce(ex: _Export, folder: Path, formats: tuple[str, ...]) -> dict[str, Any]:
    cfg = cost_config(ex.study)
    example = ex.data.x_test[:2]  # (2, *input_shape): batch > 1 so the batch axis stays free
    ex.files = write_artifacts(ex.model, folder, formats, _checkpoint_meta(ex), example)
    ex.verification = verify_artifacts(ex.model, ex.files, ex.data, cfg.threads)
    ex.latency = latency_table(ex.trial, ex.cost, ex.files, ex.data.input_shape, cfg)
    card = build_card(ex)
    write_card(card, folder, ex.files)
    return card


# -- loading and evaluating exported files ---------------------------------------------------
def check_card(path: Path) -> dict[str, Any] | None:
    """Check ``path`` against a model_card.json beside it; None when there is no card.

    Raises:
        ExportError: The card is unreadable or the file's sha256 differs from the card's.
    """
    card_path = path.parent / CARD_JSON
    if not card_path.exists() or path.name == CARD_JSON:
        return None
    try:
        card = json.loads(card_path.read_text())
        entry = (card.get("artifacts") or {}).get(path.name)
    except (json.JSONDecodeError, AttributeError):
        raise ExportError(f"{card_path} is not a valid model card") from None
    if entry is None:
        return {"card": str(card_path), "verified": False, "note": "file not listed in the card"}
    digest = sha256_file(path)
    if digest != entry.get("sha256"):
        raise ExportError(f"{path} does not match its model card (sha256 {digest[:12]}… != "
                          f"{str(entry.get('sha256'))[:12]}…): the file was modified after export")
    return {"card": str(card_path), "verified": True, "sha256": digest,
            "test_accuracy": (card.get("metrics") or {}).get("test", {}).get("accuracy"),
            "split_hash": (card.get("dataset") or {}).get("split_hash")}


def load_student(path: str | Path) -> nn.Module:
    """Load an exported (or search-kept) student checkpoint as an eval-mode ``nn.Module``.

    ``path`` may be the export folder. A model_card.json beside the file must agree with its
    sha256. The checkpoint's metadata is on ``model.autokd_meta``.
    """
    p = Path(path)
    p = p / ARTIFACT_NAMES["pt"] if p.is_dir() else p
    if not p.exists():
        raise ExportError(f"no student checkpoint at {p}")
    if artifact_format(p) != "pt":
        raise ExportError(f"{p} is a {artifact_format(p)} file; load_student reads autokd "
                          "checkpoints (student.pt); use torch.jit.load or onnxruntime")
    check_card(p)
    return run_artifact(p, "pt")


def _check_fits(model: nn.Module, path: Path, data: DataSplits) -> None:
    try:
        out = _predict(model, data.x_test[:2])
    except Exception as exc:  # noqa: BLE001 - a model for other data: shape errors from any runtime
        raise ExportError(f"{path.name} does not accept {data.name} inputs of shape "
                          f"{tuple(data.input_shape)}: {str(exc).splitlines()[0][:160]}") from None
    if out.ndim != 2 or out.shape[1] != data.num_classes:
        raise ExportError(f"{path.name} outputs shape {tuple(out.shape)}, but {data.name} has "
                          f"{data.num_classes} classes")


def evaluate_artifact(path: str | Path, data: DataSplits, *, latency: bool = True,
                      cost: CostConfig | None = None) -> dict[str, Any]:
    """Accuracy (val, test) and latency of any exported file: .pt, .torchscript.pt or .onnx.

    Raises:
        ExportError: Missing, unloadable or tampered file, or one that does not fit ``data``.
    """
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"no artifact file at {p}")
    card = check_card(p)
    fmt = artifact_format(p)
    cfg = cost or CostConfig()
    model = run_artifact(p, fmt, cfg.threads)
    _check_fits(model, p, data)
    out: dict[str, Any] = {"artifact": str(p), "format": fmt, "sha256": sha256_file(p),
                           "card": card, "dataset": data.describe()}
    out.update({f"{s}_{k}": v for s, m in test_metrics(model, data).items()
                for k, v in m.items() if k != "samples"})
    if card and card.get("split_hash") and card["split_hash"] != data.split_hash:
        out["warning"] = (f"this data split ({data.split_hash}) is not the one the card was "
                          f"made on ({card['split_hash']})")
    if latency:
        out.update(_latency_pair(model, data.input_shape, cfg), latency_batch_size=cfg.batch_size)
    return out
