"""Scarce labels, unlabelled inputs and privileged features, applied while data is loaded.

Why at load time: each option changes what the data *is* (which samples carry labels, which
inputs exist without them, which columns a student may read), so it must be part of the split
hash that studies record, and every stage (teacher, trainer, cost, export, a worker rebuilding
the data from its ``DataConfig``) must see the same result.

* ``train_fraction`` / ``shots_per_class`` shrink the labelled train split, per class and
  deterministically by the data seed; val and test stay as they were.
* ``unlabeled`` adds inputs whose labels (if any) are ignored, normalised like train, kept in
  ``DataSplits.x_unlabeled``. ``rest`` names the train samples the shrinking left out. Rows that
  also occur in val or test (same sha256 of their values) would leak into selection and
  reporting: they are dropped and counted, and nothing left is an error.
* ``student_features`` (tabular) gives the student a subset of the columns; the teacher keeps
  every column through ``DataSplits.teacher_view`` (learning using privileged information,
  Vapnik & Vashist 2009).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import logging
from typing import Any

import numpy as np
import torch

from autokd.config import DataConfig
from autokd.data.normalize import apply_normalizer
from autokd.data.schema import DataSplits
from autokd.data.sources import read_source
from autokd.data.validate import check_features
from autokd.errors import DataError

__all__ = ["attach_unlabeled", "restrict_columns", "shrink_train", "student_columns"]

# One logger name for the whole data layer, so log lines and filters read ``autokd.data``.
logger = logging.getLogger("autokd.data")
_SHRINK_SALT = 0x5CA7CE  # keeps the shrinking's draws apart from other uses of the data seed


def shrink_train(parts: dict[str, np.ndarray], y: np.ndarray, names: list[str],
                 cfg: DataConfig,
                 meta: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Keep a stratified part of the train split; returns the new parts and the left-out rows.

    Per class: ``max(1, round(F * n_c))`` samples (``train_fraction``) or ``min(K, n_c)``
    (``shots_per_class``), drawn by a generator fixed by the data seed, so every class keeps
    at least one labelled sample and the same configuration always keeps the same samples.
    The counts go into ``meta["labels"]`` (shown by ``DataSplits.describe``).
    """
    train = parts["train"]
    if cfg.train_fraction is None and cfg.shots_per_class is None:
        return parts, np.empty(0, dtype=np.int64)
    rng = np.random.default_rng([int(cfg.seed) & 0xFFFFFFFF, _SHRINK_SALT])
    keep: list[np.ndarray] = []
    short: list[str] = []
    for c in range(len(names)):
        rows = train[y[train] == c]
        if len(rows) == 0:
            continue
        if cfg.shots_per_class is not None:
            k = min(cfg.shots_per_class, len(rows))
            if k < cfg.shots_per_class:
                short.append(names[c])
        else:
            k = max(1, round(float(cfg.train_fraction) * len(rows)))  # type: ignore[arg-type]
        keep.append(rng.permutation(rows)[:k])
    if short:
        logger.warning("classes %s have fewer than %d training samples; all of theirs are kept",
                       short, cfg.shots_per_class)
    kept = np.sort(np.concatenate(keep))
    dropped = np.setdiff1d(train, kept)
    how = ({"train_fraction": cfg.train_fraction} if cfg.train_fraction is not None
           else {"shots_per_class": cfg.shots_per_class})
    meta["labels"] = {**how, "labelled": len(kept), "left_out": len(dropped)}
    logger.info("labelled train split shrunk to %d of %d samples (%s)", len(kept), len(train),
                how)
    return {**parts, "train": kept}, dropped


