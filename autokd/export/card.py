"""The model card: model_card.json for programs, model_card.md for people, same numbers.

Why the hashes: the card records the sha256 of every artifact (and of the markdown card), so
``evaluate`` and ``load_student`` can refuse a file that was changed after export.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial
from torch import nn

from autokd.data import DataSplits
from autokd.export.formats import sha256_path, size_of
from autokd.export.source import search_epochs
from autokd.metrics import metric_label
from autokd.pipeline import compare
from autokd.record import SearchRecord, TrialRecord
from autokd.report import storage_label
from autokd.study import StudyPaths, redact_url

__all__ = ["CARD_JSON", "CARD_MD", "ExportRecord", "build_card", "card_markdown",
           "checkpoint_meta", "write_card"]

CARD_JSON, CARD_MD = "model_card.json", "model_card.md"


@dataclass
class ExportRecord:
    """Everything one export gathers on its way to the card."""

    study: optuna.Study
    paths: StudyPaths
    trial: FrozenTrial
    selection: str
    data: DataSplits
    model: nn.Module
    weights: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)  # the card's: INT8 for a QAT student
    float_model: nn.Module | None = None  # the student without fake quantisation
    float_metrics: dict[str, Any] = field(default_factory=dict)  # what the float files score
    int8: dict[str, Any] = field(default_factory=dict)  # method, val, test, sizes
    cost: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)


# -- the card as data ------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    import onnxruntime

    from autokd import __version__ as autokd_version

    return {"autokd": autokd_version, "torch": torch.__version__, "optuna": optuna.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def checkpoint_meta(ex: ExportRecord) -> dict[str, Any]:
    """Metadata stored inside student.pt (plain data, loadable with weights_only=True)."""
    a = TrialRecord.of(ex.trial).fields()
    own = ex.float_metrics or ex.metrics  # student.pt holds the float student
    return {"data": ex.data.describe(), "recipe": a.get("recipe"), "train": a.get("train"),
            "metrics": {"val_accuracy": own["val"]["accuracy"],
                        "test_accuracy": own["test"]["accuracy"]},
            "teacher_hash": SearchRecord.of(ex.study).get("teacher_hash"),
            "study": ex.study.study_name, "trial": ex.trial.number,
            "class_names": list(ex.data.class_names)}


def _teacher_card(study: optuna.Study) -> dict[str, Any]:
    """The teacher's recorded profile; a URL reference without its credentials."""
    profile = dict(SearchRecord.of(study).get("teacher") or {})
    ref = SearchRecord.of(study).get("teacher_ref")
    profile["ref"] = redact_url(str(ref)) if ref else None
    return profile


def build_card(ex: ExportRecord) -> dict[str, Any]:
    """The model card as data (model_card.json); artifacts' hashes are added last."""
    test, val = ex.metrics["test"], ex.metrics["val"]
    ratios = compare({"test_accuracy": test["accuracy"], "val_accuracy": val["accuracy"],
                      **ex.cost}, SearchRecord.of(ex.study).get("teacher") or {})
    return {
        "format": "autokd-model-card", "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": _model_entry(ex),
        "dataset": {**ex.data.describe(), "normalizer": _normalizer(ex.data)},
        "teacher": _teacher_card(ex.study),
        "metrics": _metrics_entry(ex, ratios),
        "costs": _costs_entry(ex, ratios),
        "hyperparameters": _hyperparameters_entry(ex),
        "provenance": _provenance(ex),
        "verification": ex.verification,
    }


def _model_entry(ex: ExportRecord) -> dict[str, Any]:
    return {"family": ex.model.family, "spec": ex.model.spec,
            "input_shape": list(ex.model.input_shape),
            "num_classes": ex.model.num_classes, "class_names": list(ex.data.class_names),
            "input": "normalised like the training data (see dataset.normalizer)"}


def _metrics_entry(ex: ExportRecord, ratios: dict[str, Any]) -> dict[str, Any]:
    """Measured now on val and test, next to what the search recorded."""
    a = TrialRecord.of(ex.trial).fields()
    metric = SearchRecord.of(ex.study).metric or "accuracy"
    keys = dict.fromkeys(("val_accuracy", "test_accuracy", f"val_{metric}", f"test_{metric}"))
    out = {"test": ex.metrics["test"], "val": ex.metrics["val"],
           "retention": ratios["retention"], "val_retention": ratios["val_retention"],
           "selection_metric": metric, "search": {k: a.get(k) for k in keys}}
    if ex.int8:
        out["int8"] = {k: v for k, v in ex.int8.items() if k != "sizes"}
        out["float"] = {s: ex.float_metrics[s] for s in ("val", "test")}
        out["stated"] = "int8" if ex.int8["method"] == "qat" else "float"
    return out


