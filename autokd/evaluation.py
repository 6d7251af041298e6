"""Evaluation of a model on one split: every metric from one pass of predictions.

Why a module of its own: the trainer (best epoch), the search (objectives), teachers (their
profile) and export (the model card) all score models the same way; the split may be an
in-memory tensor or a streamed split read by loader workers.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autokd.distill import kd_divergence
from autokd.metrics import classification_metrics

__all__ = ["EVAL_BATCH", "evaluate"]

EVAL_BATCH = 1024


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             teacher_logits: torch.Tensor | None = None, temperature: float = 1.0,
             amp: bool = False) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, per-class accuracy, NLL and (given teacher
    logits (M, N, K)) the KD divergence on one split, all from one set of predictions.

    ``amp``: bf16 autocast, as in training (CUDA only). ``x`` is a tensor or a streamed split.
    """
    was_training = model.training
    model.eval()
    first = next(model.parameters(), None)  # a runtime behind the call (ONNX) has none
    device = first.device if first is not None else torch.device("cpu")
    cast = torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" \
        else nullcontext()
    with cast:
        logits = _predict(model, x, device)  # (N, K)
    model.train(was_training)
    out: dict[str, Any] = classification_metrics(logits.argmax(1), y, logits.shape[1])
    out["nll"] = F.cross_entropy(logits, y).item()
    if teacher_logits is not None:
        out["kd_loss"] = kd_divergence(logits, teacher_logits, temperature)
    return out


def _predict(model: nn.Module, x: Any, device: torch.device) -> torch.Tensor:
    """Logits of a tensor, or of a streamed split read by its loader workers, on the CPU."""
    if isinstance(x, torch.Tensor):
        chunks = (x[i:i + EVAL_BATCH] for i in range(0, len(x), EVAL_BATCH))
    else:
        chunks = x.batches(torch.arange(len(x)), EVAL_BATCH)
    # logits stay on the device until one copy back: one host sync per split, not per chunk
    return torch.cat([model(xb.to(device, non_blocking=True)).float() for xb in chunks]).cpu()