def attach_unlabeled(splits: DataSplits, cfg: DataConfig, x: np.ndarray,
                     parts: dict[str, np.ndarray], dropped: np.ndarray,
                     meta: dict[str, Any]) -> None:
    """Add ``cfg.unlabeled``'s inputs to ``splits`` (in place), minus rows seen in val/test.

    The inputs are normalised with the labelled train split's normaliser; the split hash is
    extended by the source's identity and the kept rows, so a teacher's cached outputs and a
    study's recorded data follow them.

    Raises:
        DataError: text or streamed data, a source of another kind or shape, or every
            unlabelled row also in val or test.
    """
    source = str(cfg.unlabeled)
    if splits.kind == "tokens":
        raise DataError("--unlabeled supports image, signal and tabular data, not text")
    if splits.streaming:
        raise DataError("--unlabeled needs data that fits in memory; this data is streamed "
                        "(raise --memory-budget)")
    if source == "rest":
        raw, identity = x[dropped], {"source": "rest"}
    else:
        raw, identity = _read_unlabeled(cfg, splits, meta)
    if len(raw) == 0:
        raise DataError(f"unlabeled {source!r} holds no samples")
    seen = _row_hashes(x[parts["val"]]) | _row_hashes(x[parts["test"]])
    keep = np.array([h not in seen for h in _row_list(raw)], dtype=bool)
    leaked = int((~keep).sum())
    if not keep.any():
        raise DataError(f"every one of the {len(raw)} unlabelled samples of {source!r} also "
                        "occurs in the validation or test split; nothing is left to use")
    if leaked:
        logger.warning("unlabeled %s: dropped %d of %d samples that also occur in the "
                       "validation or test split", source, leaked, len(raw))
    raw = raw[keep]
    splits.x_unlabeled = torch.from_numpy(np.ascontiguousarray(
        apply_normalizer(np.asarray(raw), splits.normalizer)))
    splits.meta["unlabeled"] = {"source": source, "samples": len(raw), "leaked_dropped": leaked}
    digest = hashlib.sha256(splits.split_hash.encode())
    digest.update(repr(sorted(identity.items())).encode())
    digest.update(np.ascontiguousarray(raw, dtype=np.float64))
    splits.split_hash = digest.hexdigest()[:16]


