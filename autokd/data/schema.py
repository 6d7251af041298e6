"""The shapes data takes in this layer: what a source returns and what ``load_data`` returns.

Why a module of its own: sources, validation, splitting and batching all speak about the same
kinds, split names and result type; keeping them here lets each of those modules depend on this
one instead of on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from autokd.errors import DataError

__all__ = ["KINDS", "NDIM", "SPLITS", "DataSplits", "RawData"]

KINDS = ("image", "signal", "tabular")
SPLITS = ("train", "val", "test")
#: Rank of the feature array of each kind: ``(N, F)``, ``(N, C, L)``, ``(N, C, H, W)``.
NDIM = {"tabular": 2, "signal": 3, "image": 4}

#: ``(X, y, kind, meta)`` as a source returns it, before any check. ``meta`` may hold
#: ``class_names``, ``scale`` (multiplied into X before normalising), ``identity`` (dict for the
#: split hash), ``predefined`` ({split: indices}), ``feature_names``, ``encoding`` and
#: ``generated``.
RawData = tuple[np.ndarray, np.ndarray, str, dict]


@dataclass
class DataSplits:
    """Normalised train/val/test tensors plus what is needed to reproduce and describe them."""

    name: str
    kind: str
    input_shape: tuple[int, ...]
    num_classes: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    split_hash: str
    class_names: list[str]
    normalizer: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x, y)`` of one split; a typo raises instead of silently using train."""
        if which not in SPLITS:
            raise DataError(f"unknown split {which!r}; known: {', '.join(SPLITS)}")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def sizes(self) -> dict[str, int]:
        """Samples per split, in ``SPLITS`` order."""
        return {s: int(self.split(s)[1].shape[0]) for s in SPLITS}

    def describe(self) -> dict[str, Any]:
        """A JSON/YAML-safe summary, for reports and for checking a resumed study's data."""
        return {
            "name": self.name,
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "sizes": self.sizes(),
            "split_hash": self.split_hash,
        }

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Invert ``apply_normalizer``: raw (encoded) features ``(x * std + mean) / scale``.

        Why: a scikit-learn teacher was fit by its user on raw features, so it must see them.
        """
        mean = torch.as_tensor(self.normalizer["mean"], dtype=torch.float64)
        std = torch.as_tensor(self.normalizer["std"], dtype=torch.float64)
        scale = float(self.normalizer.get("scale", 1.0))
        return ((x.double() * std + mean) / scale).float()