def _costs_entry(ex: ExportRecord, ratios: dict[str, Any]) -> dict[str, Any]:
    out = {**{k: ex.cost.get(k) for k in ("params", "flops", "bytes", "peak_memory_bytes")},
           **{k: ratios[k] for k in ("params_compression", "flops_compression",
                                     "latency_speedup")}, "latency": ex.latency}
    if ex.int8.get("sizes"):
        out["int8"] = ex.int8["sizes"]
    return out


def _hyperparameters_entry(ex: ExportRecord) -> dict[str, Any]:
    a = TrialRecord.of(ex.trial).fields()
    return {"recipe": a.get("recipe"), "train": a.get("train"),
            "search_epochs": search_epochs(ex.study, ex.trial), "seed": a.get("seed")}


def _normalizer(data: DataSplits) -> dict[str, Any]:
    """JSON-safe normaliser description (means/stds as lists)."""
    return json.loads(json.dumps(data.normalizer, default=lambda o: np.asarray(o).tolist()))


def _provenance(ex: ExportRecord) -> dict[str, Any]:
    return {"study": ex.study.study_name, "trial": ex.trial.number,
            "strategy": TrialRecord.of(ex.trial).strategy, "selection": ex.selection,
            "weights": ex.weights, "storage": storage_label(ex.study, ex.paths),
            "dataset_hash": SearchRecord.of(ex.study).get("dataset_hash"),
            "teacher_hash": SearchRecord.of(ex.study).get("teacher_hash"), "versions": _versions()}


# -- the card for people ---------------------------------------------------------------------
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
    lines = (_md_head(card) + _md_metrics(card["metrics"]) + _md_int8(card)
             + _md_costs(card["costs"], card["costs"]["latency"]) + _md_hyper(card)
             + _md_verification(card) + _md_artifacts(card))
    return "\n".join(lines) + "\n"


def _md_head(card: dict[str, Any]) -> list[str]:
    p, ds, t = card["provenance"], card["dataset"], card["teacher"]
    return [
        f"# Model card: {p['study']} trial {p['trial']}\n",
        (f"A `{card['model']['family']}` student distilled by autokd ({p['strategy']} search), "
        f"picked by {p['selection']}; weights {p['weights']['how']}.\n"),
        "## Data\n", (f"- dataset: {ds['name']} ({ds['kind']}), input shape "
        f"{ds['input_shape']}, {ds['num_classes']} classes"),
        f"- split sizes: {ds['sizes']}; split hash `{ds['split_hash']}`",
        *_md_data_options(ds),
        "\n## Teacher\n", (f"- {t.get('name')} (hash `{t.get('hash')}`): test accuracy "
        f"{_fmt(t.get('test_accuracy'))}, params {_fmt(t.get('params'))}, FLOPs "
        f"{_fmt(t.get('flops'))}, latency {_fmt(t.get('latency_ms'))} ms"),
    ]


def _md_data_options(ds: dict[str, Any]) -> list[str]:
    """Scarce labels, unlabelled inputs and the student's columns, when the data used them."""
    out = []
    if "labels" in ds:
        how = ", ".join(f"{k} {v}" for k, v in ds["labels"].items()
                        if k in ("train_fraction", "shots_per_class"))
        out.append(f"- labelled train samples: {ds['labels']['labelled']} ({how}; "
                   f"{ds['labels']['left_out']} left out)")
    if "unlabeled" in ds:
        u = ds["unlabeled"]
        out.append(f"- unlabelled inputs (teacher outputs only): {u['samples']} from "
                   f"`{u['source']}`; {u['leaked_dropped']} dropped as also in val/test")
    if "student_features" in ds:
        f = ds["student_features"]
        cols = ", ".join(f"{i} ({n})" for i, n in zip(f["indices"], f["names"], strict=True)) \
            if f.get("names") else ", ".join(map(str, f["indices"]))
        out.append(f"- the student reads {len(f['indices'])} of the teacher's "
                   f"{f['teacher_input_shape'][0]} columns, in this order: {cols}")
    return out


def _md_metrics(m: dict[str, Any]) -> list[str]:
    return [
        "\n## Metrics (test split unless noted)\n",
        (f"- test accuracy {_fmt(m['test']['accuracy'])} on {m['test']['samples']} samples "
        f"(NLL {_fmt(m['test']['nll'])}); retention {_fmt(m['retention'])}"),
        (f"- val accuracy {_fmt(m['val']['accuracy'])} (selection split); val retention "
        f"{_fmt(m['val_retention'])}"),
        (f"- at search time: val {_fmt(m['search']['val_accuracy'])}, test "
        f"{_fmt(m['search']['test_accuracy'])}"),
        *_md_selection(m),
    ]


