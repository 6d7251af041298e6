"""Nothing that chooses a student reads the test labels.

Why: the test split exists to report an unbiased number. If the objective, Pareto pruning or
``--pick`` read it, the card's test accuracy would be optimistic. The same seeded search runs
twice, once with every test label wrong; every value the search and ``--pick`` decide on must
come out identical, while the recorded test accuracies show the labels really changed.
Latency is made a fixed function of the student's size for both runs (timing noise would
otherwise move ``--pick fastest``); the objectives are accuracy and FLOPs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

import autokd.search
from autokd.config import CostConfig
from autokd.data import DataSplits
from autokd.export import select_trial
from autokd.record import TrialRecord
from autokd.search import search
from tests._helpers import TINY_SPACE, quick_teacher

EPOCHS = 4  # Pareto pruning may stop a trial from epoch 3 of 4 on
SELECTION = ("params", "flops", "val_accuracy", "val_nll", "val_kd_loss", "val_retention",
             "best_epoch", "epochs_run", "prune_reason", "pruned_at_epoch", "latency_ms")


def _search(root: Path, name: str, teacher: Path, poison: bool,
            monkeypatch: pytest.MonkeyPatch) -> optuna.Study:
    real = autokd.search.load_data

    def load(cfg: Any) -> DataSplits:
        data = real(cfg)
        if not poison:
            return data
        wrong = (data.y_test + 1) % data.num_classes  # every test label wrong
        return dataclasses.replace(data, y_test=wrong)

    with monkeypatch.context() as mp:
        mp.setattr(autokd.search, "load_data", load)
        mp.setattr("autokd.cost.measure_latency",
                   lambda model, *_, **__: (1e-4 * sum(p.numel() for p in model.parameters()), 0.0))
        return search(dataset="digits", budget=4, teacher=[str(teacher)], name=name,
                      space=str(root / "tiny.yaml"), results=str(root / "results"), seed=0,
                      device="cpu", epochs=EPOCHS, cost=CostConfig(warmup=1, repeats=1),
                      strategy="optuna")  # it checks Pareto early stopping's decisions too


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, optuna.Study]:
    root = tmp_path_factory.mktemp("blind")
    teacher = quick_teacher(root)
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    with pytest.MonkeyPatch.context() as mp:
        return (_search(root, "clean", teacher, False, mp),
                _search(root, "poisoned", teacher, True, mp))


def _decisions(study: optuna.Study) -> list[tuple[Any, ...]]:
    return [(t.state, t.params, t.values,
             *(TrialRecord.of(t).get(k) for k in SELECTION)) for t in study.trials]


def test_search_decisions_ignore_test_labels(studies: tuple[optuna.Study, optuna.Study]) -> None:
    clean, poisoned = studies
    assert len(clean.trials) == 4 and _decisions(clean) == _decisions(poisoned)
    test = [(TrialRecord.of(a).test_accuracy, TrialRecord.of(b).test_accuracy)
            for a, b in zip(clean.trials, poisoned.trials)
            if a.state == optuna.trial.TrialState.COMPLETE]
    assert max(a - b for a, b in test) > 0.5  # the labels really differ
    # Pareto pruning decided something: one trial stopped at epoch 3 in both runs
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in clean.trials)


@pytest.mark.parametrize("pick", ["accuracy", "smallest", "fastest"])
def test_pick_ignores_test_labels(pick: str,
                                  studies: tuple[optuna.Study, optuna.Study]) -> None:
    chosen = [select_trial(s, pick=pick, min_retention=0.5)[0] for s in studies]
    assert chosen[0].number == chosen[1].number
    assert TrialRecord.of(chosen[0]).test_accuracy != TrialRecord.of(chosen[1]).test_accuracy

