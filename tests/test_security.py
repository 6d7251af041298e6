"""Hostile files and secrets: autokd runs no code it was not told to, and leaks no credentials.

A "hostile" checkpoint here is a real pickle whose loading runs ``touch MARKER``: a test passes
only if the marker file never appears (unless ``--trust`` was given, which shows the flag is
the one gate). Credentialed storage URLs are checked in every place they could surface: error
lines, logs, tracebacks, config.yaml, the study database, tables, reports and model cards.

Covered elsewhere, not repeated: a malicious teacher file given with ``--teacher`` and pickled
modules (tests/test_teachers.py::test_pickle_that_runs_code_is_refused_without_trust), joblib and
``module:function`` teachers without ``--trust`` (test_teachers.py), YAML spaces with Python
tags (tests/test_space.py, tests/test_bad_input.py), npz files holding pickled objects
(tests/test_data.py), model cards hashing every artifact and ``evaluate``/``load_student``
refusing a modified one (tests/test_export.py::test_default_export_is_verified_and_carded,
::test_tampered_artifact_is_refused), credentials in report pages built from config.yaml
(tests/test_report.py::test_credentials_never_reach_the_report).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml

import autokd
from autokd import study as study_module
from autokd.cli import main
from autokd.config import CostConfig, TrainConfig
from autokd.data import load_data
from autokd.distill import KDConfig
from autokd.errors import AutokdError, ExportError, StudyError
from autokd.export import evaluate_artifact, export_student, sha256_file
from autokd.pipeline import run_distillation
from autokd.study import find_study, redact_url
from autokd.teachers import save_checkpoint
from tests._helpers import update_search_record

SPACE = """
family: cnn
architecture:
  depth: {int: [1, 2]}
  widths: {choice: [4, 8], per_stage: depth}
distillation:
  alpha: {float: [0.5, 1.0]}
training:
  lr: 0.01
  epochs: 2
"""
SECRET = "s3cret"
CRED = f"postgresql://alice:{SECRET}@db.example:5432/ak"
REDACTED = "postgresql://***@db.example:5432/ak"


class _Payload:
    """Unpickling this runs ``touch path``: proof that loading executed code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    """An "autokd checkpoint" whose state dict runs code when unpickled."""
    torch.save({"format": "autokd-model", "version": 1, "family": "cnn",
                "spec": {"depth": 1, "widths": [4]}, "input_shape": [1, 8, 8],
                "num_classes": 10, "state_dict": _Payload(marker), "meta": {}}, path)
    return path


def one_line(capsys: pytest.CaptureFixture, argv: list[str], code: int = 2) -> str:
    assert main(argv) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("security")
    data = load_data("digits")
    run = run_distillation(data, None, "cnn", {"depth": 1, "widths": [16]},
                           KDConfig(soft_loss="none", alpha=0.0), TrainConfig(epochs=3),
                           CostConfig(latency=False))
    (root / "space.yaml").write_text(SPACE)
    return {"root": root, "space": root / "space.yaml",
            "teacher": save_checkpoint(run.model, root / "teacher.pt", data=data.describe())}


