"""``build_report``: write report.html, report.md, pareto.png and the tables for one study.

Why each file is written atomically with the umask's permissions: a crash or full disk never
leaves half a report in place, and a study kept private (``umask 077``) keeps a private report,
just as its tables are.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import optuna

from autokd._io import atomic_write
from autokd.errors import StudyError
from autokd.report.figures import pareto_png
from autokd.report.gather import json_summary, report_data, storage_label
from autokd.report.html import render_html
from autokd.report.markdown import render_markdown
from autokd.report.snapshot import snapshot
from autokd.study import StudyPaths, atomic_write_text
from autokd.tables import write_tables

__all__ = ["build_report"]

logger = logging.getLogger(__name__)


def build_report(study: optuna.Study, paths: StudyPaths, *, json: bool = False) -> dict[str, Any]:
    """Write report.html, report.md, pareto.png, trials.csv and pareto.csv; return the data.

    Args:
        study: The study (finished or still running; only finished trials are read).
        paths: Its results directory.
        json: Return only the JSON summary (study, teacher, Pareto front, counts, files)
            instead of every section.

    Raises:
        StudyError: The results directory cannot be written.
    """
    _check_writable(paths.root)
    label = storage_label(study, paths)
    study = snapshot(study)  # tables and report describe the very same trials
    data = report_data(study, paths, label)
    write_tables(study, paths)
    files = {"html": paths.root / "report.html", "markdown": paths.root / "report.md",
             "png": paths.root / "pareto.png", "trials_csv": paths.root / "trials.csv",
             "pareto_csv": paths.root / "pareto.csv"}
    data["files"] = {k: str(v) for k, v in files.items()}
    png = pareto_png(data)
    atomic_write(files["png"], lambda tmp: Path(tmp).write_bytes(png))
    atomic_write_text(files["markdown"], render_markdown(data))
    atomic_write_text(files["html"], render_html(data, png))
    logger.info("report written to %s", files["html"])
    return json_summary(data) if json else data


def _check_writable(root: Path) -> None:
    """Fail with one clear message before any work, rather than after the slow part."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudyError(f"cannot create {root}: {exc.strerror}") from None
    if not os.access(root, os.W_OK):
        raise StudyError(f"cannot write the report to {root}: permission denied")
