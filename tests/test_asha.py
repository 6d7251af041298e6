"""``--strategy asha``: rung schedule, MO-ASHA promotion, claims, training states, end to end."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
import yaml
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from autokd.cli import main
from autokd.config import CostConfig, SearchSettings
from autokd.controllers._asha_trial import RungObjective, StateStore
from autokd.controllers.asha import (
    AshaController,
    AshaOptions,
    RungResult,
    promotable,
    read_rungs,
)
from autokd.controllers.base import Budget
from autokd.errors import ConfigError
from autokd.front import pareto_front, usable_trials
from autokd.objective import Objective
from autokd.pareto import crowding_distance, pareto_layers, rank_order
from autokd.record import RECORD_ATTR, TrialRecord, budget_used, count_done
from autokd.search import SearchConfig, run_search
from autokd.space import SearchSpace
from autokd.study import StudyPaths
from autokd.train_state import TrainState
from tests._helpers import TINY_SPACE, quick_teacher

MO = ["maximize", "minimize"]  # accuracy, flops


# -- the rung schedule ---------------------------------------------------------------------------
@pytest.mark.parametrize("options, max_epochs, schedule", [
    ({}, 9, [1, 3, 9]), ({}, 4, [1, 3, 4]), ({}, 40, [4, 12, 36, 40]), ({}, 1, [1]),
    ({"eta": 2}, 4, [1, 2, 4]), ({"eta": 4, "min_epochs": 2}, 20, [2, 8, 20]),
    ({"min_epochs": 50}, 10, [10]),
])
def test_rung_schedule(options: dict, max_epochs: int, schedule: list[int]) -> None:
    opts = AshaOptions.from_dict(options)
    assert opts.schedule(max_epochs) == schedule
    assert [opts.rung_epochs(max_epochs, k) for k in range(len(schedule) + 2)] == \
        schedule + [max_epochs, max_epochs]


@pytest.mark.parametrize("raw, message", [
    ({"eta": 1}, "--asha-eta must be an integer >= 2, got 1"),
    ({"eta": 2.5}, "--asha-eta must be an integer >= 2"),
    ({"min_epochs": 0}, "--asha-min-epochs must be an integer >= 1"),
    ({"rungs": 3}, "unknown asha option"),
])
def test_bad_options(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AshaOptions.from_dict(raw)


# -- non-dominated sorting and the promotion rule ------------------------------------------------
# (accuracy, flops):  A and B and D form the front (D between them), C is dominated by A only,
# E by C (layer 2) and F by everyone
RUNG0 = {"A": (0.90, 100), "B": (0.80, 50), "C": (0.70, 200), "D": (0.85, 75),
         "E": (0.60, 300), "F": (0.50, 400)}


def _results(values: dict[str, tuple], rung: int = 0, start: int = 0,
             final: set[str] = frozenset()) -> list[RungResult]:
    return [RungResult(start + i, rung, v, name in final) for i, (name, v) in
            enumerate(values.items())]


def test_layers_and_crowding_by_hand() -> None:
    losses = np.array([[-a, f] for a, f in RUNG0.values()])
    assert pareto_layers(losses).tolist() == [0, 0, 1, 0, 2, 3]
    # A, D, B sorted by either objective; D's neighbours span the whole layer in both
    crowd = crowding_distance(losses[[0, 1, 3]])
    assert math.isinf(crowd[0]) and math.isinf(crowd[1]) and crowd[2] == pytest.approx(2.0)
    assert rank_order(losses) == [0, 1, 3, 2, 4, 5]  # extremes of the front first, then D


def test_promotion_takes_the_top_third_by_layers_and_crowding() -> None:
    rung0 = _results(RUNG0)  # numbers 0..5 = A..F; eta 3: the top two, A and B
    assert promotable(rung0, set(), MO, 3).number == 0
    assert promotable(rung0, {0}, MO, 3).number == 1
    assert promotable(rung0, {0, 1}, MO, 3) is None  # D is third: not in the top 6 // 3
    assert promotable(rung0[:2], set(), MO, 3) is None  # fewer than eta results: none yet
    assert promotable(rung0, {0, 1}, MO, 2).number == 3  # eta 2: the top three


def test_promotion_looks_from_the_top_rung_down() -> None:
    rung0 = _results(RUNG0)
    rung1 = _results({"a": (0.9, 100), "b": (0.95, 100), "c": (0.7, 100)}, rung=1, start=10)
    assert promotable(rung0 + rung1, set(), MO, 3).number == 11  # rung 1's best first
    assert promotable(rung0 + rung1, {11}, MO, 3).number == 0
    final = _results({"a": (0.9, 100), "b": (0.95, 100), "c": (0.7, 100)}, rung=1, start=10,
                     final={"b"})
    assert promotable(rung0 + final, set(), MO, 3).number == 0  # b has no rung above


def test_single_objective_ranks_by_the_score() -> None:
    scores = _results({"a": (0.3,), "b": (0.1,), "c": (0.2,), "d": (0.4,)})
    assert promotable(scores, set(), ["minimize"], 2).number == 1
    assert promotable(scores, {1}, ["minimize"], 2).number == 2


def _trial(number: int, state: TrialState, record: dict[str, Any],
           values: list[float] | None = None, **kw: Any) -> optuna.trial.FrozenTrial:
    t = optuna.trial.create_trial(state=state, values=values, params={"x": number % 3},
                                  distributions={"x": IntDistribution(0, 2)},
                                  user_attrs={RECORD_ATTR: record}, **kw)
    t.number = number
    return t


def _rung(rung: int, parent: int | None = None, epochs: int = 1, **extra: Any) -> dict:
    return {"rung": rung, "resumed_from": parent, "epochs_total": epochs, "schedule_epochs": 4,
            "seed": 0, **extra}


def test_read_rungs_skips_infeasible_failed_and_counts_children_in_any_state() -> None:
    c = TrialState.COMPLETE
    trials = [
        _trial(0, c, _rung(0), [0.9, 10]),
        _trial(1, c, _rung(0, infeasible=True), [0.0, 5]),
        _trial(2, c, _rung(0), [0.8, 20], constraints={"max_flops": 0.5}),
        _trial(3, TrialState.FAIL, _rung(0)),
        _trial(4, TrialState.RUNNING, _rung(1, parent=0, epochs=2)),
        _trial(5, TrialState.WAITING, _rung(1, parent=6, epochs=2)),
        _trial(6, c, _rung(0), [0.7, 30]),
        _trial(7, c, _rung(2, parent=8, epochs=4), [0.9, 30]),
        _trial(8, c, {"seed": 1}, [0.5, 30]),  # a plain trial of another strategy
    ]
    results, promoted = read_rungs(trials)
    assert [(r.number, r.rung, r.final) for r in results] == [(0, 0, False), (6, 0, False),
                                                               (7, 2, True)]
    assert promoted == {0, 6, 8}


# -- claims: a promotion is claimed once, RUNNING children count ----------------------------------
def _hand_study(tmp_path: Path) -> tuple[optuna.Study, Objective]:
    study = optuna.create_study(directions=MO, sampler=optuna.samplers.RandomSampler(seed=0))
    space = SearchSpace.from_dict(TINY_SPACE)
    for n, (acc, flops) in enumerate([(0.9, 100), (0.8, 50), (0.7, 200)]):
        params = {"depth": 1, "widths_0": [4, 8, 16][n], "temperature": 3.0, "alpha": 0.7}
        dists = {k: d for k, d in _distributions(space).items() if k in params}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dists, values=[acc, flops],
            user_attrs={RECORD_ATTR: _rung(0, seed=10 + n)}))
    objective = Objective(space, None, None, SearchSettings(cost=CostConfig(latency=False)),
                          StudyPaths(tmp_path / "s"))
    return study, objective


def _distributions(space: SearchSpace) -> dict[str, Any]:
    study = optuna.create_study()
    trial = study.ask()
    space.sample(trial)
    return trial.distributions


def test_a_parent_is_promoted_once_even_while_its_child_runs(tmp_path: Path) -> None:
    study, objective = _hand_study(tmp_path)
    ctrl = AshaController(study, objective, Budget(trials=10), None, AshaOptions(eta=3))
    first = ctrl._ask()  # 3 results, eta 3: the top one (trial 0) is promotable
    rec = TrialRecord.of(first)
    assert (rec.rung, rec.resumed_from) == (1, 0)
    assert first.params == study.trials[0].params  # pinned at once, before any training
    second = ctrl._ask()  # trial 0's child is RUNNING: it counts, so a new candidate
    assert (TrialRecord.of(second).rung, TrialRecord.of(second).resumed_from) == (0, None)
    assert [t.state for t in study.trials[3:]] == [TrialState.RUNNING] * 2


def test_retry_of_a_killed_child_keeps_its_rung_and_parent(tmp_path: Path) -> None:
    from autokd.controllers.distributed import fail_and_requeue

    study, objective = _hand_study(tmp_path)
    ctrl = AshaController(study, objective, Budget(trials=10), None, AshaOptions(eta=3))
    child = ctrl._ask()
    fail_and_requeue(study, child._trial_id, "worker stopped mid-trial")
    retry = ctrl._ask()  # the queued retry comes first
    rec = TrialRecord.of(retry)
    assert (rec.retry_of, rec.rung, rec.resumed_from) == (child.number, 1, 0)
    assert TrialRecord.of(ctrl._ask()).rung == 0  # trial 0 stays promoted once


def test_rung_trials_never_use_pareto_early_stopping(tmp_path: Path) -> None:
    _, objective = _hand_study(tmp_path)
    rung = RungObjective.adopt(objective, StateStore(None, objective.paths, None))
    assert objective.settings.pareto_pruning and not rung.settings.pareto_pruning
    assert rung.strategy == "asha" and objective.strategy == "optuna"


def test_a_rung_counts_its_share_of_a_full_training() -> None:
    from autokd.record import trial_share

    c = TrialState.COMPLETE
    trials = [
        _trial(0, c, _rung(0), [0.9, 10]),  # 1 of 4 epochs
        _trial(1, c, _rung(1, parent=0, epochs=2), [0.9, 10]),  # continued: 1 -> 2
        _trial(2, c, _rung(1, parent=0, epochs=2, resume_fallback="gone"), [0.9, 10]),
        _trial(3, c, {"seed": 1}, [0.5, 30]),  # a plain trial: one training
        _trial(4, c, _rung(0, infeasible=True), [0.0, 5]),  # trained nothing
        _trial(5, TrialState.FAIL, _rung(0)),
    ]
    by = {t.number: t for t in trials}
    assert [trial_share(t, by) for t in trials[:4]] == [0.25, 0.25, 0.5, 1.0]
    study = optuna.create_study(directions=MO)
    assert budget_used(study, trials) == 2.0
    running = [*trials, _trial(6, TrialState.RUNNING, _rung(2, parent=1, epochs=4))]
    assert budget_used(study, running) == 2.0
    assert budget_used(study, running, running=True) == 2.5  # 2 -> 4 epochs in flight


def test_a_superseded_trial_leaves_the_front() -> None:
    study = optuna.create_study(directions=MO)
    for values, record in (([0.8, 10], _rung(0)), ([0.9, 10], _rung(1, parent=0, epochs=2)),
                           ([0.5, 5], _rung(0))):
        study.add_trial(optuna.trial.create_trial(values=values,
                                                  user_attrs={RECORD_ATTR: record}))
    assert [t.number for t in usable_trials(study)] == [1, 2]
    assert [t.number for t in pareto_front(study)] == [1, 2]


# -- training states shared through the artifact store -------------------------------------------
def _state() -> TrainState:
    return TrainState(epoch=1, horizon=4, global_step=3, student={"w": torch.arange(3.0)},
                      loss_fn={}, optimizer={"state": {}, "param_groups": []}, scheduler={},
                      generator=torch.Generator().get_state(), rng=torch.get_rng_state(),
                      cuda_rng=None, best=[0.5, 1.0], best_epoch=1, best_state=None,
                      history=[{"epoch": 1, "val_accuracy": 0.5}])


def test_a_worker_elsewhere_fetches_the_state_or_says_why_not(tmp_path: Path) -> None:
    study = optuna.create_study()
    trial = study.ask()
    store = str(tmp_path / "store")
    here = StateStore(study, StudyPaths(tmp_path / "here"), store)
    here.save(trial, _state())
    study.tell(trial, 0.5)
    parent = study.trials[0]
    elsewhere = StateStore(study, StudyPaths(tmp_path / "elsewhere"), store)
    state, why = elsewhere.load(parent, horizon=4, epochs=2)
    assert why is None and torch.equal(state.student["w"], torch.arange(3.0))
    assert (tmp_path / "elsewhere" / "students" / "0" / "resume.pt").is_file()
    state, why = elsewhere.load(parent, horizon=6, epochs=2)  # another --epochs: no match
    assert state is None and "not a start for 2 of 6" in why
    here.remove(parent)
    assert not (tmp_path / "here" / "students" / "0" / "resume.pt").exists()
    third = StateStore(study, StudyPaths(tmp_path / "third"), store)
    state, why = third.load(parent, horizon=4, epochs=2)
    assert state is None and "cannot fetch trial 0's training state" in why
    local_only = StateStore(study, StudyPaths(tmp_path / "fourth"), None)
    assert "not on this machine" in local_only.load(parent, 4, 2)[1]


# -- end to end ----------------------------------------------------------------------------------
def _config(root: Path, budget: int, **kw: Any) -> SearchConfig:
    settings = kw.pop("settings", SearchSettings(cost=CostConfig(latency=False), epochs=4))
    return SearchConfig(space=str(root / "tiny.yaml"), budget=budget, name=kw.pop("name", "a"),
                        teacher=[str(root / "teacher.pt")], settings=settings,
                        results=str(root / "results"), seed=0, device="cpu", strategy="asha",
                        strategy_options={"eta": 2}, **kw)


@pytest.fixture(scope="module")
def asha_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("asha")
    quick_teacher(root)
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    run_search(_config(root, 3))  # 3 full trainings: about 9 rung evaluations
    return root


def _study(root: Path, name: str = "a") -> optuna.Study:
    return optuna.load_study(study_name=name,
                             storage=f"sqlite:///{root / 'results' / name / 'study.db'}")


def _check_lineage(study: optuna.Study, schedule: list[int]) -> list[Any]:
    """Every rung trains to its scheduled epochs; a child continues its parent one rung up with
    its seed; no parent is promoted twice."""
    trials = study.trials
    children = [t for t in trials if TrialRecord.of(t).resumed_from is not None]
    parents = [TrialRecord.of(t).resumed_from for t in children]
    assert len(parents) == len(set(parents)), parents
    for t in trials:
        rec = TrialRecord.of(t)
        assert t.state == TrialState.COMPLETE and rec.strategy == "asha"
        assert rec.epochs_total == schedule[rec.rung] == rec.epochs_run
        assert rec.schedule_epochs == schedule[-1]
        if rec.resumed_from is not None:
            parent = TrialRecord.of(trials[rec.resumed_from])
            assert rec.rung == parent.rung + 1 and rec.seed == parent.seed
            assert trials[rec.resumed_from].params == t.params
            assert rec.val_accuracy >= parent.val_accuracy  # the best so far travels along
    return children


def test_search_promotes_resumes_and_cleans_up(asha_root: Path) -> None:
    study = _study(asha_root)
    # a rung counts its share of the 4 epochs: 1/4, 1/4, 2/4; the last may overshoot by 2/4
    assert 3 <= budget_used(study) <= 3.5 and count_done(study) == len(study.trials) > 3
    children = _check_lineage(study, [1, 2, 4])
    assert {TrialRecord.of(t).rung for t in children} == {1, 2}
    for t in children:  # trained only its own epochs, from the parent's state
        assert "resume_fallback" not in TrialRecord.of(t).extra
    front = pareto_front(study, floor=False)  # weights are kept for students below the floor too
    superseded = {TrialRecord.of(t).resumed_from for t in children}
    assert front and not superseded & {t.number for t in front}
    specs = [(TrialRecord.of(t).family, str(t.params)) for t in front]
    assert len(specs) == len(set(specs))  # no candidate twice
    students = asha_root / "results" / "a" / "students"
    assert not list(students.rglob("resume.pt"))  # budget spent: no state left behind
    assert {p.name for p in students.iterdir()} == {str(t.number) for t in front}


def test_a_resumed_child_equals_its_straight_reproduction(asha_root: Path, digits) -> None:
    from autokd.export.source import retrain
    from autokd.train import evaluate

    study = _study(asha_root)
    child = max((t for t in study.trials if TrialRecord.of(t).rung == 2), key=lambda t: t.number)
    rec = TrialRecord.of(child)
    assert rec.rung == 2 and rec.epochs_total == 4  # trained 1 + 1 + 2 epochs in three trials
    model, info = retrain(study, StudyPaths(asha_root / "results" / "a"), child, digits,
                          rec.epochs_total)  # straight to 4 epochs on the same schedule
    assert info["epochs"] == 4 and info["best_epoch"] == rec.best_epoch
    assert evaluate(model, digits.x_val, digits.y_val)["accuracy"] == \
        pytest.approx(rec.val_accuracy, abs=1e-6)


def test_report_works_on_an_asha_study(asha_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(asha_root / "results" / "a")]) == 0
    root = asha_root / "results" / "a"
    assert {"report.html", "report.md", "trials.csv"} <= {p.name for p in root.iterdir()}
    header = (root / "trials.csv").read_text().splitlines()[0].split(",")
    assert {"rung", "resumed_from", "epochs_total"} <= set(header)


def test_extending_a_finished_search_restarts_promotions_and_says_why(asha_root: Path) -> None:
    first = len(_study(asha_root).trials)
    out = run_search(_config(asha_root, 4))
    study = out.study
    new = [t for t in study.trials[first:] if TrialRecord.of(t).resumed_from is not None]
    assert 4 <= budget_used(study) <= 4.5 and new
    for t in new:  # the states were deleted when the first budget was spent
        assert "not on this machine" in TrialRecord.of(t).extra["resume_fallback"]
    _check_lineage(study, [1, 2, 4])
    assert not list((asha_root / "results" / "a" / "students").rglob("resume.pt"))


def test_resume_refuses_other_asha_options(asha_root: Path) -> None:
    cfg = _config(asha_root, 20)
    cfg.strategy_options = {"eta": 3}
    with pytest.raises(ConfigError, match="runs asha with --asha-eta 2; resume it with the same"):
        run_search(cfg)


def test_score_mode_ranks_by_the_score(asha_root: Path) -> None:
    settings = SearchSettings(cost=CostConfig(latency=False), epochs=4, score=True)
    study = run_search(_config(asha_root, 2, name="s", settings=settings)).study
    children = _check_lineage(study, [1, 2, 4])
    assert children and len(study.directions) == 1


# -- the command line ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--strategy", "asha", "--asha-eta", "1"], "--asha-eta must be an integer >= 2, got 1"),
    (["--strategy", "optuna", "--asha-eta", "3"],
     "--asha-eta and --asha-min-epochs apply to --strategy asha only"),
    (["--pruner", "median", "--score"], "add --strategy optuna to use --pruner median"),
    (["--strategy", "darts", "--asha-min-epochs", "2"], "apply to --strategy asha only"),
    (["--strategy", "asha", "--pruner", "median", "--score"], "pruners do not apply"),
])
def test_cli_errors_are_one_line(argv: list[str], message: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from autokd import train

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(train.Trainer, "fit", refuse)
    monkeypatch.setattr(sys.modules["autokd.search"], "default_teacher", refuse)
    assert main(["search", "--results", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autokd: error: ") and message in err[0], err


@pytest.mark.parametrize("argv, strategy", [
    ([], None),  # run_search takes a resumed study's own, else the default
    (["--asha-eta", "2"], "asha"),  # the ASHA flags name it, even to resume another's study
    (["--asha-min-epochs", "1"], "asha"),
    (["--strategy", "optuna"], "optuna"),
])
def test_the_cli_passes_the_strategy_it_was_given(argv: list[str], strategy: str | None,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import autokd.search

    seen = {}

    def capture(cfg: Any, *args: Any, **kwargs: Any) -> None:
        seen["cfg"] = cfg
        raise ConfigError("captured")

    monkeypatch.setattr(autokd.search, "run_search", capture)
    assert main(["search", "--results", str(tmp_path), *argv]) == 2
    assert seen["cfg"].strategy == strategy
    assert seen["cfg"].strategy_options == {"--asha-eta": {"eta": 2},
                                            "--asha-min-epochs": {"min_epochs": 1}}.get(
        argv[0] if argv else "", {})


@pytest.mark.slow
def test_jobs_two_workers_promote_each_parent_once(asha_root: Path) -> None:
    res = asha_root / "jobs"
    proc = subprocess.run(
        [sys.executable, "-m", "autokd", "search", "--space", str(asha_root / "tiny.yaml"),
         "--teacher", str(asha_root / "teacher.pt"), "--strategy", "asha", "--asha-eta", "2",
         "--sampler", "random", "--epochs", "4", "--budget", "3", "--name", "j",
         "--results", str(res), "--no-latency", "--device", "cpu", "--jobs", "2"],
        check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(study_name="j", storage=f"sqlite:///{res / 'j' / 'study.db'}")
    n = len(study.trials)
    assert proc.stdout.count(" complete: rung ") == n and "continues" in proc.stdout
    # two workers each check the budget before claiming: at most one share of 2/4 each over
    assert 3 <= budget_used(study) <= 4 and count_done(study) == n
    children = _check_lineage(study, [1, 2, 4])
    assert children
    workers = {TrialRecord.of(t).worker for t in study.trials}
    assert len(workers) == 2  # both processes ran trials
    assert not list((res / "j").rglob("resume.pt"))
