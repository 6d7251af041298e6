"""Proving an export right: parity, accuracy and latency of every artifact, and card checks.

Why on the whole test split: every exported format must match the PyTorch student within
``PARITY_TOL`` and score exactly its test accuracy (the card's), or nothing is published. Files
read back later (``evaluate``, ``load_student``) are checked against their card's sha256 before
any loader sees them, so a file changed after export is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from optuna.trial import FrozenTrial
from torch import nn

from autokd.config import CostConfig
from autokd.cost import measure_latency
from autokd.data import DataSplits
from autokd.errors import ExportError
from autokd.export.card import CARD_JSON
from autokd.export.formats import (
    ARTIFACT_NAMES,
    artifact_format,
    format_names,
    run_artifact,
    sha256_file,
)
from autokd.metrics import classification_metrics
from autokd.record import TrialRecord

__all__ = ["PARITY_TOL", "check_card", "evaluate_artifact", "latency_table", "load_student",
           "test_metrics", "verify_artifacts", "verify_int8"]

PARITY_TOL = 1e-4


@torch.inference_mode()
def _predict(model: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch]).float() for i in range(0, len(x), batch)])  # (N, K)


# -- at export time --------------------------------------------------------------------------
def verify_artifacts(model: nn.Module, files: dict[str, Path], data: DataSplits,
                     threads: int = 1, int8_reference: nn.Module | None = None) -> dict[str, Any]:
    """Every artifact against the PyTorch student on the whole test split.

    ``model`` is the float student; the ``int8`` artifact is checked against
    ``int8_reference`` (the INT8 model whose accuracy the card states) instead, see
    :func:`verify_int8`.

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
        if fmt == "int8":
            out[fmt] = verify_int8(logits, ref, int8_reference, x, y)
            continue
        diff, got = _require_match(f"{fmt} export", logits, ref, y, "the PyTorch student")
        out[fmt] = {"max_abs_diff": diff, "test_accuracy": got / len(y), "passed": True}
    return out


def _require_match(what: str, logits: torch.Tensor, want: torch.Tensor, y: torch.Tensor,
                   against: str) -> tuple[float, int]:
    """``logits`` must reproduce ``want`` within ``PARITY_TOL`` and score exactly as many test
    samples; returns (max abs difference, correct count).

    Raises:
        ExportError: Either does not hold (one line naming ``what`` and ``against``).
    """
    diff = float((logits - want).abs().max())
    got, expected = int((logits.argmax(1) == y).sum()), int((want.argmax(1) == y).sum())
    if not diff <= PARITY_TOL:
        raise ExportError(f"{what} does not match {against}: max abs difference "
                          f"{diff:.2e} > {PARITY_TOL:g}")
    if got != expected:
        raise ExportError(f"{what} scores {got}/{len(y)} on test, {against} "
                          f"{expected}/{len(y)}")
    return diff, got


