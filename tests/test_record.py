"""The study's typed records: one JSON attribute per trial, one for the search, old layouts read."""

from __future__ import annotations

import math

import optuna
import pytest

from autokd.config import CostConfig, SearchSettings
from autokd.objective import Objective
from autokd.pareto import hypervolume
from autokd.record import (
    RECORD_ATTR,
    SEARCH_ATTR,
    SearchRecord,
    TrialLog,
    TrialRecord,
    count_done,
    feasible,
)
from autokd.space import SearchSpace

V01_TRIAL = {"strategy": "optuna", "family": "cnn", "spec": {"depth": 1}, "val_accuracy": 0.9,
             "flops": 1200, "constraints": [0.0], "darts_target": 0.1, "worker": "h:1"}


def test_an_autokd_01_trial_reads_field_by_field() -> None:
    rec = TrialRecord.from_attrs(V01_TRIAL)
    assert (rec.family, rec.val_accuracy, rec.flops, rec.worker) == ("cnn", 0.9, 1200, "h:1")
    assert rec.extra == {"darts_target": 0.1}  # strategy-specific fields are kept as they are
    assert rec.get("darts_target") == 0.1 and rec.get("test_accuracy", -1) == -1
    assert rec.fields() == V01_TRIAL  # trials.csv gets the same columns as before


def test_the_compact_record_wins_and_round_trips() -> None:
    packed = TrialRecord(family="mlp", val_accuracy=0.5, extra={"nni_reward": 1.0}).packed()
    assert packed == {"family": "mlp", "val_accuracy": 0.5, "extra": {"nni_reward": 1.0}}
    rec = TrialRecord.from_attrs({"family": "cnn", RECORD_ATTR: packed})
    assert rec.family == "mlp" and rec.extra == {"nni_reward": 1.0}
    assert TrialRecord.from_attrs({RECORD_ATTR: rec.packed()}) == rec


def test_non_finite_values_are_not_recorded() -> None:
    rec = TrialRecord().update(val_nll=math.inf, val_kd_loss=math.nan, score=1.5)
    assert (rec.val_nll, rec.val_kd_loss, rec.score) == (None, None, 1.5)


def test_feasibility_and_the_budget_count_read_the_record() -> None:
    study = optuna.create_study()
    for attrs in ({"constraints": [0.0]}, {RECORD_ATTR: {"infeasible": True,
                                                        "constraints": [0.5]}}):
        study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs=attrs))
    assert [feasible(t) for t in study.trials] == [True, False]
    assert count_done(study) == 1  # an infeasible candidate was never trained


class _CountingTrial(optuna.trial.FixedTrial):
    """A FixedTrial that counts storage writes of user attributes."""

    writes = 0

    def set_user_attr(self, key: str, value: object) -> None:
        type(self).writes += 1
        super().set_user_attr(key, value)


def test_a_trial_writes_its_record_twice_not_field_by_field(digits, digits_teacher) -> None:
    space = SearchSpace.from_dict({"family": "cnn", "architecture": {"depth": 1, "widths": 4},
                                   "training": {"epochs": 1}})
    settings = SearchSettings(cost=CostConfig.for_search(latency=False), pareto_pruning=False)
    objective = Objective(space, digits, digits_teacher, settings)
    trial = _CountingTrial({})
    objective(trial)
    assert _CountingTrial.writes == 2  # before training (candidate, costs) and at the end
    rec = TrialRecord.of(trial)
    assert rec.val_accuracy is not None and rec.flops > 0 and rec.seed is not None
    assert set(trial.user_attrs) == {RECORD_ATTR}


def test_trial_log_keeps_what_others_wrote() -> None:
    trial = optuna.trial.FixedTrial({})
    trial.set_user_attr(RECORD_ATTR, {"worker": "h:1", "retry_of": 3})
    TrialLog(trial).flush(fail_reason="interrupted")
    assert TrialRecord.of(trial).packed() == {"worker": "h:1", "retry_of": 3,
                                              "fail_reason": "interrupted"}


