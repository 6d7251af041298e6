"""Checks on features and labels, whatever source they came from.

Why here and not in each source: every mistake in the user's data must surface as the same
one-line ``DataError`` rather than as a shape error deep inside training, so all sources pass
through these two functions.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from autokd.data.schema import NDIM
from autokd.errors import DataError

__all__ = ["check_features", "encode_labels"]

# One logger name for the whole data layer, so log lines and filters read ``autokd.data``.
logger = logging.getLogger("autokd.data")


def check_features(x: Any, kind: str, source: str) -> np.ndarray:
    """Reject features that would fail later in confusing ways; bool becomes float."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DataError(
            f"features of {source} have dtype {x.dtype}, not numeric; encode them as numbers first"
        )
    if x.ndim < 2:
        raise DataError(
            f"features of {source} are {x.ndim}-D (shape {x.shape}); need one row "
            "per sample: (N, F), (N, C, L) or (N, C, H, W)"
        )
    if x.ndim != NDIM[kind]:
        raise DataError(f"{kind} features of {source} must be {NDIM[kind]}-D, got {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"dataset {source} is empty (0 samples)")
    if 0 in x.shape[1:]:
        raise DataError(f"dataset {source} has no features (per-sample shape {x.shape[1:]})")
    x = x.astype(np.float64) if x.dtype.kind == "b" else x
    if x.dtype.kind in "iu":  # integers are always finite; skip a pass over (mapped) data
        return x
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        rows = int(np.count_nonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1)))
        raise DataError(f"features of {source} contain {bad} NaN/inf values (in {rows} samples)")
    return x


def encode_labels(
    y: Any, source: str, names: list[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Map labels to int64 ``0..K-1`` and name the classes.

    Non-contiguous integer labels are remapped in sorted order (with a warning) and
    ``class_names`` keep the originals; whole-number floats are accepted, fractional ones
    rejected because they look like regression targets.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"labels of {source} have shape {y.shape}; need one class id per sample")
    if y.dtype.kind == "O":
        y = y.astype(str)
    if y.dtype.kind == "f":
        y = _whole_float_labels(y, source)
    if y.dtype.kind not in "biuUS":
        raise DataError(f"labels of {source} have unsupported dtype {y.dtype}")
    uniques, codes = np.unique(y, return_inverse=True)
    class_names = _class_names(uniques, names, source)
    if len(uniques) < 2:
        found = repr(class_names[0]) if class_names else "none"
        raise DataError(f"only one class ({found}) in {source}; classification needs at least 2")
    return codes.reshape(-1).astype(np.int64), class_names


def _whole_float_labels(y: np.ndarray, source: str) -> np.ndarray:
    bad = ~np.isfinite(y)
    if bad.any():
        raise DataError(f"labels of {source} contain {int(bad.sum())} NaN/inf values")
    frac = y != np.round(y)
    if frac.any():
        raise DataError(
            f"labels of {source} are fractional floats (e.g. {y[frac][0]!r}); "
            "labels must be class ids, not regression targets"
        )
    return y.astype(np.int64)


def _class_names(uniques: np.ndarray, names: list[str] | None, source: str) -> list[str]:
    if uniques.dtype.kind in "US":
        return [str(u) for u in uniques]
    if names is not None and len(uniques) and uniques[0] >= 0 and uniques[-1] < len(names):
        picked = [str(names[int(u)]) for u in uniques]
    else:
        picked = [str(u.item()) for u in uniques]
    if uniques.dtype.kind in "iu" and not np.array_equal(uniques, np.arange(len(uniques))):
        logger.warning(
            "labels of %s are %s, not 0..%d; remapped in sorted order "
            "(class_names keep the originals)",
            source,
            _preview(uniques),
            len(uniques) - 1,
        )
    return picked


def _preview(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(v) for v in values[:limit].tolist())
    return "{" + shown + (", ..." if len(values) > limit else "") + "}"
