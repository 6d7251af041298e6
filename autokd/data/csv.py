"""``csv:PATH`` files: one row per sample, the label in the ``DataConfig.target`` column.

Numeric columns become float features; text, category and bool columns are one-hot encoded.
One-hot categories are fitted on all rows, not only train: this leaks the *vocabulary* of a
column (which category names exist), never statistics, and guarantees that val/test rows never
meet an unknown category. Missing values are an error naming the column, because imputing
silently would change the task.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any

import numpy as np

from autokd.config import DataConfig
from autokd.data.schema import RawData
from autokd.data.sources import FILE_FORMATS, FileFormat, check_file
from autokd.errors import DataError

__all__ = ["column_labels", "read_csv_features"]  # the format itself is reached through FILE_FORMATS

# One logger name for the whole data layer, so log lines and filters read ``autokd.data``.
logger = logging.getLogger("autokd.data")


def _load_csv(path: str, cfg: DataConfig) -> RawData:
    """Read the table, split off the target, encode the rest; the encoding travels in meta."""
    frame = _read_csv(path)
    target = _csv_target(frame, cfg.target, path)
    y = column_labels(frame[target], target, path)
    x, encoding = _csv_features(frame.drop(columns=[target]), path)
    meta = {
        "identity": {"format": "csv", "target": target},
        "encoding": encoding,
        "feature_names": encoding["feature_names"],
    }
    return x, y, "tabular", meta


def read_csv_features(path: str, target: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Features and meta of a csv whose target column may be absent (it is dropped if there).

    Why: a pool of unlabelled rows (``DataConfig.unlabeled``) has no labels to store.
    """
    frame = _read_csv(path)
    if target is not None and target in [str(c) for c in frame.columns]:
        frame = frame.drop(columns=[target])
    x, encoding = _csv_features(frame, path)
    return x, {"identity": {"format": "csv"}, "encoding": encoding,
               "feature_names": encoding["feature_names"]}


def _read_csv(path: str) -> Any:
    import pandas as pd

    check_file(path, "csv")
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


def column_labels(column: Any, target: str, path: str) -> np.ndarray:
    """A label column as bool, int, float or str values (``encode_labels`` makes classes)."""
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


FILE_FORMATS.register("csv", FileFormat(_load_csv, suffixes=(".csv",), order=1))