def _read_unlabeled(cfg: DataConfig, splits: DataSplits,
                    meta: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Raw rows of another source (its labels, if any, never read), in the labelled units."""
    ucfg = dataclasses.replace(cfg, source=str(cfg.unlabeled), unlabeled=None,
                               train_fraction=None, shots_per_class=None,
                               student_features=None)
    prefix, _, path = ucfg.source.partition(":")
    umeta: dict[str, Any]
    if prefix == "npz" and (found := _npz_features(path)) is not None:
        x, kind, umeta = found[0], found[1], {"identity": {"format": "npz"}}
    elif prefix == "csv" and path:
        from autokd.data.csv import read_csv_features

        x, umeta = read_csv_features(path, cfg.target)
        kind = "tabular"
    else:
        x, _labels, kind, umeta = read_source(ucfg)
    x = check_features(x, kind, ucfg.source)
    if kind != splits.kind or tuple(x.shape[1:]) != tuple(splits.input_shape):
        raise DataError(f"unlabeled {ucfg.source!r} is {kind} data of per-sample shape "
                        f"{tuple(x.shape[1:])}; the labelled data is {splits.kind} of shape "
                        f"{tuple(splits.input_shape)}")
    names, unames = meta.get("feature_names"), umeta.get("feature_names")
    if names is not None and unames is not None and list(names) != list(unames):
        raise DataError(f"unlabeled {ucfg.source!r} has other columns than the labelled data "
                        f"(first difference: {_first_difference(names, unames)})")
    scale, uscale = float(meta.get("scale", 1.0)), float(umeta.get("scale", 1.0))
    if scale != uscale:  # the same physical values in the labelled source's raw units
        x = np.asarray(x, dtype=np.float64) * (uscale / scale)
    identity = {"source": "file", **umeta.get("identity", {"source": ucfg.source})}
    return np.asarray(x), identity


def _npz_features(path: str) -> tuple[np.ndarray, str] | None:
    from autokd.data.npz import read_npz_features

    return read_npz_features(path)


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (p, q) in enumerate(zip(a, b, strict=False)):
        if p != q:
            return f"column {i} is {q!r}, not {p!r}"
    return f"{len(b)} columns, not {len(a)}"


def _row_list(x: np.ndarray) -> list[bytes]:
    """sha256 of each row's values as float64 (so the same numbers stored as ints, float32 or
    float64 hash alike)."""
    rows = np.ascontiguousarray(np.asarray(x), dtype=np.float64).reshape(len(x), -1)
    rows = rows + 0.0  # -0.0 and 0.0 are the same value: one byte pattern
    return [hashlib.sha256(r.tobytes()).digest() for r in rows]


def _row_hashes(x: np.ndarray) -> set[bytes]:
    return set(_row_list(x))


# -- privileged features -------------------------------------------------------------------
def student_columns(spec: str, splits: DataSplits) -> list[int]:
    """0-based column indices from ``"2,5"`` or ``"mean radius,worst area"`` (mixed allowed).

    A csv's categorical column name stands for all of its one-hot columns.

    Raises:
        DataError: non-tabular data, an unknown name, an index out of range, a repeat.
    """
    if splits.kind != "tabular":
        raise DataError(f"--student-features needs tabular data; {splits.name} is "
                        f"{splits.kind} data")
    n = int(splits.input_shape[0])
    names = [str(c) for c in splits.meta.get("feature_names") or []]
    groups = (splits.normalizer.get("encoding") or {}).get("categorical", {})
    out: list[int] = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            raise DataError(f"--student-features {spec!r} has an empty entry")
        out.extend(_column(token, n, names, groups))
    repeats = sorted({c for c in out if out.count(c) > 1})
    if repeats:
        raise DataError(f"--student-features names column(s) {repeats} more than once")
    return out


def _column(token: str, n: int, names: list[str], groups: dict[str, list[str]]) -> list[int]:
    if token.lstrip("-").isdigit():
        index = int(token)
        if not 0 <= index < n:
            raise DataError(f"--student-features index {index} is out of range: the data has "
                            f"{n} columns (0..{n - 1})")
        return [index]
    if token in names:
        return [names.index(token)]
    if token in groups:  # a csv's categorical column: all of its one-hot columns
        return [names.index(f"{token}={c}") for c in groups[token]]
    if not names:
        raise DataError(f"--student-features {token!r}: this data has no column names; "
                        "use 0-based indices")
    close = difflib.get_close_matches(token, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    raise DataError(f"--student-features: unknown column {token!r}{hint}; columns: {shown}")


def restrict_columns(splits: DataSplits, spec: str) -> DataSplits:
    """The student's view: only the chosen columns, with ``splits`` as its ``teacher_view``.

    The normaliser keeps the chosen columns' statistics (and records them as ``columns``),
    so an exported student is fed exactly those raw columns, normalised as in training.
    """
    cols = student_columns(spec, splits)
    index = torch.as_tensor(cols, dtype=torch.long)
    names = splits.meta.get("feature_names")
    normalizer = dict(splits.normalizer)
    for key in ("mean", "std"):
        normalizer[key] = [splits.normalizer[key][c] for c in cols]
    normalizer["columns"] = list(cols)
    digest = hashlib.sha256(f"{splits.split_hash}|student_features|{cols}".encode())
    chosen = {"indices": list(cols), "names": [str(names[c]) for c in cols] if names else None,
              "teacher_input_shape": list(splits.input_shape)}
    view = dataclasses.replace(
        splits, input_shape=(len(cols),), split_hash=digest.hexdigest()[:16],
        normalizer=normalizer, meta={**splits.meta, "student_features": chosen},
        teacher_view=splits,
        **{f"x_{s}": splits.split(s)[0][:, index] for s in ("train", "val", "test")},
        x_unlabeled=None if splits.x_unlabeled is None else splits.x_unlabeled[:, index])
    logger.info("student sees %d of %d columns: %s", len(cols), splits.input_shape[0],
                chosen["names"] or cols)
    return view
