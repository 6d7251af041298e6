"""``autokd distill`` and ``autokd teacher train``: JSON output, checkpoints, and user errors
(one ``autokd: error:`` line on stderr, exit code 2, never a traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autokd import train
from autokd.cli import main
from autokd.data import DataSplits
from autokd.models import build_student
from autokd.teachers import load_checkpoint, load_teacher, save_checkpoint

FAST = ["--epochs", "3", "--device", "cpu"]


def _run_json(capsys: pytest.CaptureFixture, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _user_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run ``argv``; assert it failed as a user error and return the one stderr line."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autokd: error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


# -- distill ---------------------------------------------------------------------------------
def test_distill_json_reports_student_teacher_and_ratios(capsys, wine_teacher: Path,
                                                          tmp_path: Path) -> None:
    out_path = tmp_path / "student.pt"
    out = _run_json(capsys, ["distill", "--dataset", "wine", "--teacher", str(wine_teacher),
                             "--student", "mlp:depth=1,widths=8", "--json", "--out",
                             str(out_path), *FAST])
    student, teacher = out["student"], out["teacher"]
    assert out["mode"] == "kd" and out["family"] == "mlp" and out["spec"]["widths"] == [8]
    assert out["recipe"]["soft_loss"] == "kl" and out["dataset"]["name"] == "wine"
    assert student["epochs_run"] == 3 and 1 <= student["best_epoch"] <= 3
    for key in ("test_accuracy", "val_accuracy", "val_kd_loss", "params", "flops", "latency_ms"):
        assert student[key] is not None, key
    assert 0 < teacher["test_accuracy"] <= 1 and teacher["params"] > student["params"]
    assert student["retention"] == pytest.approx(student["test_accuracy"]
                                                 / teacher["test_accuracy"])
    assert student["params_compression"] == pytest.approx(teacher["params"] / student["params"])
    assert student["flops_compression"] == pytest.approx(teacher["flops"] / student["flops"])
    model, payload = load_checkpoint(out_path)
    assert model.spec == out["spec"] and payload["meta"]["recipe"]["alpha"] == 0.9
    assert payload["meta"]["metrics"]["test_accuracy"] == student["test_accuracy"]


def test_distill_scratch(capsys, wine_teacher: Path) -> None:
    out = _run_json(capsys, ["distill", "--dataset", "wine", "--teacher", str(wine_teacher),
                             "--student", "mlp:depth=1,widths=8", "--scratch", "--json", *FAST])
    assert out["mode"] == "scratch"
    assert out["recipe"]["soft_loss"] == "none" and out["recipe"]["alpha"] == 0.0
    assert out["student"]["retention"] is not None and out["student"]["epochs_run"] == 3


def test_distill_with_an_ensemble(capsys, wine_teacher: Path, tmp_path: Path,
                                  wine: DataSplits) -> None:
    torch.manual_seed(1)
    other = build_student("mlp", {"depth": 1, "widths": 16}, wine.input_shape, wine.num_classes)
    second = save_checkpoint(other, tmp_path / "second.pt")
    out = _run_json(capsys, ["distill", "--dataset", "wine", "--teacher", str(wine_teacher),
                             "--teacher", str(second), "--teacher-weighting", "confidence",
                             "--student", "mlp:depth=1,widths=8", "--json", *FAST])
    assert out["teacher"]["name"] == "wine-teacher.pt + second.pt"
    assert out["teacher"]["params"] == sum(p.numel() for p in other.parameters()) + sum(
        p.numel() for p in load_teacher(wine_teacher).module.parameters())
    assert out["recipe"]["teacher_weighting"] == "confidence"


def test_distill_table_output(capsys, wine_teacher: Path) -> None:
    assert main(["distill", "--dataset", "wine", "--teacher", str(wine_teacher),
                 "--student", "mlp:depth=1,widths=8", *FAST]) == 0
    out = capsys.readouterr().out
    assert "distillation on wine" in out and "retention" in out and "KD (kl, T=4.0" in out


# -- teacher train ---------------------------------------------------------------------------
def test_teacher_train_writes_a_loadable_checkpoint(capsys, tmp_path: Path,
                                                     wine: DataSplits) -> None:
    path = tmp_path / "nested" / "teacher.pt"
    out = _run_json(capsys, ["teacher", "train", "--dataset", "wine", "--out", str(path),
                             "--epochs", "3", "--device", "cpu", "--json"])
    assert Path(out["path"]) == path and out["family"] == "mlp"
    assert out["dataset"]["split_hash"] == wine.split_hash and out["params"] > 0
    teacher = load_teacher(path, data=wine)
    assert teacher.meta["data"]["split_hash"] == wine.split_hash
    assert teacher.accuracy(wine, "test") == pytest.approx(out["test_accuracy"])


@pytest.mark.parametrize("family", ["mbv2", "resnet"])
def test_teacher_train_family_uses_its_recipe(capsys, tmp_path: Path, family: str) -> None:
    from autokd.models import get_family

    path = tmp_path / f"{family}.pt"
    out = _run_json(capsys, ["teacher", "train", "--dataset", "digits", "--family", family,
                             "--out", str(path), "--epochs", "1", "--device", "cpu", "--json"])
    recipe = get_family(family).teacher
    assert out["family"] == family
    assert out["spec"] == get_family(family).normalise(dict(recipe.spec))
    model, _meta = load_checkpoint(path)
    assert model.family == family and model.input_shape == (1, 8, 8)


# -- user errors -----------------------------------------------------------------------------
@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if a run gets as far as training (errors must come first)."""

    def refuse(self: train.Trainer) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(train.Trainer, "fit", refuse)


