"""Dataset sources, deterministic stratified splits, train-only normalisation, in-memory batches.

Why one module: every later stage (teacher, training, cost, report) must see the same tensors for
the same configuration and must be able to tell whether two runs used the same split. So loading
is one function, :func:`load_data`, returning a :class:`DataSplits` that carries a
``split_hash``; every mistake in the user's data surfaces here as a one-line ``DataError`` rather
than as a shape error deep inside training.

Sources (``DataConfig.source``):

* ``digits`` (default), ``wine``, ``breast_cancer``: bundled with scikit-learn, no network.
* ``mnist1d``: generated locally by the ``mnist1d`` package (never its download path).
* ``npz:PATH``: arrays ``X`` and ``y``, or predefined ``X_train``/``y_train``/``X_test``/``y_test``
  (``X_val``/``y_val`` optional; without them validation is carved from train).
* ``csv:PATH`` with ``DataConfig.target``: numeric columns as floats, text/category/bool
  columns one-hot encoded.

Choices worth knowing:

* Labels become ``0..K-1``. Integer labels that are not already contiguous (e.g. ``{3, 7, 9}``)
  are remapped in sorted order with a warning; ``class_names`` keeps the originals. Whole-number
  float labels are accepted; fractional ones are rejected (they look like regression targets).
* One-hot categories are fitted on all rows, not only train. This leaks the *vocabulary* of a
  column (which category names exist), never statistics, and it guarantees that val/test rows
  never meet an unknown category.
* Missing values are an error naming the column: imputing silently would change the task.
* Every class needs at least 3 samples (one per split could exist), and the split is refused
  exactly when this seed's stratified cuts would fail or leave a class out of train; the error
  names the class and a per-class size that works for any seed.
* A 3-D npz ``X`` is ambiguous: square ``(N, H, W)`` is read as a one-channel image, anything
  else as an ``(N, C, L)`` signal; a ``kind`` entry in the npz overrides the guess.
* ``split_hash`` covers the source's identity (``digits``; for files the format and target, not
  the path, so moving a file keeps the hash), the data content, the seed and fractions (left out
  when the npz fixes all three splits, since they then change nothing) and the split indices.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import logging
import math
import operator
import os
import random
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from autokd.config import DataConfig, from_dict, to_dict
from autokd.errors import DataError
from autokd.registry import Registry

__all__ = [
    "KINDS",
    "SOURCES",
    "SPLITS",
    "DataSplits",
    "apply_normalizer",
    "dataset_names",
    "iterate_batches",
    "load_data",
    "make_loader",
]

logger = logging.getLogger(__name__)

KINDS = ("image", "signal", "tabular")
SPLITS = ("train", "val", "test")
_NDIM = {"tabular": 2, "signal": 3, "image": 4}
_FILE_FORMS = ("npz:PATH", "csv:PATH")
_NPZ_KEYS = ("X", "y", "kind", *(f"{a}_{s}" for s in SPLITS for a in ("X", "y")))
_MNIST1D_MISSING = "mnist1d needs the mnist1d package: pip install 'autokd[mnist1d]'"

Loader = Callable[[DataConfig], tuple[np.ndarray, np.ndarray, str, dict]]
#: name -> ``loader(cfg) -> (X, y, kind, meta)``. ``meta`` may hold ``class_names``,
#: ``scale`` (multiplied into X before normalising), ``identity`` (dict for the split hash),
#: ``predefined`` ({split: indices}), ``feature_names``, ``encoding`` and ``generated``.
SOURCES: Registry[Loader] = Registry("dataset")


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


# --------------------------------------------------------------------------- public entry points


def load_data(cfg: DataConfig | str = "digits", **overrides: Any) -> DataSplits:
    """Load a source, split it, normalise it on train only and hash the split.

    Args:
        cfg: a ``DataConfig``, or a source string (shorthand for ``DataConfig(source=...)``).
        **overrides: ``DataConfig`` fields replacing those of ``cfg`` (``seed=1``, ...).

    Raises:
        DataError: the source is unknown or its data is unusable (the message says why).
        ConfigError: an override is not a ``DataConfig`` field or a fraction is out of range.
    """
    cfg = _resolve_config(cfg, overrides)
    x, y, kind, meta = _read_source(cfg)
    x = _check_features(x, kind, cfg.source)
    y, class_names = _encode_labels(y, cfg.source, meta.get("class_names"))
    if len(x) != len(y):
        raise DataError(f"{cfg.source}: X has {len(x)} samples but y has {len(y)}")
    parts = _split_indices(y, class_names, cfg, meta.get("predefined"))
    normalizer = _fit_normalizer(x[parts["train"]], kind, float(meta.get("scale", 1.0)))
    if "encoding" in meta:
        normalizer["encoding"] = meta["encoding"]
    split_hash = _split_hash(meta, x, y, class_names, cfg, parts)
    splits = _assemble(cfg.source, kind, x, y, parts, class_names, normalizer, split_hash, meta)
    logger.info(
        "loaded %s (%s): sizes %s, %d classes, split %s",
        splits.name,
        kind,
        splits.sizes(),
        splits.num_classes,
        split_hash,
    )
    return splits


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


def iterate_batches(
    n: int,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield index tensors covering ``range(n)`` once per call, in batches.

    Why not a DataLoader: our datasets fit in memory, so indexing whole tensors with a batch of
    indices (``x[idx]``) avoids the per-sample ``__getitem__`` and collate cost entirely. With
    ``shuffle`` and no ``generator`` the global torch RNG is used.
    """
    n, batch_size = _as_int(n, "n"), _as_int(batch_size, "batch_size")
    if n < 0:
        raise DataError(f"iterate_batches needs n >= 0, got {n}")
    if batch_size < 1:
        raise DataError(f"batch_size must be an integer >= 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    return (order[i : i + batch_size] for i in range(0, stop, batch_size))


def _as_int(value: Any, name: str) -> int:
    """Accept any integer type (``np.int64``, 0-d tensors) but never a silently truncated float."""
    try:
        return operator.index(value)
    except TypeError:
        raise DataError(f"{name} must be an integer, got {value!r}") from None


def make_loader(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool, seed: int
) -> DataLoader:
    """A seeded ``DataLoader`` over ``(x, y)``: for data too large to index whole, or to compare.

    The generator is private to the loader so its order depends on ``seed`` alone, not on
    whatever else consumed the global RNG.
    """
    if len(x) != len(y):
        raise DataError(f"make_loader: x has {len(x)} samples but y has {len(y)}")
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(
        TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=generator
    )


def dataset_names() -> list[str]:
    """Registered source names, each loadable as is; files use ``npz:PATH`` / ``csv:PATH``."""
    return SOURCES.names()


# --------------------------------------------------------------------------- config and lookup


def _resolve_config(cfg: DataConfig | str, overrides: dict[str, Any]) -> DataConfig:
    if isinstance(cfg, str):
        base: dict[str, Any] = {"source": cfg}
    elif isinstance(cfg, DataConfig):
        base = to_dict(cfg)
    else:
        raise DataError(f"load_data needs a DataConfig or a source string, not {type(cfg)}")
    resolved = from_dict(DataConfig, {**base, **overrides}).validate()
    if not isinstance(resolved.source, str) or not resolved.source.strip():
        raise DataError("data source is empty; use a name such as 'digits' or npz:PATH / csv:PATH")
    return resolved


def _read_source(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, str, dict]:
    """Dispatch to a file loader (``npz:``/``csv:``) or a registered one; check what it returns."""
    prefix, sep, rest = cfg.source.partition(":")
    if sep and prefix in _FILE_LOADERS:
        if not rest:
            raise DataError(f"{prefix}: needs a path, e.g. '{prefix}:data/mydata.{prefix}'")
        out = _FILE_LOADERS[prefix](os.path.expanduser(rest), cfg)
    elif cfg.source in SOURCES:
        out = SOURCES.get(cfg.source)(cfg)
    else:
        raise _unknown_source(cfg.source)
    x, y, kind, meta = out
    if kind not in KINDS:
        raise DataError(f"source {cfg.source!r} returned kind {kind!r}; known: {', '.join(KINDS)}")
    if cfg.num_samples is not None and not meta.get("generated"):
        logger.warning(
            "num_samples=%s ignored: %s is not a generated source", cfg.num_samples, cfg.source
        )
    return x, y, kind, dict(meta)


def _unknown_source(source: str) -> DataError:
    known = dataset_names()
    lowered = source.lower()
    if lowered.endswith((".npz", ".csv")):
        hint = f" (did you mean '{lowered[-3:]}:{source}'?)"
    else:
        close = difflib.get_close_matches(lowered, [*known, "npz", "csv"], n=1)
        guess = {"npz": "npz:PATH", "csv": "csv:PATH"}.get(close[0], close[0]) if close else ""
        hint = f" (did you mean {guess!r}?)" if guess else ""
    forms = ", ".join([*known, *_FILE_FORMS])
    return DataError(f"unknown dataset {source!r}{hint}; known: {forms}")


def _check_file(path: str, fmt: str) -> None:
    if not os.path.exists(path):
        raise DataError(f"{fmt} file not found: {path!r}")
    if os.path.isdir(path):
        raise DataError(f"{fmt} path is a directory, not a file: {path!r}")


# --------------------------------------------------------------------------- validation


def _check_features(x: Any, kind: str, source: str) -> np.ndarray:
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
    if x.ndim != _NDIM[kind]:
        raise DataError(f"{kind} features of {source} must be {_NDIM[kind]}-D, got {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"dataset {source} is empty (0 samples)")
    if 0 in x.shape[1:]:
        raise DataError(f"dataset {source} has no features (per-sample shape {x.shape[1:]})")
    x = x.astype(np.float64) if x.dtype.kind == "b" else x
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        rows = int(np.count_nonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1)))
        raise DataError(f"features of {source} contain {bad} NaN/inf values (in {rows} samples)")
    return x


