"""Normalisation fitted on train only, and applied the same way wherever features meet a model.

Why one module for both halves: the statistics are fit once on the training split so val/test
stay honest held-out data, and anything that sees raw data later (a teacher, an exported
student) must apply exactly the transform training saw.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["apply_normalizer", "fit_normalizer"]


def fit_normalizer(x_train: np.ndarray, kind: str, scale: float) -> dict[str, Any]:
    """Statistics from train only: per feature for tabular data, one scalar otherwise."""
    xs = x_train.astype(np.float64) * scale
    if kind == "tabular":
        mean, std = xs.mean(axis=0), xs.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)  # constant feature: centre it, do not blow it up
        return {"mean": mean.tolist(), "std": std.tolist(), "scale": scale}
    mean, std = float(xs.mean()), float(xs.std())
    return {"mean": mean, "std": std if std > 1e-12 else 1.0, "scale": scale}


def apply_normalizer(x: np.ndarray | torch.Tensor, normalizer: dict[str, Any]) -> Any:
    """Apply a fitted ``DataSplits.normalizer`` to raw (already encoded) features.

    Why public: a teacher or an exported student sees raw data later and must be fed exactly
    what training saw: ``(x * scale - mean) / std``, scalar for image/signal, per feature
    (last axis) for tabular. Returns float32 of the same container type as ``x``.
    """
    is_tensor = isinstance(x, torch.Tensor)
    arr = x.detach().cpu().numpy() if is_tensor else np.asarray(x)
    mean = np.asarray(normalizer["mean"], dtype=np.float64)
    std = np.asarray(normalizer["std"], dtype=np.float64)
    scale = float(normalizer.get("scale", 1.0))
    out = ((arr.astype(np.float64) * scale - mean) / std).astype(np.float32)
    return torch.from_numpy(out) if is_tensor else out
