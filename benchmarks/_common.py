"""Helpers shared by the benchmark scripts: output files, seed statistics, teachers, threads.

Why a module: every benchmark prints one JSON document and writes the same document to
``results/benchmarks/<name>.json``, reports seeds as mean ± sample std, and needs the same
default teacher; keeping that here keeps the scripts about what they measure.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from autokd.data import DataSplits
from autokd.teachers import Teacher, default_teacher, load_teacher, save_checkpoint, train_teacher

__all__ = [
    "OUT_DIR",
    "QUICK_OUT_DIR",
    "load_resumable",
    "log",
    "mean_std",
    "pm",
    "quick_teacher",
    "result_path",
    "save_atomic",
    "set_threads",
    "teacher_for",
    "write_result",
]

OUT_DIR = Path("results/benchmarks")
#: smoke-test output goes here, never next to the real (committed) results
QUICK_OUT_DIR = Path(tempfile.gettempdir()) / "autokd-bench-quick"
_QUICK_DIR = QUICK_OUT_DIR / "teachers"


def log(message: str) -> None:
    """Progress on stderr, so stdout stays one JSON document."""
    print(message, file=sys.stderr, flush=True)


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads (tiny models run faster on one thread per process) and
    keep Optuna to errors: its per-trial warnings would bury the progress lines."""
    torch.set_num_threads(max(1, int(threads)))
    logging.getLogger("optuna").setLevel(logging.ERROR)


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (ddof=1; 0 for one value), n and the values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": []}
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return {"mean": statistics.fmean(vals), "std": std, "n": len(vals), "values": vals}


def pm(stats: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` as text, e.g. ``97.9 ± 0.4`` for accuracies scaled to percent."""
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean'] * scale:.{digits}f} ± {stats['std'] * scale:.{digits}f}"


def write_result(name: str, payload: dict[str, Any], quick: bool = False) -> Path:
    """Print ``payload`` as JSON on stdout and write it to ``results/benchmarks/<name>.json``.

    ``quick`` (smoke-test) results go to a temp directory instead, so they never overwrite or
    sit beside the committed numbers.
    """
    out_dir = QUICK_OUT_DIR if quick else OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    text = json.dumps(payload, indent=2, default=str)
    path.write_text(text + "\n")
    print(text)
    log(f"wrote {path}")
    return path


def result_path(name: str, quick: bool = False) -> Path:
    """``results/benchmarks/<name>.json``, or its temp-directory twin for ``--quick`` runs."""
    return (QUICK_OUT_DIR if quick else OUT_DIR) / f"{name}.json"


def load_resumable(path: Path, protocol: dict[str, Any], **empty: Any) -> dict[str, Any]:
    """The earlier results at ``path`` when their protocol matches this run's (resume), else a
    fresh document: ``protocol``, ``runs`` and the ``empty`` entries given."""
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("protocol") == protocol:
            return old
        log(f"{path}: protocol changed; starting over")
    return {"protocol": protocol, "runs": {}, **empty}


def save_atomic(path: Path, doc: dict[str, Any], indent: int = 2) -> None:
    """Write ``doc`` as JSON through a temp file, so a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=indent, default=str) + "\n")
    os.replace(tmp, path)


def quick_teacher(data: DataSplits, epochs: int = 3) -> tuple[Teacher, Path]:
    """A default-architecture teacher trained for a few epochs: smoke tests only.

    Why: the real default teacher for MNIST-1D takes minutes on two cores; a ``--quick`` run
    must check the plumbing, not the numbers. Cached per split in the temp directory.
    """
    path = _QUICK_DIR / f"{data.split_hash}-e{epochs}.pt"
    if not path.exists():
        model, _ = train_teacher(data, epochs=epochs)
        save_checkpoint(model, path, data=data.describe())
    return load_teacher(path, data=data), path


def teacher_for(data: DataSplits, quick: bool = False) -> tuple[Teacher, Path]:
    """The cached default teacher (``AUTOKD_CACHE``), or a quick one for smoke runs."""
    if quick:
        return quick_teacher(data)
    log(f"default teacher for {data.name} (trained once, then cached)")
    return default_teacher(data)