def test_an_autokd_01_study_reads_as_a_search_record() -> None:
    attrs = {"objectives": ["accuracy", "flops"], "dataset_hash": "abc", "teacher_hash": "t1",
             "teacher": {"flops": 10}, "budget": {"trials": 5, "seconds": None},
             "search_config": {"data": {"source": "digits"}, "strategy": "darts", "seed": 3,
                               "space": {"source": "cnn.yaml", "yaml": {"family": "cnn"}},
                               "teachers": [{"ref": "t.pt"}], "started_at": 1.0}}
    rec = SearchRecord.from_attrs(attrs)
    assert rec.exists and rec.objectives == ["accuracy", "flops"] and rec.strategy == "darts"
    assert rec.data == {"source": "digits"} and rec.space_yaml == {"family": "cnn"}
    assert rec.space == "cnn.yaml" and rec.seed == 3 and rec.teachers == [{"ref": "t.pt"}]
    new = SearchRecord.from_attrs({**attrs, SEARCH_ATTR: {**rec.to_dict(), "seed": 9}})
    assert new.seed == 9  # the current layout wins over the old one
    assert not SearchRecord.from_attrs({}).exists


@pytest.mark.parametrize(("losses", "expected"), [
    ([[0.5, 0.5]], 0.25),
    ([[0.2, 0.6], [0.6, 0.2]], 0.8 * 0.4 + 0.4 * 0.4),  # two boxes, the overlap counted once
    ([[0.2, 0.6], [0.6, 0.2], [0.7, 0.7]], 0.48),  # a dominated point adds nothing
    ([[0.5, 0.5, 0.5]], 0.125),
    ([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5]], 0.25 + 0.25 - 0.125),  # inclusion-exclusion
    ([[0.3]], 0.7),
    ([[0.3], [0.6]], 0.7),
    ([], 0.0),
    # a staircase: 0.9*0.2 + 0.6*0.4 + 0.2*0.3, the same as inclusion-exclusion 0.72-0.28+0.04
    ([[0.1, 0.8], [0.4, 0.4], [0.8, 0.1]], 0.48),
    ([[0.5, 0.5], [0.5, 0.5]], 0.25),  # a duplicate counts once
    ([[1.0, 0.2]], 0.0),  # on the reference: adds nothing
    ([[0.5, 1.2], [0.5, 0.5]], 0.25),  # beyond the reference in one objective: adds nothing
    # each point dominates half the cube; only the corner [0, 0.5)^3 is left: 1 - 0.125
    ([[0.0, 0.0, 0.5], [0.0, 0.5, 0.0], [0.5, 0.0, 0.0]], 0.875),
    ([[0.5, 0.5, 0.5], [0.25, 0.75, 0.5]], 0.125 + 0.75 * 0.25 * 0.5 - 0.5 * 0.25 * 0.5),
])
def test_hypervolume_known_values(losses: list[list[float]], expected: float) -> None:
    import numpy as np

    arr = np.asarray(losses, dtype=float).reshape(len(losses), -1 if losses else 2)
    assert hypervolume(arr) == pytest.approx(expected)


@pytest.mark.parametrize(("losses", "reference", "expected"), [
    ([[1.0, 1.0]], [2.0, 3.0], 2.0),
    ([[1.0, 1.0, 1.0], [1.5, 1.5, 1.5]], [2.0, 2.0, 2.0], 1.0),  # the second is dominated
    ([[-1.0, 0.0]], [1.0, 1.0], 2.0),  # losses below zero (better than the ideal) count fully
])
def test_hypervolume_with_a_reference_point(losses: list[list[float]], reference: list[float],
                                            expected: float) -> None:
    import numpy as np

    assert hypervolume(np.asarray(losses), reference) == pytest.approx(expected)


def test_hypervolume_matches_optuna_in_four_dimensions() -> None:
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    points = np.random.default_rng(0).random((25, 4))
    assert hypervolume(points) == pytest.approx(compute_hypervolume(points, np.ones(4)))
