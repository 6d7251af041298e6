"""The search engine: objective, constraints, budget, resume, failures, tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from autokd.config import CostConfig, SearchSettings
from autokd.controllers.base import parse_budget
from autokd.cost import count_flops
from autokd.errors import ConfigError, StudyError
from autokd.front import pareto_front
from autokd.models import build_student
from autokd.objective import Objective, ParetoStopper
from autokd.record import SearchRecord, TrialRecord, budget_used, count_done
from autokd.search import SearchConfig, run_search
from autokd.space import SearchSpace
from tests._helpers import TINY_SPACE, count_complete, with_default_sigint

TINY = TINY_SPACE
FIXED = {"depth": 2, "widths_0": 8, "widths_1": 16, "temperature": 4.0, "alpha": 0.9}
NO_LAT = CostConfig(latency=False)


def _tiny_space(tmp_path: Path, **overrides: object) -> str:
    raw = {**TINY, **overrides}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _objective(digits, teacher, **settings) -> Objective:
    space = SearchSpace.from_dict(TINY)
    return Objective(space, digits, teacher, SearchSettings(cost=NO_LAT, **settings))


def test_objective_with_fixed_trial(digits, digits_teacher) -> None:
    values = _objective(digits, digits_teacher)(optuna.trial.FixedTrial(FIXED))
    student = build_student("cnn", {"depth": 2, "widths": [8, 16]}, (1, 8, 8), 10)
    assert values[1] == count_flops(student, (1, 8, 8))  # FLOPs objective is exact
    assert 0.1 < values[0] <= 1.0


def test_constraint_skips_training(digits, digits_teacher, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("an infeasible candidate must not be trained")

    monkeypatch.setattr("autokd.objective.run_distillation", boom)
    objective = _objective(digits, digits_teacher, max_flops=100)
    trial = optuna.trial.FixedTrial(FIXED)
    t0 = time.perf_counter()
    values = objective(trial)
    assert time.perf_counter() - t0 < 2.0
    assert values[0] == 0.0  # worst accuracy: never preferred by the sampler
    assert TrialRecord.of(trial).get("infeasible") is True
    assert TrialRecord.of(trial).get("constraints")[0] > 0
    assert "flops" in TrialRecord.of(trial).get("infeasible_reason")


def test_settings_validation() -> None:
    with pytest.raises(ConfigError, match="unknown objective"):
        SearchSettings(objectives=["acc"]).validate()
    with pytest.raises(ConfigError, match="max-flops"):
        SearchSettings(max_flops=-1).validate()
    assert SearchSettings(objectives=["accuracy", "latency"]).directions == ["maximize", "minimize"]
    assert SearchSettings(score=True).directions == ["minimize"]


@pytest.mark.parametrize("text, trials, seconds", [("40", 40, None), ("15m", None, 900.0),
                                                   ("2h", None, 7200.0), ("90s", None, 90.0)])
def test_parse_budget(text, trials, seconds) -> None:
    b = parse_budget(text)
    assert (b.trials, b.seconds) == (trials, seconds)


@pytest.mark.parametrize("bad", ["0", "10x", "-3", "m", "1.5"])
def test_parse_budget_rejects(bad) -> None:
    with pytest.raises(ConfigError, match="budget"):
        parse_budget(bad)


def test_pareto_stopper_rule() -> None:
    # a finished trial that costs less and reached 0.95 stops a candidate stuck at 0.5
    stop = ParetoStopper([({"flops": 10}, 0.95)], {"flops": 20}, ["flops"], epochs=20)
    verdicts = [stop.should_stop(e, 0.5) for e in range(1, 11)]
    assert not any(verdicts[:5]) and verdicts[5]
    assert "pareto" in stop.reason
    # a more costly finished trial never stops a cheaper candidate
    cheap = ParetoStopper([({"flops": 30}, 0.99)], {"flops": 20}, ["flops"], epochs=20)
    assert not any(cheap.should_stop(e, 0.1) for e in range(1, 20))
    # a candidate still improving fast is not stopped
    rising = ParetoStopper([({"flops": 10}, 0.9)], {"flops": 20}, ["flops"], epochs=20)
    assert not any(rising.should_stop(e, min(1.0, 0.1 * e)) for e in range(1, 10))


def _cfg(tmp_path: Path, budget: object = 3, **kw) -> SearchConfig:
    settings = kw.pop("settings", SearchSettings(cost=NO_LAT))
    kw.setdefault("strategy", "optuna")  # these tests count whole trials and early stops
    return SearchConfig(space=_tiny_space(tmp_path), budget=budget, name="t", settings=settings,
                        results=str(tmp_path / "results"), seed=0, device="cpu", **kw)


def test_search_writes_study_and_tables(tmp_path, digits_teacher) -> None:
    out = run_search(_cfg(tmp_path, 4, settings=SearchSettings(cost=NO_LAT, max_flops=5000)))
    study = out.study
    assert count_done(study) == 4
    root = tmp_path / "results" / "t"
    assert {"study.db", "config.yaml", "trials.csv", "pareto.csv", "teacher.pt"} <= {
        p.name for p in root.iterdir()}
    trials = pd.read_csv(root / "trials.csv")
    for col in ("state", "objective_accuracy", "objective_flops", "val_accuracy",
                "test_accuracy", "retention", "flops", "params", "bytes", "flops_compression",
                "params_compression", "param_depth", "spec", "recipe"):
        assert col in trials.columns, col
    # the raw front (students of 2 epochs under 5000 FLOPs may sit below the usefulness floor)
    front = pareto_front(study, floor=False)
    assert front and all(TrialRecord.of(t).get("flops") <= 5000 for t in front)
    kept = {p.name for p in (root / "students").iterdir()}
    assert kept == {str(t.number) for t in front}  # weights kept for Pareto members only
    # re-running a finished study says so and changes nothing
    again = run_search(_cfg(tmp_path, 4))
    assert again.status == "already_finished" and len(again.study.trials) == len(study.trials)


def test_search_records_its_scale_and_trial_costs(tmp_path, digits_teacher, capsys) -> None:
    """The hypervolume's scale is fixed from the space before the first trial, kept on resume,
    and every trial records what it cost in wall and CPU seconds."""
    from autokd.pareto import FrontScale
    from autokd.report.sections import hypervolume_curve

    study = run_search(_cfg(tmp_path, 3)).study
    scale = FrontScale.from_dict(SearchRecord.of(study).scale)
    assert scale.source == "space" and set(scale.costs) == {"flops"}
    lo, hi = scale.costs["flops"]
    for t in study.trials:
        rec = TrialRecord.of(t)
        assert lo <= rec.flops <= hi
        assert rec.cpu_seconds > 0 and rec.wall_seconds >= rec.train_seconds > 0
    assert scale.accuracy[1] == SearchRecord.of(study).teacher["val_accuracy"]
    curve = hypervolume_curve(study)
    assert 0 < curve["curve"][-1]["hypervolume"] <= 1 and "reference point" in curve["scale"]
    # the progress line shows the same hypervolume
    from autokd.cli._common import progress_line
    from autokd.controllers.base import Progress

    progress = Progress.of(study, study.trials[-1], parse_budget(3), 1.0, 0)
    assert progress.hypervolume == pytest.approx(curve["curve"][-1]["hypervolume"])
    progress_line(progress)
    assert f"hv {progress.hypervolume:.4f}" in capsys.readouterr().out
    resumed = run_search(_cfg(tmp_path, 4)).study
    assert SearchRecord.of(resumed).scale == SearchRecord.of(study).scale


def test_resume_refuses_other_dataset(tmp_path, digits_teacher) -> None:
    run_search(_cfg(tmp_path, 1))
    cfg = _cfg(tmp_path, 2)
    cfg.data.seed = 7  # a different split
    with pytest.raises(StudyError, match="another dataset split"):
        run_search(cfg)


def test_all_failing_trials_stop_with_reason(tmp_path, digits_teacher, monkeypatch) -> None:
    from autokd.errors import TrainingError

    def diverge(*args, **kwargs):
        raise TrainingError("loss became nan at epoch 1 step 1")

    monkeypatch.setattr("autokd.objective.run_distillation", diverge)
    with pytest.raises(StudyError, match=r"all 5 trials failed.*training diverged"):
        run_search(_cfg(tmp_path, 10))
    study = optuna.load_study(study_name="t",
                              storage=f"sqlite:///{tmp_path / 'results' / 't' / 'study.db'}")
    reasons = {TrialRecord.of(t).get("fail_reason") for t in study.trials}
    assert reasons == {"training diverged: loss became nan at epoch 1 step 1"}


def test_failed_trial_recorded_and_search_continues(tmp_path, digits_teacher, monkeypatch) -> None:
    import autokd.objective as obj

    real = obj.run_distillation
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, "run_distillation", flaky)
    study = run_search(_cfg(tmp_path, 3)).study
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 1 and TrialRecord.of(failed[0]).get("fail_reason").startswith("out of memory")
    assert count_done(study) == 3


def _cli(tmp_path: Path, budget: int) -> list[str]:
    return [sys.executable, "-m", "autokd", "search", "--strategy", "optuna",
            "--space", _tiny_space(tmp_path),
            "--budget", str(budget), "--name", "k", "--results", str(tmp_path / "results"),
            "--no-latency", "--device", "cpu", "--epochs", "40"]


def _run_until(tmp_path: Path, budget: int, n_complete: int, sig: int) -> subprocess.Popen:
    db = tmp_path / "results" / "k" / "study.db"
    proc = subprocess.Popen(with_default_sigint(_cli(tmp_path, budget)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.time() + 120
    while count_complete(db) < n_complete and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # let the next trial start training
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return proc


@pytest.mark.slow
def test_sigkill_then_resume_loses_nothing(tmp_path, digits_teacher) -> None:
    proc = _run_until(tmp_path, 4, 2, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    storage = f"sqlite:///{tmp_path / 'results' / 'k' / 'study.db'}"
    before = optuna.load_study(study_name="k", storage=storage)
    done_before = count_done(before)
    running = [t for t in before.trials if t.state.name == "RUNNING"]
    assert done_before >= 2 and len(running) == 1
    rerun = subprocess.run(_cli(tmp_path, 4), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = optuna.load_study(study_name="k", storage=storage)
    assert count_done(after) == 4
    dead = after.trials[running[0].number]
    assert dead.state.name == "FAIL" and TrialRecord.of(dead).get("fail_reason") == "process died mid-trial"
    retries = [t for t in after.trials if TrialRecord.of(t).get("retry_of") == dead.number]
    assert len(retries) == 1 and retries[0].params == dead.params
    for t in before.trials:  # every finished trial is still there, unchanged
        if t.state.is_finished():
            assert after.trials[t.number].values == t.values


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_says_how_to_resume(tmp_path, digits_teacher) -> None:
    proc = _run_until(tmp_path, 5, 1, signal.SIGINT)
    err = proc.stderr.read()
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    storage = f"sqlite:///{tmp_path / 'results' / 'k' / 'study.db'}"
    study = optuna.load_study(study_name="k", storage=storage)
    assert count_done(study) >= 1
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    assert (tmp_path / "results" / "k" / "trials.csv").exists()


def test_baseline_records_scratch_twin(tmp_path, digits_teacher) -> None:
    study = run_search(_cfg(tmp_path, 2, baseline=True)).study
    baseline = study.user_attrs["baseline"]
    front = pareto_front(study)
    assert front and set(baseline) == {str(t.number) for t in front}
    for rec in baseline.values():
        assert 0.0 < rec["test_accuracy"] <= 1.0
    from autokd.tables import front_rows

    rows = front_rows(study)
    assert all("kd_gain" in r for r in rows)


def test_python_api_mirrors_cli(tmp_path, digits_teacher) -> None:
    import autokd

    study = autokd.search(dataset="digits", budget=1, space=_tiny_space(tmp_path),
                          results=str(tmp_path / "api"), name="api", device="cpu",
                          cost=NO_LAT, epochs=2, val_fraction=0.2)
    # the CLI's default strategy: asha, where a 1-of-2-epoch rung is half a training
    assert SearchRecord.of(study).strategy == "asha" and budget_used(study) == 1.0
    assert SearchRecord.of(study).dataset["sizes"]["val"] > 0
    with pytest.raises(ConfigError, match="unknown argument 'bogus'"):
        autokd.search(bogus=1)
