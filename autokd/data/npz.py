"""``npz:PATH`` files: numpy archives holding the features and labels.

Layouts: arrays ``X`` and ``y``, or predefined ``X_train``/``y_train``/``X_test``/``y_test``
(``X_val``/``y_val`` optional; without them validation is carved from train). A 3-D ``X`` is
ambiguous: square ``(N, H, W)`` is read as a one-channel image, anything else as an
``(N, C, L)`` signal; a ``kind`` entry in the archive overrides the guess.

Why so strict: an npz can carry pickled code, so only the known keys are read and never
unpickled, and every message names the offending key.
"""

from __future__ import annotations

import logging
import zipfile
from typing import Any

import numpy as np

from autokd.config import DataConfig
from autokd.data.schema import KINDS, NDIM, SPLITS, RawData
from autokd.data.sources import FILE_FORMATS, FileFormat, check_file
from autokd.errors import DataError

__all__ = ["read_npz_features"]  # the format itself is reached through FILE_FORMATS

# One logger name for the whole data layer, so log lines and filters read ``autokd.data``.
logger = logging.getLogger("autokd.data")

_NPZ_KEYS = ("X", "y", "kind", *(f"{a}_{s}" for s in SPLITS for a in ("X", "y")))


def _load_npz(path: str, cfg: DataConfig) -> RawData:
    """Read either layout; the hash identity is the format alone, so moving a file keeps it."""
    arrays, keys = _read_npz(path)
    if any(k in arrays for k in _NPZ_KEYS if "_" in k):
        x, y, predefined = _npz_predefined(arrays, keys, path)
    else:
        x, y, predefined = (*_npz_xy(arrays, keys, path), None)
    kind, x = _npz_kind(x, arrays.get("kind"), path)
    return x, y, kind, {"identity": {"format": "npz"}, "predefined": predefined}


def _read_npz(path: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Read only the keys we use, never unpickling (an npz can carry arbitrary code)."""
    check_file(path, "npz")
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
    if not kind or x.ndim != NDIM[kind]:
        raise DataError(
            f"X in {path!r} has shape {x.shape}; expected (N, F) tabular, (N, C, L) "
            "signal, or (N, H, W) / (N, C, H, W) image"
        )
    return kind, x


def read_npz_features(path: str) -> tuple[np.ndarray, str] | None:
    """``(X, kind)`` of an npz holding only features (``X``, no ``y``), else None.

    Why: a pool of unlabelled inputs (``DataConfig.unlabeled``) has no labels to store.
    """
    arrays, _ = _read_npz(path)
    if "X" not in arrays or any(k in arrays for k in _NPZ_KEYS if k not in ("X", "kind")):
        return None
    kind, x = _npz_kind(arrays["X"], arrays.get("kind"), path)
    return x, kind


FILE_FORMATS.register("npz", FileFormat(_load_npz, suffixes=(".npz",), order=0))