def search_argv(files: dict[str, Path], results: Path, *extra: str) -> list[str]:
    return ["search", "--space", str(files["space"]), "--teacher", str(files["teacher"]),
            "--budget", "2", "--epochs", "2", "--name", "s", "--results", str(results),
            "--no-latency", "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def searched(files: dict[str, Path]) -> Path:
    """A real 2-trial study whose Pareto students were kept."""
    results = files["root"] / "results"
    assert main(search_argv(files, results, "--json")) == 0
    return results / "s"


@pytest.fixture
def copy(searched: Path, tmp_path: Path) -> Path:
    """A private copy of the study (tests below plant hostile files in it)."""
    return Path(shutil.copytree(searched, tmp_path / "s"))


# -- hostile student checkpoints -------------------------------------------------------------
def test_hostile_student_checkpoint_is_refused_by_evaluate_and_load_student(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    for name in ("student.pt", "weights.pth"):
        evil = hostile_checkpoint(tmp_path / name, marker)
        line = one_line(capsys, ["evaluate", str(evil), "--no-latency"])
        assert "holds pickled Python objects" in line and name in line
        with pytest.raises(ExportError, match="holds pickled Python objects"):
            autokd.load_student(evil)
    assert not marker.exists()


def test_swapped_student_with_a_matching_card_is_still_refused(
        copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Whoever can replace student.pt can rewrite the card too: weights_only still holds."""
    out = tmp_path / "export"
    export_student(*find_study(str(copy)), formats="pt", out=out)
    marker = tmp_path / "pwned"
    hostile_checkpoint(out / "student.pt", marker)
    card = json.loads((out / "model_card.json").read_text())
    card["artifacts"]["student.pt"]["sha256"] = sha256_file(out / "student.pt")
    (out / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ExportError, match="holds pickled Python objects"):
        autokd.load_student(out)
    assert "holds pickled" in one_line(capsys, ["evaluate", str(out / "student.pt")])
    assert not marker.exists()


def test_a_modified_artifact_is_refused_before_any_loader_sees_it(
        copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "export"
    export_student(*find_study(str(copy)), formats="pt", out=out)
    marker = tmp_path / "pwned"
    hostile_checkpoint(out / "student.pt", marker)  # the card still has the old sha256

    def loader(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a file that fails its card check must not be loaded")

    monkeypatch.setattr("autokd.export.verify.run_artifact", loader)
    monkeypatch.setattr("autokd.export.formats.load_checkpoint", loader)
    with pytest.raises(ExportError, match="modified after export"):
        evaluate_artifact(out / "student.pt", load_data("digits"), latency=False)
    with pytest.raises(ExportError, match="modified after export"):
        autokd.load_student(out)
    assert not marker.exists()


# -- hostile files inside a study directory --------------------------------------------------
def _plant_teacher(copy: Path, marker: Path, trust_in_config: bool) -> None:
    """The study's own teacher.pt replaced by a hostile pickle; its original path is gone, so
    export falls back to the copy in the study directory (what a study handed over looks like)."""
    hostile_checkpoint(copy / "teacher.pt", marker)
    study, _ = find_study(str(copy))
    update_search_record(study, teacher_ref="/elsewhere/teacher.pt")
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg.update(teacher="/elsewhere/teacher.pt", trust=trust_in_config)
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.mark.parametrize("trust_in_config", [False, True], ids=["config-trust-false",
                                                                 "config-trust-true"])
def test_export_retrain_refuses_a_hostile_teacher_in_the_study_dir(
        trust_in_config: bool, copy: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    _plant_teacher(copy, marker, trust_in_config)
    argv = ["export", str(copy), "--retrain", "--epochs", "1", "--formats", "pt",
            "--out", str(tmp_path / "out")]
    line = one_line(capsys, argv)
    assert "retraining needs the search's teacher" in line and "without --trust" in line
    assert not marker.exists() and not (tmp_path / "out").exists()
    one_line(capsys, [*argv, "--trust"])  # only the flag lets the pickle run (then it fails)
    assert marker.exists()


def test_export_without_kept_weights_refuses_a_hostile_teacher(
        copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    _plant_teacher(copy, marker, trust_in_config=True)
    shutil.rmtree(copy / "students")  # reproducing the trial needs the teacher
    line = one_line(capsys, ["export", str(copy), "--formats", "pt"])
    assert "without --trust" in line and not marker.exists()


def test_hostile_kept_student_weights_are_refused(copy: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    for kept in (copy / "students").glob("*/student.pt"):
        hostile_checkpoint(kept, marker)
    line = one_line(capsys, ["export", str(copy), "--formats", "pt"])
    assert "kept weights unusable" in line and "holds pickled Python objects" in line
    assert not marker.exists()


@pytest.mark.parametrize("command", ["report", "export"])
def test_config_yaml_with_python_tags_is_not_executed(command: str, copy: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    (copy / "config.yaml").write_text(
        f"storage: !!python/object/apply:os.system ['touch {marker}']\n")
    line = one_line(capsys, [command, str(copy)])
    assert "config.yaml is not valid YAML" in line and not marker.exists()


# -- credentials -----------------------------------------------------------------------------
UNREACHABLE = [f"postgresql://alice:{SECRET}@127.0.0.1:1/db",
               f"postgresql://alice@127.0.0.1:1/db?password={SECRET}",
               f"postgresql://127.0.0.1:1/db?user=alice&password={SECRET}&sslmode=disable"]


@pytest.mark.parametrize("url", UNREACHABLE, ids=["userinfo", "query", "query-middle"])
def test_unreachable_credentialed_storage_never_shows_the_password(
        url: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = one_line(capsys, ["-v", *search_argv(files, tmp_path, "--storage", url)])
    assert "cannot open storage postgresql" in line and "***" in line
    for argv in (["report", "s", "--storage", url], ["worker", "s", "--storage", url]):
        line = one_line(capsys, argv)
        assert "***" in line
    with pytest.raises(StudyError) as info:
        main(["--debug", "report", "s", "--storage", url])
    shown = "".join(traceback.format_exception(info.value))  # what --debug prints
    assert SECRET not in shown and SECRET not in capsys.readouterr().err


def test_worker_storage_from_the_environment_is_redacted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("AUTOKD_STORAGE", UNREACHABLE[0])
    line = one_line(capsys, ["worker", "s", "--results", str(tmp_path)])
    assert SECRET not in line


def test_redact_url_forms() -> None:
    assert redact_url(CRED) == REDACTED
    assert redact_url("postgresql://h/db?sslmode=require&PASSWORD=x;y") == \
        "postgresql://h/db?sslmode=require&PASSWORD=***;y"
    assert redact_url("sqlite:////tmp/a@b/study.db") == "sqlite:////tmp/a@b/study.db"
    assert redact_url("s3://key:secretkey@bucket/teacher.pt") == "s3://***@bucket/teacher.pt"


@pytest.fixture
def reachable_cred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make ``CRED`` a working storage: a SQLite file behind it (no server needed).

    ``show`` makes the storage report ``CRED`` as its URL, as a real PostgreSQL backend would
    (readers only: the search's locks must see SQLite).
    """
    real = study_module._storage
    db = tmp_path / "behind-the-url.db"
    state = {"show": False}

    def storage(url: str) -> optuna.storages.BaseStorage:
        if url != CRED:
            return real(url)
        backend = real(f"sqlite:///{db}")
        if state["show"]:
            backend.url = url
        return backend

    monkeypatch.setattr(study_module, "_storage", storage)
    return state


def _no_secret_under(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_credentialed_storage_never_reaches_any_file_or_output(
        reachable_cred: Any, files: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    assert main(["-v", *search_argv(files, results, "--storage", CRED)]) == 0
    root = results / "s"
    assert yaml.safe_load((root / "config.yaml").read_text())["storage"] == REDACTED
    line = one_line(capsys, ["report", str(root)])  # the study needs its credentials again
    assert REDACTED in line and "--storage" in line
    reachable_cred["show"] = True  # readers now see a PostgreSQL-like backend
    monkeypatch.setenv("AUTOKD_STORAGE", CRED)
    assert main(["report", str(root)]) == 0
    assert REDACTED in (root / "report.md").read_text()
    assert REDACTED in (root / "report.html").read_text()
    assert main(["export", str(root), "--formats", "pt", "--json"]) == 0
    card = json.loads(next(root.glob("export/*/model_card.json")).read_text())
    assert card["provenance"]["storage"] == REDACTED
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    _no_secret_under(tmp_path)  # config, tables, reports, cards, checkpoints and the database
    db = tmp_path / "behind-the-url.db"
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    attrs = json.dumps([study.user_attrs] + [t.user_attrs for t in study.trials], default=str)
    assert SECRET not in attrs


def test_library_errors_redact_too(tmp_path: Path) -> None:
    for url in UNREACHABLE:
        with pytest.raises(AutokdError) as info:
            find_study("s", tmp_path, storage=url)
        assert SECRET not in str(info.value) and "***" in str(info.value)
    assert sys.modules["autokd.study"] is study_module
