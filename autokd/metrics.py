"""Selection metrics for classification: accuracy, balanced accuracy, macro F1, per-class recall.

Why a module of its own: the trainer keeps its best epoch, the Pareto search maximises, the
hypervolume's floor is set and the report is labelled by one chosen metric (``--metric``), so
every part must compute it the same way. On imbalanced data plain accuracy rewards predicting
the common classes; balanced accuracy (mean recall over classes) and macro F1 do not.

The formulas are scikit-learn's, computed exactly in torch from one confusion matrix (the
trainer evaluates every epoch; a round trip through numpy for three sklearn calls cost more than
the evaluation itself on small students):

- ``balanced_accuracy_score``: the mean recall over the classes present in ``y_true``.
- ``f1_score(average="macro")``: the mean F1 over the classes present in ``y_true`` or
  ``y_pred``; a class with no predictions (or no samples) has F1 0.
"""

from __future__ import annotations

import torch

from autokd.errors import ConfigError

__all__ = ["METRICS", "check_metric", "classification_metrics", "confusion", "majority_score",
           "metric_label"]

METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1")
_LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
           "macro_f1": "macro F1"}


def check_metric(name: str) -> str:
    """``name`` if it is a known selection metric, else a ``ConfigError`` naming the known ones."""
    if name not in METRICS:
        raise ConfigError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return name


def metric_label(name: str) -> str:
    """How reports and cards name a metric (``macro_f1`` -> ``macro F1``)."""
    return _LABELS.get(name, name)


def confusion(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Confusion matrix (K, K): rows true class, columns predicted class."""
    idx = y.long() * num_classes + pred.long()  # (N,)
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def classification_metrics(pred: torch.Tensor, y: torch.Tensor,
                           num_classes: int) -> dict[str, float | list[float | None]]:
    """Accuracy, balanced accuracy, macro F1 and per-class accuracy of one set of predictions.

    ``per_class_accuracy`` is each class's recall (None for a class absent from ``y``).
    """
    cm = confusion(pred, y, num_classes).double()  # (K, K)
    tp, support, predicted = cm.diag(), cm.sum(1), cm.sum(0)  # (K,) each
    present = support > 0
    recall = torch.where(present, tp / support.clamp(min=1), torch.zeros_like(tp))
    labelled = present | (predicted > 0)  # sklearn's labels: union of y_true and y_pred
    f1 = torch.where(labelled, 2 * tp / (support + predicted).clamp(min=1), torch.zeros_like(tp))
    n = max(1, len(y))
    return {
        "accuracy": float(tp.sum() / n),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[labelled].mean()) if labelled.any() else 0.0,
        "per_class_accuracy": [float(r) if p else None for r, p in zip(recall, present)],
    }


def majority_score(y_train: torch.Tensor, y_val: torch.Tensor, num_classes: int,
                   metric: str = "accuracy") -> float:
    """``metric`` on ``y_val`` of always predicting the most common training class.

    Computed by scoring that constant prediction, so it is exact for every metric: for balanced
    accuracy 1/K (K classes in ``y_val``), for macro F1 (1/K')·2p/(1+p) with p the majority
    class's share of ``y_val`` (K' also counts the predicted class if ``y_val`` lacks it).
    """
    counts = torch.bincount(y_train.long(), minlength=num_classes)
    pred = torch.full_like(y_val.long(), int(counts.argmax()))
    return float(classification_metrics(pred, y_val, num_classes)[check_metric(metric)])
