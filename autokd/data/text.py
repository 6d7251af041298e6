"""``text:PATH`` files: one text and one label per row, from CSV/TSV, JSON Lines or a JSON list.

The source returns the raw texts (a 1-D array of ``str``) with kind ``tokens``; ``load_data``
splits them and only then tokenizes (``autokd.data.tokenize``), so the tokenizer is fitted on
the train split alone. This module reads and checks the file:

* the file must be UTF-8 (a bad byte is named by its offset and line);
* ``DataConfig.text_column`` (default ``text``) and ``DataConfig.target`` (default ``label``)
  must exist; the error lists the columns (keys) the file has;
* an empty or whitespace-only text, or a missing label, is an error naming the first few rows
  (CSV: data rows counted from 1 after the header; JSON Lines: file lines; JSON list: items),
  because silently dropping samples would change the task;
* labels of any type become classes the way other sources do (sorted, originals kept as
  ``class_names``).

Format by suffix: ``.csv`` (``.tsv`` tab-separated), ``.jsonl`` / ``.ndjson`` (one object per
line), ``.json`` (a list of objects, or one object per line).
"""

from __future__ import annotations

import codecs
import difflib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from autokd.config import DataConfig
from autokd.data.csv import column_labels
from autokd.data.schema import RawData
from autokd.data.sources import FILE_FORMATS, FileFormat, check_file
from autokd.errors import DataError

__all__: list[str] = []  # nothing to import: the format is reached through FILE_FORMATS

# One logger name for the whole data layer, so log lines and filters read ``autokd.data``.
logger = logging.getLogger("autokd.data")

_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")
_SHOWN = 5  # rows named in an error before "..."


def _load_text(path: str, cfg: DataConfig) -> RawData:
    """Read the file into (texts, labels); the tokenizer comes after the split."""
    check_file(path, "text")
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise DataError(f"text file {path!r} must end in {', '.join(_SUFFIXES)} "
                        f"(got {suffix or 'no suffix'!r})")
    content = _read_utf8(path)
    if suffix in (".csv", ".tsv"):
        frame, rows, unit = _read_table(content, path, "\t" if suffix == ".tsv" else ",")
    else:
        frame, rows, unit = _read_json(content, path, suffix)
    target = cfg.target or "label"
    for role, name in (("text", cfg.text_column), ("target", target)):
        _check_column(frame, name, role, path)
    texts = _texts(frame[cfg.text_column].tolist(), rows, unit, cfg.text_column, path)
    labels = frame[target]
    missing = np.flatnonzero(labels.isna().to_numpy())
    if len(missing):
        raise DataError(f"{len(missing)} missing labels in column {target!r} of {path!r} "
                        f"({_where(missing, rows, unit)}); fill or drop them")
    meta = {"identity": {"format": "text", "text_column": cfg.text_column, "target": target}}
    return texts, column_labels(labels, target, path), "tokens", meta


def _read_utf8(path: str) -> str:
    """The whole file as text; a non-UTF-8 byte is named by offset and line."""
    raw = Path(path).read_bytes()
    start = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        content = raw[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = start + exc.start
        line = raw.count(b"\n", 0, at) + 1
        raise DataError(f"text file {path!r} is not UTF-8: byte 0x{raw[at]:02x} at offset {at} "
                        f"(line {line}); save it as UTF-8") from None
    if not content.strip():
        raise DataError(f"text file {path!r} is empty")
    return content


def _read_table(content: str, path: str, sep: str) -> tuple[Any, list[int], str]:
    """CSV/TSV; only empty cells are missing ("NA", "null", "None" are texts or labels)."""
    import pandas as pd

    try:
        frame = pd.read_csv(io.StringIO(content), sep=sep, keep_default_na=False,
                            na_values=[""])
    except (pd.errors.ParserError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read text file {path!r}: {reason}") from None
    if len(frame) == 0:
        raise DataError(f"text file {path!r} is empty (a header but 0 rows)")
    return frame, list(range(1, len(frame) + 1)), "row"


def _read_json(content: str, path: str, suffix: str) -> tuple[Any, list[int], str]:
    """JSON Lines (blank lines skipped, numbered as in the file) or, for .json, a list."""
    import pandas as pd

    if suffix == ".json" and content.lstrip().startswith("["):
        try:
            items = json.loads(content)
        except json.JSONDecodeError as exc:
            raise DataError(f"text file {path!r} is not valid JSON at line {exc.lineno}: "
                            f"{exc.msg}") from None
        numbered = list(enumerate(items, 1))
        unit = "item"
    else:
        numbered, unit = [], "line"
        for number, line in enumerate(content.splitlines(), 1):
            if line.strip():
                try:
                    numbered.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DataError(f"text file {path!r}: line {number} is not valid JSON "
                                    f"({exc.msg})") from None
    for number, item in numbered:
        if not isinstance(item, dict):
            raise DataError(f"text file {path!r}: {unit} {number} is a "
                            f"{type(item).__name__}, not an object with text and label keys")
    if not numbered:
        raise DataError(f"text file {path!r} is empty")
    frame = pd.DataFrame.from_records([item for _, item in numbered])
    return frame, [number for number, _ in numbered], unit


def _check_column(frame: Any, name: str, role: str, path: str) -> None:
    columns = [str(c) for c in frame.columns]
    if name in columns:
        return
    close = difflib.get_close_matches(name, columns, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    option = "text_column (--text-column)" if role == "text" else "target (--target)"
    raise DataError(f"{role} column {name!r} not in {path!r}{hint}; columns: "
                    f"{', '.join(columns)}; choose one with {option}")


def _texts(values: list[Any], rows: list[int], unit: str, column: str, path: str) -> np.ndarray:
    """The texts as ``str``; empty ones and non-text values are refused with their rows."""
    out, empty = np.empty(len(values), dtype=object), []
    for i, value in enumerate(values):
        if isinstance(value, (dict, list)):
            raise DataError(f"column {column!r} of {path!r} holds a {type(value).__name__} on "
                            f"{unit} {rows[i]}, not a text")
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) \
            else str(value)
        if not text.strip():
            empty.append(i)
        out[i] = text
    if empty:
        raise DataError(f"{len(empty)} empty or blank texts in column {column!r} of {path!r} "
                        f"({_where(np.asarray(empty), rows, unit)}); fill or drop them")
    return out


def _where(positions: np.ndarray, rows: list[int], unit: str) -> str:
    """``rows 2, 5, 9, ...`` for the first few positions."""
    shown = ", ".join(str(rows[int(p)]) for p in positions[:_SHOWN])
    more = ", ..." if len(positions) > _SHOWN else ""
    return f"{unit}{'s' if len(positions) > 1 else ''} {shown}{more}"


FILE_FORMATS.register("text", FileFormat(_load_text, suffixes=(".jsonl", ".ndjson"), order=3))
