"""Deterministic stratified train/val/test splits, and the hash that identifies one.

Why the care: studies record ``split_hash`` and refuse data that hashes differently, and every
stage must see the same samples for the same configuration. So the indices depend only on the
labels, the seed and the fractions, and the checks refuse a dataset exactly when this seed's
stratified cuts would fail or leave a class out of train, naming the class and a per-class
size that works for any seed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from autokd.config import DataConfig
from autokd.data.schema import SPLITS
from autokd.errors import DataError

__all__ = ["split_hash", "split_indices"]

# One logger name for the whole data layer, so log lines and filters read ``autokd.data``.
logger = logging.getLogger("autokd.data")


def split_indices(
    y: np.ndarray, names: list[str], cfg: DataConfig, predefined: dict | None
) -> dict[str, np.ndarray]:
    """Sorted index arrays per split: predefined ones as given, else a stratified 3-way split."""
    rel_val = cfg.val_fraction / (1.0 - cfg.test_fraction)
    if predefined is None:
        parts = _three_way(y, names, cfg, rel_val)
    else:
        parts = {k: np.asarray(v, dtype=np.int64) for k, v in predefined.items()}
        if "test" not in parts:  # an image folder may bring train/ and val/ only
            parts["train"], parts["test"] = _carve_val(
                y, names, parts["train"], cfg, cfg.test_fraction, "test")
        if "val" not in parts:
            parts["train"], parts["val"] = _carve_val(y, names, parts["train"], cfg, rel_val)
    missing = sorted(set(range(len(names))) - set(np.unique(y[parts["train"]]).tolist()))
    if missing:
        logger.warning("classes %s have no training samples", [names[c] for c in missing])
    return parts


def _three_way(
    y: np.ndarray, names: list[str], cfg: DataConfig, rel_val: float
) -> dict[str, np.ndarray]:
    """Two sklearn cuts: test off the whole set, then val off the rest (same seed).

    Beyond the 3-per-class policy, guards run on the actual outcome of each cut, so a dataset
    is refused exactly when this seed's split would fail or leave a class out of train, never
    on a pessimistic estimate; the error then advises a size that works for any seed.
    """
    n, k = len(y), len(names)
    n_test = _cut_size(n, cfg.test_fraction)
    n_val = _cut_size(n - n_test, rel_val)
    _check_split_sizes({"train": n - n_test - n_val, "val": n_val, "test": n_test}, k)
    counts = np.bincount(y, minlength=k)
    guard = _ClassGuard(
        counts,
        names,
        [(n, n_test), (n - n_test, n_val)],
        f"a stratified train/val/test split (test_fraction={cfg.test_fraction}, "
        f"val_fraction={cfg.val_fraction})",
    )
    guard.require(counts >= 3)  # policy: each split could hold one sample of every class
    rest, test = _cut(np.arange(n), y, cfg.test_fraction, cfg.seed)
    guard.require(np.bincount(y[rest], minlength=k) >= 2)  # sklearn's need for the 2nd cut
    train, val = _cut(rest, y, rel_val, cfg.seed)
    guard.require(np.bincount(y[train], minlength=k) >= 1)
    return {"train": train, "val": val, "test": test}


def _carve_val(
    y: np.ndarray,
    names: list[str],
    train: np.ndarray,
    cfg: DataConfig,
    rel_val: float,
    what: str = "validation",
) -> tuple[np.ndarray, np.ndarray]:
    """Cut validation (or a missing test split) off a predefined train split, in the ratio a
    3-way split would use."""
    k = len(names)
    counts = np.bincount(y[train], minlength=k)
    absent = counts == 0  # classes only in val/test make no demand on this cut
    n_val = _cut_size(len(train), rel_val)
    sizes = {"train": len(train) - n_val, "val" if what == "validation" else what: n_val}
    _check_split_sizes(sizes, int((~absent).sum()))
    guard = _ClassGuard(
        counts, names, [(len(train), n_val)], f"carving a stratified {what} split from "
        + ("X_train" if what == "validation" else "train")
    )
    guard.require(absent | (counts >= 2))
    keep, val = _cut(train, y, rel_val, cfg.seed)
    guard.require(absent | (np.bincount(y[keep], minlength=k) >= 1))
    return keep, val


def _cut_size(n: int, fraction: float) -> int:
    return math.ceil(fraction * n)  # how sklearn sizes a float test_size


def _check_split_sizes(sizes: dict[str, int], num_classes: int) -> None:
    for name, size in sizes.items():
        if size < num_classes:
            raise DataError(
                f"the {name} split would hold {size} samples, fewer than the "
                f"{num_classes} classes; use more data or other fractions"
            )


@dataclass
class _ClassGuard:
    """Names the smallest failing class, with a class size that works for any seed."""

    counts: np.ndarray
    names: list[str]
    steps: list[tuple[int, int]]
    what: str

    def require(self, ok: np.ndarray) -> None:
        if ok.all():
            return
        c = min(np.flatnonzero(~ok), key=lambda i: self.counts[i])
        raise DataError(
            f"class {self.names[c]!r} has only {int(self.counts[c])} sample(s), too "
            f"few for {self.what}; {_safe_class_count(self.steps)} per class always "
            "works"
        )


def _safe_class_count(steps: list[tuple[int, int]]) -> int:
    """Smallest class size that survives every cut, whatever sklearn's tie-breaking.

    Each step cuts ``n_cut`` of ``n_before`` samples. sklearn gives a class of ``m`` at most
    ``ceil(n_cut * m / n_before)`` of the cut and needs two members to stratify, and train must
    keep one. Survivors are non-decreasing in ``m``, so the first ``m`` that passes is the
    bound; it exists because the size checks leave every step a non-empty remainder.
    """

    def survives(m: int) -> bool:
        left = m
        for n_before, n_cut in steps:
            if left < 2:
                return False
            left -= math.ceil(n_cut * left / n_before - 1e-9)
        return left >= 1

    return next(m for m in itertools.count(3 if len(steps) > 1 else 2) if survives(m))


def _cut(
    idx: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    try:
        keep, cut = train_test_split(idx, test_size=fraction, random_state=seed, stratify=y[idx])
    except ValueError as exc:  # the checks above should make this unreachable
        raise DataError(f"stratified split failed: {exc}") from None
    return np.sort(keep), np.sort(cut)


def split_hash(
    meta: dict,
    x: np.ndarray,
    y: np.ndarray,
    names: list[str],
    cfg: DataConfig,
    parts: dict[str, np.ndarray],
) -> str:
    """Sixteen hex digits naming this exact split, recorded by studies to refuse another one.

    It covers the source's identity (for files the format and target, not the path, so moving
    a file keeps the hash), the data, the seed and fractions (left out when the source fixes
    all three splits, since they then change nothing) and the split indices.
    """
    fixed = set(meta.get("predefined") or ()) == set(SPLITS)
    header: dict[str, Any] = {
        "v": 1,
        "identity": meta.get("identity", {"source": cfg.source}),
        "x": [str(x.dtype), list(x.shape)],
        "class_names": names,
    }
    if not fixed:  # seed and fractions only matter when we chose the split
        header.update(seed=cfg.seed, val=cfg.val_fraction, test=cfg.test_fraction)
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    if meta.get("x_digest"):  # a cached file's checksum: no second pass over its bytes
        digest.update(str(meta["x_digest"]).encode())
    else:
        digest.update(np.ascontiguousarray(x))
    digest.update(np.ascontiguousarray(y, dtype=np.int64))
    for name in SPLITS:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(parts[name], dtype=np.int64))
    return digest.hexdigest()[:16]