def verify_int8(logits: torch.Tensor, float_logits: torch.Tensor,
                reference: nn.Module | None, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """The INT8 file's test logits against the INT8 model the card measured.

    INT8 is exempt from the 1e-4 parity with the float student: its deviation and prediction
    agreement are reported. It must reproduce the reference INT8 model's logits within
    ``PARITY_TOL`` and its test accuracy exactly, so a file that is not the model the card
    describes (a weight changed on its way to disk) is refused.

    Raises:
        ExportError: No reference, or the file does not reproduce it.
    """
    if reference is None:
        raise ExportError("int8 verification needs the INT8 model the card measured")
    drift, got = _require_match("int8 export", logits, _predict(reference, x), y,
                                "the INT8 model the card measured")
    agree = float((logits.argmax(1) == float_logits.argmax(1)).float().mean())
    return {"max_abs_diff": float((logits - float_logits).abs().max()), "parity": "exempt",
            "reference_max_abs_diff": drift, "test_accuracy": got / len(y),
            "float_test_accuracy": int((float_logits.argmax(1) == y).sum()) / len(y),
            "prediction_agreement": agree, "passed": True}


def _latency_pair(model: nn.Module, shape: tuple[int, ...], cfg: CostConfig) -> dict[str, Any]:
    """Latency at batch 1 and at the configured batch size."""
    def timed(batch: int) -> float:
        return measure_latency(model, shape, batch, warmup=cfg.warmup, repeats=cfg.repeats,
                               threads=cfg.threads, min_block_s=cfg.min_block_s)[0]

    return {"latency_ms": timed(1), "latency_ms_batch": timed(cfg.batch_size)}


class _TokenRunner(nn.Module):
    """An artifact runner that says it reads token ids (``vocab_size``), so the latency probe
    feeds it int64 ids as it does the student (a loaded TorchScript or ONNX model cannot say)."""

    def __init__(self, inner: nn.Module, vocab_size: int) -> None:
        super().__init__()
        self.inner, self.vocab_size = inner, vocab_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def latency_table(t: FrozenTrial, cost: dict[str, Any], files: dict[str, Path],
                  shape: tuple[int, ...], cfg: CostConfig,
                  vocab_size: int | None = None) -> dict[str, Any]:
    """Search-time latency next to the re-measured one, plus each exported format's.

    The ``pt`` artifact is the in-memory student reloaded, so its row is ``export``.
    ``vocab_size``: the student reads token ids below it (None: float features).
    """
    out: dict[str, Any] = {
        "batch_size": cfg.batch_size, "threads": cfg.threads,
        "search": {k: TrialRecord.of(t).get(k, "torch" if k == "latency_runtime" else None)
                   for k in ("latency_ms", "latency_ms_batch", "latency_runtime")},
        "export": {k: cost.get(k) for k in ("latency_ms", "latency_ms_batch", "latency_runtime")},
    }
    for fmt in format_names():
        if fmt != "pt" and fmt in files:
            runner = run_artifact(files[fmt], fmt, cfg.threads)
            if vocab_size is not None:
                runner = _TokenRunner(runner, vocab_size)
            out[fmt] = _latency_pair(runner, shape, cfg)
    return out


def test_metrics(model: nn.Module, data: DataSplits) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, per-class accuracy and NLL of the student on val
    and test (what the card reports)."""
    out = {}
    for split in ("val", "test"):
        x, y = data.split(split)
        logits = _predict(model, x)
        scores = classification_metrics(logits.argmax(1), y, logits.shape[1])
        out[split] = {"accuracy": int((logits.argmax(1) == y).sum()) / len(y),  # exact ratio
                      "nll": float(torch.nn.functional.cross_entropy(logits, y)),
                      "samples": len(y),
                      **{k: scores[k] for k in ("balanced_accuracy", "macro_f1",
                                                "per_class_accuracy")}}
    return out


# -- reading exported files back -------------------------------------------------------------
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
    own = entry.get("test_accuracy")  # an INT8 file's own accuracy, not the float student's
    return {"card": str(card_path), "verified": True, "sha256": digest,
            "test_accuracy": own if own is not None else
            (card.get("metrics") or {}).get("test", {}).get("accuracy"),
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
    """A model made for other data fails here with one line, not deep in a runtime."""
    try:
        out = _predict(model, data.head("test", 2))
    except Exception as exc:  # noqa: BLE001 - a model for other data: shape errors from any runtime
        raise ExportError(f"{path.name} does not accept {data.name} inputs of shape "
                          f"{tuple(data.input_shape)}: {str(exc).splitlines()[0][:160]}") from None
    if out.ndim != 2 or out.shape[1] != data.num_classes:
        raise ExportError(f"{path.name} outputs shape {tuple(out.shape)}, but {data.name} has "
                          f"{data.num_classes} classes")


def evaluate_artifact(path: str | Path, data: DataSplits, *, latency: bool = True,
                      cost: CostConfig | None = None) -> dict[str, Any]:
    """Accuracy (val, test) and latency of any exported file: .pt, .torchscript.pt, .pt2 or
    .onnx (an INT8 file included).

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
