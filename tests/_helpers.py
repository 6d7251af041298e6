"""Helpers shared by several test files (a tiny search space, a quick study, DB counters)."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from autokd.config import CostConfig, TrainConfig
from autokd.data import load_data
from autokd.distill import KDConfig
from autokd.pipeline import run_distillation
from autokd.search import search
from autokd.teachers import save_checkpoint

# a two-decision cnn space whose trials train in well under a second
TINY_SPACE = {
    "family": "cnn",
    "architecture": {"depth": {"int": [1, 2]},
                     "widths": {"choice": [4, 8, 16], "per_stage": "depth"}},
    "distillation": {"temperature": {"float": [2.0, 6.0]}, "alpha": {"float": [0.5, 1.0]}},
    "training": {"lr": 0.005, "epochs": 3},
}


def quick_teacher(root: Path) -> Path:
    """A 3-epoch teacher checkpoint: enough to distil from, no default-teacher training."""
    data = load_data("digits")
    run = run_distillation(data, None, "cnn", {"depth": 1, "widths": [16]},
                           KDConfig(soft_loss="none", alpha=0.0), TrainConfig(epochs=3),
                           CostConfig(latency=False))
    return save_checkpoint(run.model, root / "teacher.pt", data=data.describe())


def quick_study(root: Path, name: str, space_yaml: str, budget: int, seed: int) -> optuna.Study:
    """A real search on digits with a quick teacher; results under ``root / 'results'``."""
    teacher = quick_teacher(root)
    (root / "tiny.yaml").write_text(space_yaml)
    return search(dataset="digits", budget=budget, teacher=[str(teacher)], name=name,
                  space=str(root / "tiny.yaml"), results=str(root / "results"), seed=seed,
                  device="cpu", cost=CostConfig(warmup=1, repeats=3), strategy="optuna")


def count_complete(db: Path) -> int:
    """COMPLETE trials in a SQLite study file (0 while it does not exist yet)."""
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        try:
            return con.execute("select count(*) from trials where state='COMPLETE'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


# resets SIGINT to its default action, then becomes the real command (same process id)
_EXEC_WITH_DEFAULT_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL);"
                             " os.execvp(sys.argv[1], sys.argv[1:])")


def with_default_sigint(cmd: Sequence[str]) -> list[str]:
    """``cmd`` started with SIGINT at its default action, for a child a test will Ctrl-C.

    Why: a shell starts background jobs with SIGINT ignored, and exec keeps an ignored signal
    ignored, so Python in the child would install no KeyboardInterrupt handler and the test's
    SIGINT would do nothing. A tiny interpreter resets it and execs ``cmd`` in its place: no
    ``preexec_fn``, which is unsafe in this multi-threaded test process.
    """
    return [sys.executable, "-I", "-S", "-c", _EXEC_WITH_DEFAULT_SIGINT, *cmd]


def update_search_record(study: Any, **fields: Any) -> None:
    """Change fields of a study's recorded search settings (as another process would)."""
    from autokd.record import SEARCH_ATTR, SearchRecord

    record = SearchRecord.of(study)
    for key, value in fields.items():
        setattr(record, key, value)
    study.set_user_attr(SEARCH_ATTR, record.to_dict())
