"""Teacher assistants and born-again generations (``autokd.chains``).

A search trial with ``assistant: auto`` is taught by a completed trial of the geometric-mean
size when one is kept, else by an assistant trained inside it (its CPU time counted); born-again
generations have the teacher's architecture, each taught by the previous one.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution

from autokd import chains
from autokd import objective as objective_module
from autokd.cli import main
from autokd.config import CostConfig, SearchSettings, TrainConfig
from autokd.cost import count_flops
from autokd.distill import KDConfig
from autokd.errors import ConfigError
from autokd.export.source import assistant_teacher
from autokd.models import build_student
from autokd.objective import Objective
from autokd.pipeline import run_distillation, teacher_profile
from autokd.record import RECORD_ATTR, TrialRecord
from autokd.report.front import chain_lines, front_records
from autokd.space import Candidate, SearchSpace
from autokd.study import StudyPaths
from autokd.teachers import load_checkpoint, load_teacher, network_teacher, save_checkpoint

NO_LATENCY = CostConfig(latency=False)
SPACE = {"family": "cnn",
         "architecture": {"depth": {"int": [1, 2]},
                          "widths": {"choice": [4, 8, 16, 32], "per_stage": "depth"}},
         "distillation": {"assistant": {"choice": ["none", "auto"]}},
         "training": {"lr": 0.01, "epochs": 2}}
# teacher 83,264 FLOPs, student 2,344: the assistant's target is sqrt(T * S) = 13,970
TEACHER = {"depth": 2, "widths": [16, 32]}
STUDENT = {"depth": 1, "widths": [4]}
PARENT = {"depth": 2, "widths": [8, 16]}  # 23,200 FLOPs: within 2x of the target


@pytest.fixture(scope="module")
def teacher_path(digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = run_distillation(digits, None, "cnn", TEACHER, KDConfig(soft_loss="none", alpha=0.0),
                           TrainConfig(epochs=1), NO_LATENCY)
    return save_checkpoint(run.model, tmp_path_factory.mktemp("t") / "teacher.pt",
                           data=digits.describe())


def _candidate(spec: dict[str, Any], assistant: str) -> Candidate:
    return Candidate("cnn", dict(spec), KDConfig(assistant=assistant).validate(),
                     {"lr": 0.01, "epochs": 2})


def test_recipe_key_is_validated_summarised_and_searchable() -> None:
    with pytest.raises(ConfigError, match="unknown assistant 'maybe'"):
        KDConfig(assistant="maybe").validate()
    assert "assistant=auto" in KDConfig(assistant="auto").summary()
    assert "assistant" not in KDConfig().summary()
    space = SearchSpace.from_dict(SPACE)
    seen = {space.sample(optuna.trial.FixedTrial({"depth": 1, "widths_0": 4, "assistant": a}))
            .kd.assistant for a in ("none", "auto")}
    assert seen == {"none", "auto"}


def test_target_is_the_geometric_mean_and_refuses_what_cannot_be_bridged() -> None:
    assert chains.target_flops(400, 100) == pytest.approx(200.0)
    with pytest.raises(ConfigError, match="teacher's FLOPs"):
        chains.target_flops(None, 100)
    with pytest.raises(ConfigError, match="smaller than the teacher"):
        chains.target_flops(100, 100)


def test_fit_spec_takes_the_capacity_nearest_the_target_in_log_scale(digits) -> None:
    space = SearchSpace.from_dict(SPACE)
    spec, flops = chains.fit_spec("cnn", {"depth": 1, "widths": [4], "kernel": 5}, 30000,
                                  digits, space)
    every = [count_flops(build_student("cnn", {"depth": d, "widths": [w] * d, "kernel": 5},
                                       digits.input_shape, 10), digits.input_shape)
             for d in (1, 2) for w in (4, 8, 16, 32)]
    assert flops == min(every, key=lambda f: abs(math.log(f / 30000)))
    assert spec["kernel"] == [5] * spec["depth"]  # non-capacity keys stay the student's


def _trial(number_flops: int, root: Path, number: int, *, recipe: dict[str, Any] | None = None,
           state: optuna.trial.TrialState = optuna.trial.TrialState.COMPLETE,
           weights: bool = True, constraints: list[float] | None = None,
           val: float = 0.9) -> optuna.trial.FrozenTrial:
    """A finished trial as storage holds it, with its kept weights under ``root``."""
    ckpt = f"students/{number}/student.pt"
    if weights:
        save_checkpoint(build_student("cnn", PARENT, (1, 8, 8), 10), root / ckpt)
    rec = TrialRecord(family="cnn", spec=PARENT, recipe=recipe or {}, flops=number_flops,
                      val_accuracy=val, checkpoint=ckpt, constraints=constraints or [0.0])
    return optuna.trial.create_trial(
        state=state, values=[val, number_flops] if state == optuna.trial.TrialState.COMPLETE
        else None,
        params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
        user_attrs={RECORD_ATTR: rec.packed()})


def test_find_parent_takes_only_trials_that_can_teach(tmp_path: Path) -> None:
    t = [_trial(25_000, tmp_path, 0, recipe={"assistant": "auto"}),  # itself taught by one
         _trial(26_000, tmp_path, 1, recipe={"quantize": "int8"}),  # an int8 recipe
         _trial(27_000, tmp_path, 2, weights=False),  # weights not kept
         _trial(27_500, tmp_path, 3, constraints=[0.5]),  # infeasible
         _trial(27_800, tmp_path, 4, state=optuna.trial.TrialState.PRUNED),
         _trial(1_000, tmp_path, 5),  # smaller than the student
         _trial(60_000, tmp_path, 6),  # 2.2x the target: too far
         _trial(20_000, tmp_path, 7),  # 1.36x below the target: the nearest usable
         _trial(36_000, tmp_path, 8)]  # 1.33x above: nearer in log scale
    for number, trial in enumerate(t):
        trial.number = number
    found = chains.find_parent(t, tmp_path, target=27_129, student_flops=2_344)
    assert found is not None and found[0].number == 8
    assert chains.find_parent(t[:7], tmp_path, target=27_129, student_flops=2_344) is None
    assert chains.find_parent(t, tmp_path, target=27_129, student_flops=2_344,
                              factor=1.35)[0].number == 8


def test_search_trial_uses_a_finished_trial_else_trains_its_assistant(
        digits, teacher_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = load_teacher(teacher_path, data=digits)
    taught_by: list[str] = []
    real = objective_module.run_distillation

    def spy(data: Any, source: Any, *args: Any, **kwargs: Any) -> Any:
        taught_by.append(source.hash)
        return real(data, source, *args, **kwargs)

    monkeypatch.setattr(objective_module, "run_distillation", spy)
    settings = SearchSettings(pareto_pruning=False, checkpoint_every=0.0, cost=NO_LATENCY,
                              train=TrainConfig(epochs=2, threads=1))
    paths = StudyPaths(tmp_path / "study")
    objective = Objective(SearchSpace.from_dict(SPACE), digits, teacher, settings, paths,
                          teacher_profile(teacher, digits, NO_LATENCY))
    study = optuna.create_study(directions=["maximize", "minimize"])

    def run(spec: dict[str, Any], assistant: str) -> TrialRecord:
        trial = study.ask()
        study.tell(trial, objective.evaluate(trial, _candidate(spec, assistant)))
        return TrialRecord.of(study.trials[-1])

    parent = run(PARENT, "none")
    assert parent.assistant_of is None and parent.assistant_seconds is None
    taught = run(STUDENT, "auto")
    assert taught.assistant_of == 0 and taught.assistant_seconds is None
    kept, _ = load_checkpoint(paths.root / parent.checkpoint)
    assert taught_by == [teacher.hash, network_teacher(kept, "trial 0").hash]
    assert taught.extra["assistant_spec"]["widths"] == PARENT["widths"]
    assert taught.retention == pytest.approx(  # against the teacher, not the assistant
        taught.test_accuracy / objective.teacher_profile["test_accuracy"])
    (paths.root / parent.checkpoint).unlink()  # weights gone: an assistant is trained inside
    inside = run(STUDENT, "auto")
    assert inside.assistant_of is None and inside.assistant_seconds > 0
    assert inside.cpu_seconds > inside.assistant_seconds  # counted in the trial's own time
    assert (paths.root / inside.extra["assistant_checkpoint"]).exists()
    kd, cfg = KDConfig(assistant="auto"), TrainConfig(epochs=1)  # an export retrains from:
    assert assistant_teacher(study, paths, inside, digits, teacher, kd, cfg).hash == taught_by[-1]
    (paths.root / inside.extra["assistant_checkpoint"]).unlink()  # the recorded spec, again
    again = assistant_teacher(study, paths, inside, digits, teacher, kd, cfg)
    assert again.module.spec == inside.extra["assistant_spec"]
    rows = front_records(study, objective.teacher_profile, paths)
    assert {r["assistant"] for r in rows if r["trial"] in (1, 2)} <= {
        "trial 0", f"trained inside: cnn {_summary(inside.extra['assistant_spec'])}"}
    lines = chain_lines([{**r, "assistant": "trial 0", "trial": 1} for r in rows[:1]])
    assert re.match(r"teacher -> trial 0 \(test acc .* -> trial 1", lines[0])


def _summary(spec: dict[str, Any]) -> str:
    from autokd.tables import spec_summary

    return spec_summary(spec)


def test_born_again_teaches_each_generation_with_the_previous(
        digits, teacher_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = load_teacher(teacher_path, data=digits)
    taught_by: list[str] = []
    real = chains.run_distillation

    def spy(data: Any, source: Any, *args: Any, **kwargs: Any) -> Any:
        taught_by.append(source.hash)
        return real(data, source, *args, **kwargs)

    monkeypatch.setattr(chains, "run_distillation", spy)
    runs = chains.born_again(digits, teacher, 2, KDConfig(), TrainConfig(epochs=1), NO_LATENCY)
    assert [r.spec for r in runs] == [teacher.module.spec] * 2
    assert taught_by == [teacher.hash, network_teacher(runs[0].model, "g1").hash]
    assert runs[1].teacher["hash"] == teacher.hash  # retention against the real teacher


def test_cli_born_again_prints_generations_and_writes_the_last(
        teacher_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "last.pt"
    assert main(["distill", "--teacher", str(teacher_path), "--born-again", "2", "--epochs",
                 "1", "--latency-batch", "1", "--json", "--out", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [g["generation"] for g in doc["generations"]] == [1, 2]
    assert all(0 <= g["test_accuracy"] <= 1 for g in doc["generations"])
    payload = torch.load(out, weights_only=True)
    assert payload["spec"]["widths"] == TEACHER["widths"] and payload["meta"]["born_again"] == 2


def _error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_cli_refuses_bad_chains(teacher_path: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:
    scripted = tmp_path / "t.ts"
    torch.jit.script(build_student("cnn", {"depth": 1, "widths": [8]}, (1, 8, 8), 10)).save(
        str(scripted))
    assert "needs an autokd teacher checkpoint" in _error(
        capsys, ["distill", "--teacher", str(scripted), "--born-again", "2", "--epochs", "1"])
    assert "drop --student, --assistant auto" in _error(
        capsys, ["distill", "--teacher", str(teacher_path), "--born-again", "2",
                 "--student", "cnn:depth=1", "--assistant", "auto"])
    assert "smaller than the teacher" in _error(
        capsys, ["distill", "--teacher", str(teacher_path), "--assistant", "auto",
                 "--student", "cnn:depth=2,widths=16/32", "--epochs", "1"])
    with pytest.raises(SystemExit) as exc:
        main(["distill", "--assistant", "maybe"])
    assert exc.value.code == 2
    assert "invalid choice: 'maybe'" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_quick_compares_both_chains_and_resumes(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}

    def quick() -> dict[str, Any]:
        proc = subprocess.run([sys.executable, "benchmarks/chains.py", "--quick"], cwd=root,
                              env=env, capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        written = json.loads((tmp_path / "autokd-bench-quick" / "chains.json").read_text())
        assert json.loads(proc.stdout) == written
        return written

    first = quick()
    (student,) = first["teacher_assistant"]
    row = first["runs"]["assistant/0"][student]
    assert row["helper"]["flops"] > row["direct"]["flops"] and row["helper"]["cpu_seconds"] > 0
    assert first["born_again"]["generation_2"]["n"] == 1
    assert isinstance(first["born_again_generation_1_test_accuracy"], float)
    again = quick()  # every seed is saved: nothing trains twice
    assert again["runs"] == first["runs"]
