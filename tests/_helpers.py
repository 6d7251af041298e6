"""Helpers shared by several test files (a tiny search space, a quick study, DB counters)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
                  device="cpu", cost=CostConfig(warmup=1, repeats=3))


def count_complete(db: Path) -> int:
    """COMPLETE trials in a SQLite study file (0 while it does not exist yet)."""
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        try:
            return con.execute("select count(*) from trials where state='COMPLETE'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