def _md_int8(card: dict[str, Any]) -> list[str]:
    """The INT8 model next to the float student: accuracy, deviation, sizes."""
    q = card["metrics"].get("int8")
    if not q:
        return []
    f, v = card["metrics"]["float"], card["verification"].get("int8", {})
    sizes = card["costs"].get("int8") or {}
    how = ("quantisation-aware KD (the scales learned in training)" if q["method"] == "qat" else
           f"post-training quantisation ({q['calibration_samples']} training samples "
           "calibrate the activations)")
    stated = "INT8" if card["metrics"].get("stated") == "int8" else "float"
    return ["\n## INT8\n", (f"- `student.int8.onnx`: {how}; the metrics above are the "
                             f"{stated} model's"),
            (f"- test accuracy INT8 {_fmt(q['test']['accuracy'])} vs float "
             f"{_fmt(f['test']['accuracy'])}; val {_fmt(q['val']['accuracy'])} vs "
             f"{_fmt(f['val']['accuracy'])}"),
            (f"- max abs deviation of INT8 logits from the float student "
             f"{_fmt(v.get('max_abs_diff'), 3)}; same prediction on "
             f"{_fmt(v.get('prediction_agreement'))} of test samples"),
            (f"- bytes: file {_fmt(sizes.get('file_bytes'))} (float ONNX "
             f"{_fmt(sizes.get('float_file_bytes'))}); weights and scales "
             f"{_fmt(sizes.get('initializer_bytes'))} (float "
             f"{_fmt(sizes.get('float_initializer_bytes'))})")]


def _md_selection(m: dict[str, Any]) -> list[str]:
    """The selection metric's line, when the search chose one other than accuracy."""
    metric = m.get("selection_metric") or "accuracy"
    if metric == "accuracy":
        return []
    return [(f"- selected by {metric_label(metric)}: val {_fmt(m['val'].get(metric))}, test "
             f"{_fmt(m['test'].get(metric))} (at search time: val "
             f"{_fmt(m['search'].get(f'val_{metric}'))})")]


_RT = "latency_runtime"


def _md_costs(c: dict[str, Any], lat: dict[str, Any]) -> list[str]:
    rows = [f"| {name}{f' ({v[_RT]})' if v.get(_RT) else ''} | {_fmt(v.get('latency_ms'))} | "
            f"{_fmt(v.get('latency_ms_batch'))} |" for name, v in lat.items() if isinstance(v, dict)]
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
    note = (" INT8 is exempt: its row is its deviation from the float student; it must "
            "reproduce the INT8 model the card measured within the tolerance."
            if "int8" in v else "")
    return ["\n## Verification\n", (f"On all {v['test_samples']} test samples; tolerance "
            f"{v['tolerance']:g} max abs difference vs the PyTorch student.{note}\n"),
            "| artifact | max abs diff | test accuracy |", "|---|---|---|", *rows]


def _md_artifacts(card: dict[str, Any]) -> list[str]:
    rows = [f"| {name} | {a['bytes']:,} | `{a['sha256']}` |"
            for name, a in card["artifacts"].items()]
    return ["\n## Artifacts\n", "| file | bytes | sha256 |", "|---|---|---|", *rows,
            ("\nLoad: `autokd.load_student('student.pt')`, `torch.jit.load("
            "'student.torchscript.pt')`, `torch.export.load('student.pt2').module()`, or "
            "onnxruntime (`student.onnx`, `student.int8.onnx`) with input `input` (batch, "
            f"{', '.join(map(str, card['model']['input_shape']))}) -> `logits`."),
            *([_HF_LOAD] if "hf_model" in card["artifacts"] else [])]


_HF_LOAD = ("Hugging Face: `AutoModelForSequenceClassification.from_pretrained('hf_model')` and "
            "`AutoTokenizer.from_pretrained('hf_model')`; `student.hf.onnx` takes `input_ids` "
            "and `attention_mask`.")


# -- writing ---------------------------------------------------------------------------------
def _artifact_entries(folder: Path, names: list[str]) -> dict[str, Any]:
    return {n: {"bytes": size_of(folder / n), "sha256": sha256_path(folder / n)}
            for n in names}


def write_card(card: dict[str, Any], folder: Path, files: dict[str, Path]) -> None:
    """model_card.md, then model_card.json holding the hashes of every file including the md;
    each artifact's entry also has its own verified test accuracy (an INT8 file's differs)."""
    card["artifacts"] = _artifact_entries(folder, [p.name for p in files.values()])
    for fmt, path in files.items():
        checked = (card.get("verification") or {}).get(fmt)
        if isinstance(checked, dict) and "test_accuracy" in checked:
            card["artifacts"][path.name]["test_accuracy"] = checked["test_accuracy"]
    (folder / CARD_MD).write_text(card_markdown(card))
    card["artifacts"].update(_artifact_entries(folder, [CARD_MD]))
    (folder / CARD_JSON).write_text(json.dumps(card, indent=2, default=str))
