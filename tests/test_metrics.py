"""Selection metrics for imbalanced data: exact against scikit-learn, chosen by --metric."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from autokd.config import CostConfig, SearchSettings
from autokd.errors import ConfigError, StudyError
from autokd.metrics import classification_metrics, majority_score
from autokd.objective import Objective
from autokd.record import SearchRecord, TrialRecord
from autokd.search import SearchConfig, run_search
from autokd.space import SearchSpace
from autokd.train_state import RunHistory
from tests._helpers import TINY_SPACE

NO_LAT = CostConfig(latency=False)


@pytest.mark.parametrize("seed", range(40))
def test_metrics_equal_sklearn(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    k = int(torch.randint(2, 8, (1,), generator=g))
    n = int(torch.randint(1, 60, (1,), generator=g))
    y = torch.randint(0, k, (n,), generator=g)
    pred = torch.randint(0, max(1, k - 2), (n,), generator=g)  # some classes never predicted
    m = classification_metrics(pred, y, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about absent classes
        assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
        assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
        recall = recall_score(y, pred, average=None, labels=list(range(k)))
    assert m["accuracy"] == pytest.approx(float((pred == y).float().mean()))
    for c in range(k):
        if (y == c).any():
            assert m["per_class_accuracy"][c] == pytest.approx(recall[c], abs=1e-12)
        else:
            assert m["per_class_accuracy"][c] is None


def test_majority_floor_per_metric() -> None:
    y_train = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    y_val = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    assert majority_score(y_train, y_val, 3, "accuracy") == pytest.approx(0.5)
    assert majority_score(y_train, y_val, 3, "balanced_accuracy") == pytest.approx(1 / 3)
    p = 0.5
    assert majority_score(y_train, y_val, 3, "macro_f1") == pytest.approx((1 / 3) * 2 * p / (1 + p))
    with pytest.raises(ConfigError, match="unknown metric 'f2'; known: accuracy"):
        majority_score(y_train, y_val, 3, "f2")


def test_best_epoch_follows_the_metric() -> None:
    model = torch.nn.Linear(2, 2)
    epochs = [{"val_accuracy": 0.9, "val_balanced_accuracy": 0.5, "val_nll": 0.3},
              {"val_accuracy": 0.8, "val_balanced_accuracy": 0.7, "val_nll": 0.4}]
    for metric, best in (("accuracy", 1), ("balanced_accuracy", 2)):
        track = RunHistory(metric=metric)
        for i, m in enumerate(epochs, 1):
            track.record(i, m, model)
        assert track.best_epoch == best


def test_objective_maximises_the_chosen_metric(digits, digits_teacher) -> None:
    settings = SearchSettings(cost=NO_LAT, metric="macro_f1", epochs=2)
    objective = Objective(SearchSpace.from_dict(TINY_SPACE), digits, digits_teacher, settings)
    trial = optuna.trial.FixedTrial({"depth": 1, "widths_0": 8, "temperature": 4.0,
                                     "alpha": 0.9})
    values = objective(trial)
    rec = TrialRecord.of(trial)
    assert rec.metric == "macro_f1" and values[0] == rec.val_macro_f1 != rec.val_accuracy
    assert len(rec.val_per_class_accuracy) == digits.num_classes
    assert all(0 <= a <= 1 for a in rec.test_per_class_accuracy)


def _cfg(tmp_path: Path, metric: str, budget: int = 1) -> SearchConfig:
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    settings = SearchSettings(cost=NO_LAT, epochs=1, metric=metric, objectives=["accuracy",
                                                                                 "params"])
    return SearchConfig(space=str(space), budget=budget, name="m", settings=settings,
                        results=str(tmp_path / "results"), device="cpu")


def test_search_records_metric_and_refuses_another(tmp_path, digits, digits_teacher) -> None:
    study = run_search(_cfg(tmp_path, "balanced_accuracy")).study
    rec = SearchRecord.of(study)
    assert rec.metric == "balanced_accuracy" and rec.settings["metric"] == "balanced_accuracy"
    floor, top = rec.scale["accuracy"]
    assert math.isclose(floor, majority_score(digits.y_train, digits.y_val, 10,
                                              "balanced_accuracy"))
    assert math.isclose(top, rec.teacher["val_balanced_accuracy"])
    assert TrialRecord.of(study.trials[0]).metric == "balanced_accuracy"
    with pytest.raises(StudyError, match="selects by --metric balanced_accuracy, not macro_f1"):
        run_search(_cfg(tmp_path, "macro_f1", budget=2))
    assert len(run_search(_cfg(tmp_path, "balanced_accuracy", budget=2)).study.trials) == 2


@pytest.mark.parametrize("command", [["search"], ["distill"]])
def test_unknown_metric_is_one_line_exit_2(tmp_path, capsys, command) -> None:
    from autokd.cli import main

    code = main([*command, "--metric", "f2", "--results", str(tmp_path)]
                if command == ["search"] else [*command, "--metric", "f2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0] == ("autokd: error: unknown metric 'f2'; known: accuracy, balanced_accuracy, "
                      "macro_f1")


def test_report_shows_metric_and_per_class_accuracy(tmp_path, digits, digits_teacher) -> None:
    from autokd.report import build_report
    from autokd.study import find_study

    cfg = _cfg(tmp_path, "macro_f1", budget=2)
    # students that learn (above the usefulness floor), so the front has members to show
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(
        {**TINY_SPACE, "training": {"lr": 0.03, "epochs": 3}}))
    run_search(dataclasses.replace(cfg, settings=dataclasses.replace(cfg.settings, epochs=3)))
    study, paths = find_study(str(tmp_path / "results" / "m"))
    data = build_report(study, paths)
    pc = data["per_class"]
    assert [r["class"] for r in pc["rows"]] == [str(i) for i in range(10)]
    assert pc["columns"][1][0] == "teacher"
    teacher = SearchRecord.of(study).teacher["test_per_class_accuracy"]
    assert [r["teacher"] for r in pc["rows"]] == teacher
    for member in data["front"]:
        rec = TrialRecord.of(study.trials[member["trial"]])
        assert [r[f"#{member['trial']}"] for r in pc["rows"]] == rec.test_per_class_accuracy
    md = (paths.root / "report.md").read_text()
    assert "selection metric**: macro F1" in md and "### Per-class accuracy (test)" in md
    assert "| val macro F1 |" in md
    html = (paths.root / "report.html").read_text()
    assert "Per-class accuracy (test)" in html and "class='per-class'" in html


def test_per_class_section_absent_for_old_studies() -> None:
    from autokd.report.classes import class_names, per_class_section

    assert per_class_section([{"trial": 0, "val_accuracy": 0.9}], {}, {}) is None
    assert class_names({"class_names": ["cat", "dog"]}, 2) == ["cat", "dog"]
    assert class_names({"class_names": ["cat"]}, 2) == ["0", "1"]  # a mismatch is not trusted
