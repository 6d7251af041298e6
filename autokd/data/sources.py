"""Where data comes from: the registries of named datasets and ``prefix:PATH`` file formats.

Why registries: a new dataset or file format is one module that registers itself (plus its
import in ``autokd/data/__init__.py``); lookup, error messages with a close match, and the CLI
help all read the registries, so none of them needs editing when a source is added.

``DataConfig.source`` is either a registered name (``digits``) or ``prefix:PATH`` where
``prefix`` is a registered file format (``npz:data/x.npz``).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from autokd.config import DataConfig
from autokd.data.schema import KINDS, RawData
from autokd.errors import DataError
from autokd.registry import Registry

__all__ = [
    "FILE_FORMATS",
    "SOURCES",
    "FileFormat",
    "FileLoader",
    "Loader",
    "check_file",
    "dataset_help",
    "dataset_names",
    "file_forms",
    "read_source",
]

# One logger name for the whole data layer, so log lines and filters read ``autokd.data``.
logger = logging.getLogger("autokd.data")

Loader = Callable[[DataConfig], RawData]
FileLoader = Callable[[str, DataConfig], RawData]

#: name -> ``loader(cfg) -> (X, y, kind, meta)``; see ``autokd.data.schema.RawData`` for meta.
SOURCES: Registry[Loader] = Registry("dataset")


@dataclass(frozen=True)
class FileFormat:
    """How to read one ``prefix:PATH`` file format.

    Attributes:
        load: ``load(path, cfg) -> (X, y, kind, meta)``; ``path`` has ``~`` expanded.
        suffixes: lowercase file endings that give the format away, so a bare ``x.npz``
            passed as a source gets a "did you mean 'npz:x.npz'" hint; the first one is used
            in examples.
        placeholder: what follows the colon in help text and listings (``PATH``, ``DIR``...).
        order: position in help text and listings (ties by name), so they do not depend on
            the order in which modules happen to be imported.
    """

    load: FileLoader
    suffixes: tuple[str, ...] = ()
    placeholder: str = "PATH"
    order: int = 100


#: prefix -> :class:`FileFormat`, for sources written ``prefix:PATH``.
FILE_FORMATS: Registry[FileFormat] = Registry("file format")


def dataset_names() -> list[str]:
    """Registered source names, each loadable as is; files use the forms of :func:`file_forms`."""
    return SOURCES.names()


def file_forms() -> list[str]:
    """The file-format forms in listing order, e.g. ``["npz:PATH", "csv:PATH"]``."""
    return [_form_of(name) for name in _format_names()]


def dataset_help() -> str:
    """Help text for a ``--dataset`` option, built from the registries so it never goes stale.

    The default source comes first, then the other names sorted, then the file forms, e.g.
    ``"digits (default), breast_cancer, mnist1d, wine, npz:PATH or csv:PATH"``.
    """
    default = DataConfig().source
    names = dataset_names()
    items = [f"{default} (default)"] if default in names else []
    items += [n for n in names if n != default] + file_forms()
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def read_source(cfg: DataConfig) -> RawData:
    """Dispatch to a file format (``prefix:PATH``) or a named source; check what it returns."""
    prefix, sep, rest = cfg.source.partition(":")
    if sep and prefix in FILE_FORMATS:
        out = _read_file(prefix, rest, cfg)
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


def check_file(path: str, fmt: str) -> None:
    """Name the two common path mistakes before a reader reports them less clearly."""
    if not os.path.exists(path):
        raise DataError(f"{fmt} file not found: {path!r}")
    if os.path.isdir(path):
        raise DataError(f"{fmt} path is a directory, not a file: {path!r}")


def _read_file(prefix: str, path: str, cfg: DataConfig) -> RawData:
    fmt = FILE_FORMATS.get(prefix)
    if not path:
        example = f"data/mydata{fmt.suffixes[0] if fmt.suffixes else ''}"
        raise DataError(f"{prefix}: needs a path, e.g. '{prefix}:{example}'")
    return fmt.load(os.path.expanduser(path), cfg)


def _format_names() -> list[str]:
    return sorted(FILE_FORMATS.names(), key=lambda name: FILE_FORMATS.get(name).order)


def _unknown_source(source: str) -> DataError:
    """The error for a source that is neither a name nor a known ``prefix:``, with a hint."""
    lowered = source.lower()
    formats = _format_names()
    by_suffix = [f for f in formats if lowered.endswith(FILE_FORMATS.get(f).suffixes)]
    if by_suffix:
        hint = f" (did you mean '{by_suffix[0]}:{source}'?)"
    else:
        close = difflib.get_close_matches(lowered, [*dataset_names(), *formats], n=1)
        guess = _form_of(close[0]) if close else ""
        hint = f" (did you mean {guess!r}?)" if guess else ""
    forms = ", ".join([*dataset_names(), *file_forms()])
    return DataError(f"unknown dataset {source!r}{hint}; known: {forms}")


def _form_of(name: str) -> str:
    """A file format's listing form (``npz:PATH``); a dataset name as it is."""
    return f"{name}:{FILE_FORMATS.get(name).placeholder}" if name in FILE_FORMATS else name
