"""File helpers every layer shares: atomic writes and the cache location.

Why atomic writes: a crash, Ctrl-C or full disk must never leave a half-written teacher, table
or report in place; writing to a temp file in the same folder and renaming it makes each file
appear whole or not at all.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "cache_dir"]


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then publish it at ``path`` with the umask's permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def cache_dir() -> Path:
    """Where autokd caches teachers, teacher outputs and latency tables (``AUTOKD_CACHE``)."""
    root = os.environ.get("AUTOKD_CACHE") or Path.home() / ".cache" / "autokd"
    return Path(root)
