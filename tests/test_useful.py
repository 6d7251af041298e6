"""The usefulness floor and the --min-accuracy / --min-retention search constraints.

A student that learnt nothing is the cheapest candidate, so it would head every front; the
front, its tables, its plots and ``export --pick`` leave such students off and say how many,
while the study keeps them. Minima given to a search make a trained student infeasible.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest

from autokd import train
from autokd.cli import main
from autokd.config import CostConfig, SearchSettings
from autokd.errors import ConfigError
from autokd.export.select import select_trial
from autokd.front import UsefulnessFloor, pareto_front, useful_trials
from autokd.record import TrialRecord, count_done
from autokd.report import build_report
from autokd.search import search
from tests._helpers import TINY_SPACE, quick_teacher, update_search_record
from tests.test_report import add_trial, make_study, standard_trials

MAJORITY = 0.6  # a made-up majority-class accuracy, high enough to catch trial 9


@pytest.fixture(scope="module")
def floored(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, Any, dict]:
    """The report test's study plus two useless students, with a recorded majority class."""
    study, paths = make_study(tmp_path_factory.mktemp("useful"))
    standard_trials(study)  # trials 0-7: front 0, 2, 3
    add_trial(study, 0.20, 0.21, 200, 300, depth=1, width=4)   # 8: cheapest, retention 0.20
    add_trial(study, 0.59, 0.58, 600, 900, depth=1, width=4)   # 9: retention 0.60, <= majority
    update_search_record(study, majority_accuracy=MAJORITY)
    return study, paths, build_report(study, paths)


def test_floor_leaves_useless_students_off_the_front(floored: Any) -> None:
    study, _, _ = floored
    floor = UsefulnessFloor.of(study)
    assert floor.majority == MAJORITY and floor.min_retention == 0.5
    raw = [t.number for t in pareto_front(study, floor=False)]
    assert 8 in raw and 9 in raw  # cheapest: on the raw front
    assert [t.number for t in pareto_front(study)] == [2, 0, 3]
    trials = {t.number: t for t in study.trials}
    assert floor.reason(trials[8]) == ("val accuracy 0.200 at/below the majority class's 0.600; "
                                       "val retention 0.204 < 0.5")
    assert floor.reason(trials[9]) == "val accuracy 0.590 at/below the majority class's 0.600"
    assert floor.reason(trials[3]) is None
    # a stricter floor drops trial 3 (retention 0.816) as well
    strict = UsefulnessFloor(0.9, MAJORITY, floor.teacher)
    assert [t.number for t in useful_trials(study, strict)[1]] == [3, 8, 9]


def test_report_counts_the_students_left_off(floored: Any) -> None:
    _, paths, data = floored
    assert data["usefulness"]["left_off"] == 2 and data["usefulness"]["trials"] == [8, 9]
    assert {r["trial"] for r in data["front"]} == {0, 2, 3}
    assert {p["trial"] for p in data["points"]} == {0, 1, 2, 3, 7}  # plots: useful only
    line = ("2 students below the usefulness floor (val retention < 0.5 or at/below "
            "majority-class accuracy (0.600)) left off")
    assert line in (paths.root / "report.md").read_text()
    assert line in html.unescape((paths.root / "report.html").read_text())
    assert {8, 9} <= set(pd.read_csv(paths.root / "trials.csv")["trial"])  # the study keeps all
    assert not {8, 9} & set(pd.read_csv(paths.root / "pareto.csv")["trial"])


def test_cli_front_says_how_many_were_left_off(floored: Any, capsys: Any) -> None:
    _, paths, _ = floored
    assert main(["report", str(paths.root)]) == 0
    out = capsys.readouterr().out
    assert "2 students below the usefulness floor" in out


def test_export_pick_skips_useless_students(floored: Any, tmp_path: Path) -> None:
    study, _, _ = floored
    t, _, _ = select_trial(study, pick="smallest", min_retention=0.0)
    assert t.number == 3  # not 8 or 9, which are smaller
    assert select_trial(study, trial=8)[0].number == 8  # named explicitly: allowed
    lone, _ = make_study(tmp_path)
    add_trial(lone, 0.20, 0.2, 200, 300)
    t, _, warnings = select_trial(lone, pick="accuracy")  # nothing useful: exported, with a warning
    assert t.number == 0 and any("below the usefulness floor" in w and "anyway" in w
                                 for w in warnings)


@pytest.mark.parametrize("flag, value, message", [
    ("--min-accuracy", "-0.1", "--min-accuracy must be a number in [0, 1], got -0.1"),
    ("--min-accuracy", "nan", "--min-accuracy must be a number in [0, 1], got nan"),
    ("--min-retention", "1.5", "--min-retention must be a number in [0, 1], got 1.5"),
    ("--min-retention", "-1", "--min-retention must be a number in [0, 1], got -1"),
])
def test_bad_minima_are_one_line_exit_2(flag: str, value: str, message: str, capsys: Any,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train.Trainer, "fit", lambda *a, **k: pytest.fail("trained"))
    code = main(["search", "--dataset", "digits", "--results", str(tmp_path), flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"autokd: error: {message}"]


def test_settings_accept_the_range_ends() -> None:
    SearchSettings(min_accuracy=0.0, min_retention=1.0).validate()
    with pytest.raises(ConfigError):
        SearchSettings(min_retention=True).validate()  # type: ignore[arg-type]


def test_search_records_minima_as_constraints_after_training(tmp_path: Path) -> None:
    """A minimum no tiny student reaches: every trained trial is infeasible, counted, kept."""
    space = json.dumps({**TINY_SPACE, "training": {"lr": 0.005, "epochs": 1}})
    (tmp_path / "tiny.yaml").write_text(space)
    study = search(dataset="digits", budget=2, teacher=[str(quick_teacher(tmp_path))],
                   name="minima", space=str(tmp_path / "tiny.yaml"),
                   results=str(tmp_path / "results"), seed=0, device="cpu",
                   cost=CostConfig(warmup=1, repeats=3), min_accuracy=0.999, min_retention=0.2)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 2 and count_done(study) == 2  # trained: they spend the budget
    for t in done:
        assert t.values is not None and all(math.isfinite(v) for v in t.values)
        assert t.constraints["min_accuracy"] > 0 and t.constraints["min_retention"] <= 0
        rec = TrialRecord.of(t)
        assert rec.infeasible is None and rec.val_accuracy is not None
        assert "val accuracy" in rec.infeasible_reason
        assert "--min-accuracy 0.999" in rec.infeasible_reason
    assert pareto_front(study, floor=False) == []  # only the minimum keeps them off
