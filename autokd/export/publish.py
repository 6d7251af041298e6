"""Staging and publishing: an export appears whole, or not at all.

Why: everything is written to a temp folder next to the target and renamed into place only
after every artifact verified. A failure or a signal mid-export leaves the previous export (if
any) intact and no staging folder behind; a folder that is not an autokd export is never
replaced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from autokd.errors import ExportError
from autokd.export.card import CARD_JSON
from autokd.study import StudyPaths

__all__ = ["export_target", "staged"]


def export_target(paths: StudyPaths, trial: int, out: str | Path | None) -> Path:
    """The folder to publish to (default ``results/<study>/export/<trial>``).

    Raises:
        ExportError: ``out`` is a file, or a non-empty folder without a model card.
    """
    target = Path(out) if out is not None else paths.export / str(trial)
    if target.exists() and (not target.is_dir() or (any(target.iterdir())
                                                    and not (target / CARD_JSON).exists())):
        raise ExportError(f"{target} exists and is not an autokd export; choose a new or empty "
                          "directory")
    return target


def _staging(target: Path) -> Path:
    """A temp folder next to the target (same filesystem, so publishing is one rename)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    except OSError as exc:
        raise ExportError(f"cannot write to {target.parent}: {exc.strerror}") from None
    folder.chmod(0o755)
    return folder


def _publish(staging: Path, target: Path) -> None:
    """Move an old export aside, rename the new one in, then drop the old one."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A staging folder, published to ``target`` when the block ends without an exception.

    On any exception (signals included) the staging folder is removed, and so is a parent
    folder this export created, only if it is empty: nothing else is ever removed.
    """
    parent_existed = target.parent.exists()
    staging = _staging(target)
    try:
        yield staging
        _publish(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
            if not parent_existed:
                with contextlib.suppress(OSError):
                    target.parent.rmdir()  # only if empty: never removes anything else