def _encode_labels(
    y: Any, source: str, names: list[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Map labels to int64 ``0..K-1`` and name the classes (see module docstring for why)."""
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


# --------------------------------------------------------------------------- splitting


def _split_indices(
    y: np.ndarray, names: list[str], cfg: DataConfig, predefined: dict | None
) -> dict[str, np.ndarray]:
    """Sorted index arrays per split: predefined ones as given, else a stratified 3-way split."""
    rel_val = cfg.val_fraction / (1.0 - cfg.test_fraction)
    if predefined is None:
        parts = _three_way(y, names, cfg, rel_val)
    else:
        parts = {k: np.asarray(v, dtype=np.int64) for k, v in predefined.items()}
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
    y: np.ndarray, names: list[str], train: np.ndarray, cfg: DataConfig, rel_val: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cut validation off a predefined train split, in the same ratio a 3-way split would use."""
    k = len(names)
    counts = np.bincount(y[train], minlength=k)
    absent = counts == 0  # classes only in val/test make no demand on this cut
    n_val = _cut_size(len(train), rel_val)
    _check_split_sizes({"train": len(train) - n_val, "val": n_val}, int((~absent).sum()))
    guard = _ClassGuard(
        counts, names, [(len(train), n_val)], "carving a stratified validation split from X_train"
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


# --------------------------------------------------------------------------- normalise, hash


def _fit_normalizer(x_train: np.ndarray, kind: str, scale: float) -> dict[str, Any]:
    """Statistics from train only, so val/test stay honest held-out data."""
    xs = x_train.astype(np.float64) * scale
    if kind == "tabular":
        mean, std = xs.mean(axis=0), xs.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)  # constant feature: centre it, do not blow it up
        return {"mean": mean.tolist(), "std": std.tolist(), "scale": scale}
    mean, std = float(xs.mean()), float(xs.std())
    return {"mean": mean, "std": std if std > 1e-12 else 1.0, "scale": scale}


def _split_hash(
    meta: dict,
    x: np.ndarray,
    y: np.ndarray,
    names: list[str],
    cfg: DataConfig,
    parts: dict[str, np.ndarray],
) -> str:
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
    digest.update(np.ascontiguousarray(x))
    digest.update(np.ascontiguousarray(y, dtype=np.int64))
    for name in SPLITS:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(parts[name], dtype=np.int64))
    return digest.hexdigest()[:16]


def _assemble(
    source: str,
    kind: str,
    x: np.ndarray,
    y: np.ndarray,
    parts: dict[str, np.ndarray],
    names: list[str],
    normalizer: dict[str, Any],
    split_hash: str,
    meta: dict,
) -> DataSplits:
    xn = apply_normalizer(x, normalizer)
    tensors: dict[str, torch.Tensor] = {}
    for name in SPLITS:
        tensors[f"x_{name}"] = torch.from_numpy(np.ascontiguousarray(xn[parts[name]]))
        tensors[f"y_{name}"] = torch.from_numpy(y[parts[name]])
    keep = {k: meta[k] for k in ("identity", "feature_names", "generated") if k in meta}
    keep["predefined_splits"] = sorted(meta.get("predefined") or ())
    return DataSplits(
        name=source,
        kind=kind,
        input_shape=tuple(int(d) for d in x.shape[1:]),
        num_classes=len(names),
        split_hash=split_hash,
        class_names=list(names),
        normalizer=normalizer,
        meta=keep,
        **tensors,
    )


# --------------------------------------------------------------------------- built-in sources


@SOURCES.register("digits")
def _load_digits(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, str, dict]:
    """8x8 handwritten digits, raw pixels 0..16; ``scale`` brings them to 0..1 first."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images[:, None, :, :]  # (N, 1, 8, 8)
    names = [str(t) for t in bunch.target_names]
    return (
        x,
        bunch.target,
        "image",
        {"class_names": names, "scale": 1.0 / 16.0, "identity": {"source": "digits"}},
    )


def _sklearn_tabular(name: str, loader_name: str) -> Loader:
    def load(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, str, dict]:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        meta = {
            "class_names": [str(t) for t in bunch.target_names],
            "feature_names": [str(f) for f in bunch.feature_names],
            "identity": {"source": name},
        }
        return bunch.data, bunch.target, "tabular", meta

    load.__doc__ = f"scikit-learn's bundled ``{loader_name}`` (no download)."
    return load


SOURCES.register("wine", _sklearn_tabular("wine", "load_wine"))
SOURCES.register("breast_cancer", _sklearn_tabular("breast_cancer", "load_breast_cancer"))


@SOURCES.register("mnist1d")
def _load_mnist1d(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, str, dict]:
    """MNIST-1D generated locally; its own train/test cut is merged so we split it like the rest.

    Generating the package default (5000 samples) takes well under a second, so nothing is
    cached on disk.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError(_MNIST1D_MISSING) from None
    args = get_dataset_args()
    if cfg.num_samples is not None:
        if not isinstance(cfg.num_samples, int) or cfg.num_samples < 10:
            raise DataError(
                f"mnist1d num_samples must be an integer >= 10, got {cfg.num_samples!r}"
            )
        args.num_samples = cfg.num_samples
    args.seed = cfg.seed
    data = _generate_mnist1d(make_dataset, args)
    x = np.concatenate([data["x"], data["x_test"]])[:, None, :]  # (N, 1, 40)
    y = np.concatenate([data["y"], data["y_test"]])
    identity = {"source": "mnist1d", "num_samples": int(args.num_samples), "seed": int(args.seed)}
    meta = {"class_names": [str(i) for i in range(10)], "identity": identity, "generated": True}
    return x, y, "signal", meta


def _generate_mnist1d(make_dataset: Callable[[Any], dict], args: Any) -> dict:
    # make_dataset reseeds the *global* random and numpy RNGs; restore them so loading data
    # does not silently change every later random draw in the caller's process.
    py_state, np_state = random.getstate(), np.random.get_state()
    start = time.perf_counter()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    logger.debug(
        "generated %d mnist1d samples in %.2f s", args.num_samples, time.perf_counter() - start
    )
    return data


# --------------------------------------------------------------------------- npz files


def _load_npz(path: str, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, str, dict]:
    arrays, keys = _read_npz(path)
    if any(k in arrays for k in _NPZ_KEYS if "_" in k):
        x, y, predefined = _npz_predefined(arrays, keys, path)
    else:
        x, y, predefined = (*_npz_xy(arrays, keys, path), None)
    kind, x = _npz_kind(x, arrays.get("kind"), path)
    return x, y, kind, {"identity": {"format": "npz"}, "predefined": predefined}


def _read_npz(path: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Read only the keys we use, never unpickling (an npz can carry arbitrary code)."""
    _check_file(path, "npz")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read npz file {path!r}: {exc}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{path!r} holds a single array, not an .npz archive; "
            "save with np.savez(path, X=..., y=...)"
        )
    with archive:
        keys = list(archive.files)
        return {k: _npz_member(archive, k, path) for k in keys if k in _NPZ_KEYS}, keys


def _npz_member(archive: Any, key: str, path: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"array {key!r} in {path!r} holds Python objects (dtype=object); "
                "save numeric arrays (autokd never unpickles data)"
            ) from None
        raise DataError(f"cannot read array {key!r} from {path!r}: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read array {key!r} from {path!r}: {exc}") from None


def _npz_xy(
    arrays: dict[str, np.ndarray], keys: list[str], path: str
) -> tuple[np.ndarray, np.ndarray]:
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        raise DataError(
            f"npz file {path!r} has no {' or '.join(map(repr, missing))} array; "
            f"keys present: {', '.join(keys) or 'none'} (expected X and y, or "
            "X_train/y_train/X_test/y_test)"
        )
    x, y = _npz_pair(arrays, "X", "y", path)
    return x, y


def _npz_pair(
    arrays: dict[str, np.ndarray], xkey: str, ykey: str, path: str
) -> tuple[np.ndarray, np.ndarray]:
    """One X/y pair, checked with the key names in every message."""
    x, y = arrays[xkey], arrays[ykey]
    if x.dtype.kind not in "biuf":
        raise DataError(
            f"{xkey} in {path!r} has dtype {x.dtype}, not numeric; features must be numbers"
        )
    if x.ndim < 2:
        raise DataError(
            f"{xkey} in {path!r} is {x.ndim}-D (shape {x.shape}); need one row per "
            "sample: (N, F), (N, C, L), (N, H, W) or (N, C, H, W)"
        )
    if y.ndim == 0 or len(x) != len(y):
        n_y = 0 if y.ndim == 0 else len(y)
        raise DataError(f"{xkey} has {len(x)} samples but {ykey} has {n_y} in {path!r}")
    return x, y


def _npz_predefined(
    arrays: dict[str, np.ndarray], keys: list[str], path: str
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Concatenate predefined splits (so labels map jointly) and remember their index ranges."""
    present = [s for s in SPLITS if f"X_{s}" in arrays or f"y_{s}" in arrays]
    listing = f"keys present: {', '.join(keys)}"
    for s in present:
        if f"X_{s}" not in arrays or f"y_{s}" not in arrays:
            raise DataError(f"npz file {path!r} needs both X_{s} and y_{s}; {listing}")
    if not {"train", "test"} <= set(present):
        raise DataError(
            f"npz file {path!r} has predefined splits {present} but needs at least "
            f"X_train/y_train and X_test/y_test; {listing}"
        )
    if "X" in arrays or "y" in arrays:
        logger.warning("%s: X/y ignored because predefined X_train/X_test splits exist", path)
    pairs = [_npz_pair(arrays, f"X_{s}", f"y_{s}", path) for s in present]
    parts, start = {}, 0
    for s, (x, _) in zip(present, pairs, strict=True):
        if len(x) == 0:
            raise DataError(f"X_{s} in {path!r} is empty (0 samples)")
        if x.shape[1:] != pairs[0][0].shape[1:]:
            raise DataError(
                f"X_{s} in {path!r} has per-sample shape {x.shape[1:]} but X_train "
                f"has {pairs[0][0].shape[1:]}"
            )
        parts[s] = np.arange(start, start + len(x))
        start += len(x)
    try:
        x_all = np.concatenate([x for x, _ in pairs])
        return x_all, np.concatenate([y for _, y in pairs]), parts
    except (TypeError, ValueError) as exc:
        raise DataError(f"predefined splits in {path!r} do not combine: {exc}") from None


def _npz_kind(x: np.ndarray, kind_arr: np.ndarray | None, path: str) -> tuple[str, np.ndarray]:
    """Infer image/signal/tabular from X's rank; an optional ``kind`` entry overrides.

    3-D is ambiguous: square ``(N, H, W)`` is read as a one-channel image, anything else as a
    ``(N, C, L)`` signal. Save ``kind="image"`` or ``kind="signal"`` in the npz to force it.
    """
    if kind_arr is not None:
        kind = str(kind_arr)
        if kind not in KINDS:
            raise DataError(f"'kind' in {path!r} is {kind!r}; known: {', '.join(KINDS)}")
    elif x.ndim == 3:
        kind = "image" if x.shape[1] == x.shape[2] else "signal"
    else:
        kind = {2: "tabular", 4: "image"}.get(x.ndim, "")
    if kind == "image" and x.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    if not kind or x.ndim != _NDIM[kind]:
        raise DataError(
            f"X in {path!r} has shape {x.shape}; expected (N, F) tabular, (N, C, L) "
            "signal, or (N, H, W) / (N, C, H, W) image"
        )
    return kind, x


# --------------------------------------------------------------------------- csv files


def _load_csv(path: str, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, str, dict]:
    frame = _read_csv(path)
    target = _csv_target(frame, cfg.target, path)
    y = _csv_labels(frame[target], target, path)
    x, encoding = _csv_features(frame.drop(columns=[target]), path)
    meta = {
        "identity": {"format": "csv", "target": target},
        "encoding": encoding,
        "feature_names": encoding["feature_names"],
    }
    return x, y, "tabular", meta


def _read_csv(path: str) -> Any:
    import pandas as pd

    _check_file(path, "csv")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"csv file {path!r} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise DataError(f"cannot read csv file {path!r}: {exc}") from None
    if len(frame) == 0:
        raise DataError(f"csv file {path!r} is empty (a header but 0 rows)")
    return frame


def _csv_target(frame: Any, target: str | None, path: str) -> str:
    columns = [str(c) for c in frame.columns]
    listing = f"columns: {', '.join(columns)}"
    if target is None:
        raise DataError(
            f"csv source {path!r} needs a target column (DataConfig.target); {listing}"
        )
    if target not in frame.columns:
        close = difflib.get_close_matches(target, columns, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"target column {target!r} not in {path!r}{hint}; {listing}")
    return target


def _csv_labels(column: Any, target: str, path: str) -> np.ndarray:
    import pandas.api.types as ptypes

    missing = int(column.isna().sum())
    if missing:
        raise DataError(f"target column {target!r} in {path!r} has {missing} missing values")
    if ptypes.is_bool_dtype(column):
        return column.to_numpy(dtype=bool)
    if ptypes.is_integer_dtype(column):
        return column.to_numpy(dtype=np.int64)
    if ptypes.is_float_dtype(column):
        return column.to_numpy(dtype=np.float64)
    return np.asarray(column.astype(str).tolist())


def _csv_features(frame: Any, path: str) -> tuple[np.ndarray, dict[str, Any]]:
    if frame.shape[1] == 0:
        raise DataError(f"csv file {path!r} has no feature columns besides the target")
    blocks, names = [], []
    encoding: dict[str, Any] = {"numeric": [], "categorical": {}}
    for col in frame.columns:
        block, categories = _encode_column(frame[col], str(col), path)
        blocks.append(block)
        if categories is None:
            encoding["numeric"].append(str(col))
            names.append(str(col))
        else:
            encoding["categorical"][str(col)] = categories
            names.extend(f"{col}={c}" for c in categories)
    encoding["feature_names"] = names
    return np.concatenate(blocks, axis=1), encoding


def _encode_column(series: Any, col: str, path: str) -> tuple[np.ndarray, list[str] | None]:
    """One column -> (N, width) float block, plus its categories when one-hot encoded."""
    import pandas as pd
    import pandas.api.types as ptypes

    missing = int(series.isna().sum())
    if missing:
        raise DataError(
            f"column {col!r} in {path!r} has {missing} missing values; fill or drop "
            "them first (autokd does not impute)"
        )
    if ptypes.is_numeric_dtype(series) and not ptypes.is_bool_dtype(series):
        values = series.to_numpy(dtype=np.float64)
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise DataError(f"column {col!r} in {path!r} has {bad} NaN/inf values")
        return values[:, None], None
    categorical = isinstance(series.dtype, pd.CategoricalDtype)
    if not (
        categorical
        or ptypes.is_bool_dtype(series)
        or ptypes.is_object_dtype(series)
        or ptypes.is_string_dtype(series)
    ):
        raise DataError(
            f"column {col!r} in {path!r} has dtype {series.dtype}; convert it to numbers or text"
        )
    return _one_hot(series.astype(str), col)


def _one_hot(text: Any, col: str) -> tuple[np.ndarray, list[str]]:
    """Sorted categories -> one column each; a near-unique text column is probably a mistake."""
    import pandas as pd

    categories = sorted(text.unique().tolist())
    if len(categories) > 50 and len(categories) > len(text) // 2:
        logger.warning(
            "column %r has %d distinct values, so %d one-hot features; "
            "is it a numeric column read as text?",
            col,
            len(categories),
            len(categories),
        )
    codes = pd.Categorical(text, categories=categories).codes
    return np.eye(len(categories))[codes], categories


_FILE_LOADERS: dict[str, Callable[[str, DataConfig], tuple]] = {"npz": _load_npz, "csv": _load_csv}