def test_missing_teacher_file(capsys, no_training, tmp_path: Path) -> None:
    line = _user_error(capsys, ["distill", "--dataset", "wine", "--teacher",
                                str(tmp_path / "nope.pt"), *FAST])
    assert "not found" in line and "nope.pt" in line


def test_unknown_dataset(capsys, no_training, wine_teacher: Path) -> None:
    line = _user_error(capsys, ["distill", "--dataset", "wnie", "--teacher", str(wine_teacher),
                                *FAST])
    assert "unknown dataset 'wnie'" in line and "wine" in line


@pytest.mark.parametrize("student", ["vgg:depth=2", "mlp:depth", "mlp:bogus=1",
                                     "cnn:depth=2"])
def test_bad_student(capsys, no_training, wine_teacher: Path, student: str) -> None:
    _user_error(capsys, ["distill", "--dataset", "wine", "--teacher", str(wine_teacher),
                         "--student", student, *FAST])


def test_csv_without_target(capsys, no_training, tmp_path: Path) -> None:
    csv = tmp_path / "table.csv"
    rows = [f"{i % 7},{i % 5},{i % 2}" for i in range(40)]
    csv.write_text("a,b,label\n" + "\n".join(rows) + "\n")
    line = _user_error(capsys, ["distill", "--dataset", f"csv:{csv}", *FAST])
    assert "target" in line


def test_teacher_with_wrong_number_of_classes(capsys, no_training, tmp_path: Path,
                                              wine: DataSplits) -> None:
    model = build_student("mlp", {"depth": 1, "widths": 8}, wine.input_shape, 5)
    path = save_checkpoint(model, tmp_path / "five.pt")
    line = _user_error(capsys, ["distill", "--dataset", "wine", "--teacher", str(path), *FAST])
    assert "3 classes" in line


def test_unwritable_out(capsys, no_training, tmp_path: Path, wine_teacher: Path) -> None:
    blocker = tmp_path / "file.txt"  # a regular file cannot hold a directory (even for root)
    blocker.write_text("x")
    _user_error(capsys, ["distill", "--dataset", "wine", "--teacher", str(wine_teacher),
                         "--out", str(blocker / "x.pt"), *FAST])
    line = _user_error(capsys, ["teacher", "train", "--dataset", "wine", "--out",
                                str(blocker / "x.pt"), "--epochs", "1"])
    assert "file.txt" in line


@pytest.mark.parametrize(("family", "expected"), [
    ("vgg", "unknown student family 'vgg'"),  # not registered
    ("cnn1d", "cnn1d students need 1-D signal"),  # digits are images
])
def test_teacher_train_family_errors(capsys, no_training, tmp_path: Path, family: str,
                                     expected: str) -> None:
    line = _user_error(capsys, ["teacher", "train", "--dataset", "digits", "--family", family,
                                "--out", str(tmp_path / "t.pt"), "--epochs", "1"])
    assert expected in line


@pytest.mark.parametrize("epochs", ["0", "-3", "two"])
def test_non_positive_epochs_are_argparse_errors(capsys, epochs: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["distill", "--dataset", "wine", "--epochs", epochs])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "expected a positive integer" in err and "Traceback" not in err


def test_exit_code_and_stderr_in_a_real_process(tmp_path: Path, wine_teacher: Path) -> None:
    env = {**os.environ, "AUTOKD_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "autokd", "distill", "--dataset", "wine", "--teacher",
         str(wine_teacher), "--student", "cnn:depth=2", "--epochs", "1"],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("autokd: error: cnn students need image")
