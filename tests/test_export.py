"""``autokd export`` / ``evaluate`` / ``load_student`` on a real (tiny) search.

One module-scoped search (a small teacher, three 2-epoch trials in a tiny CNN space) and one
default export are shared; the --where grammar is tested on its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch

import autokd
from autokd.cli import main
from autokd.data import load_data
from autokd.errors import ConfigError, ExportError
from autokd.export import (
    FORMATS,
    PARITY_TOL,
    OnnxModule,
    evaluate_artifact,
    export_student,
    parse_where,
    select_trial,
    sha256_file,
    where_matches,
)
from autokd.record import SearchRecord, TrialRecord
from autokd.study import StudyPaths, find_study
from tests._corrupt import corrupting
from tests._helpers import quick_study

TINY_SPACE = """
family: cnn
architecture:
  depth: {int: [1, 2]}
  widths: {choice: [4, 8], per_stage: depth}
  kernel: 3
  pool: max
  activation: {choice: [relu, silu]}
distillation:
  soft_loss: kl
  temperature: {float: [1.0, 4.0]}
  alpha: {float: [0.5, 0.9]}
training:
  lr: 0.01
  batch_size: 64
  epochs: 2
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, StudyPaths]:
    """A 3-trial search with a quickly trained teacher (no default-teacher training)."""
    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOKD_CACHE", str(root / "cache"))
        study = quick_study(root, "tiny", TINY_SPACE, budget=3, seed=0)
    return study, StudyPaths(root / "results" / "tiny")


@pytest.fixture(scope="module")
def exported(tiny: Any) -> Any:
    study, paths = tiny
    return export_student(study, paths)


# -- the --where grammar ---------------------------------------------------------------------
def test_where_precedence_parentheses_and_aliases() -> None:
    node = parse_where("latency<2 or params<=10 and retention>=97%")
    assert node == ("or", [("cmp", "latency_ms", "<", 2.0),
                           ("and", [("cmp", "params", "<=", 10.0),
                                    ("cmp", "retention", ">=", 0.97)])])
    grouped = parse_where("(latency_ms<2 or params<=10) AND val_accuracy!=0.5")
    assert grouped[0] == "and" and grouped[1][0][0] == "or"
    metrics = {"latency_ms": 1.5, "params": 50, "retention": 0.99}
    assert where_matches(node, metrics)
    assert not where_matches(parse_where("latency_ms<1 and retention>0.9"), metrics)
    assert not where_matches(parse_where("flops<1e9"), metrics)  # not recorded -> false
    assert where_matches(parse_where("params==5e1"), metrics)


@pytest.mark.parametrize("text", ["latency_ms<", "x<<2", "import os", "a<1 and",
                                  "__import__('os').system('x')", "a<b", "(a<1", "", "2<a"])
def test_where_rejects_anything_but_comparisons(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_where(text)


# -- exporting -------------------------------------------------------------------------------
def test_export_writes_verified_artifacts(tiny: Any, exported: Any) -> None:
    study, paths = tiny
    card = exported.card
    assert exported.directory == paths.export / str(exported.trial)
    names = {p.name for p in exported.directory.iterdir()}
    assert names == {"student.pt", "student.torchscript.pt", "student.pt2", "student.onnx",
                     "model_card.json", "model_card.md"}  # no int8 for a float student
    best = study.trials[exported.trial]
    top = max(TrialRecord.of(t).get("val_accuracy") or -1 for t in study.trials)
    assert TrialRecord.of(best).get("val_accuracy") == top
    assert card["provenance"]["weights"]["how"] == "reused"
    on_disk = json.loads((exported.directory / "model_card.json").read_text())
    for name, entry in on_disk["artifacts"].items():
        assert sha256_file(exported.directory / name) == entry["sha256"]
    v = card["verification"]
    for fmt in ("torchscript", "pt2", "onnx"):
        assert v[fmt]["max_abs_diff"] <= PARITY_TOL, fmt
    assert v["onnx"]["test_accuracy"] == card["metrics"]["test"]["accuracy"]
    assert card["metrics"]["test"]["accuracy"] == pytest.approx(TrialRecord.of(best).get("test_accuracy"))
    lat = card["costs"]["latency"]
    assert lat["search"]["latency_ms"] == TrialRecord.of(best).get("latency_ms")
    assert lat["export"]["latency_ms"] > 0 and lat["onnx"]["latency_ms"] > 0
    assert card["dataset"]["split_hash"] == SearchRecord.of(study).dataset_hash
    assert card["provenance"]["storage"] == "sqlite (study.db in the results directory)"
    assert "sha256" in (exported.directory / "model_card.md").read_text()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_onnx_and_torchscript_match_pytorch_on_any_batch(exported: Any) -> None:
    data = load_data("digits")
    student = autokd.load_student(exported.directory)
    scripted = torch.jit.load(str(exported.directory / "student.torchscript.pt"))
    onnx = OnnxModule(exported.directory / "student.onnx")
    with torch.no_grad():
        for n in (1, 7, len(data.x_test)):
            x = data.x_test[:n]
            ref = student(x)
            assert (scripted(x) - ref).abs().max() <= PARITY_TOL
            assert (onnx(x) - ref).abs().max() <= PARITY_TOL
        correct = int((onnx(data.x_test).argmax(1) == data.y_test).sum())
    assert correct / len(data.y_test) == exported.card["metrics"]["test"]["accuracy"]


def test_evaluate_every_format_reproduces_the_card(exported: Any) -> None:
    data = load_data("digits")
    want = exported.card["metrics"]["test"]["accuracy"]
    for name in ("student.pt", "student.torchscript.pt", "student.pt2", "student.onnx"):
        out = evaluate_artifact(exported.directory / name, data, latency=name.endswith("onnx"))
        assert out["test_accuracy"] == want and out["card"]["verified"], name
    assert out["latency_ms"] > 0


def test_tampered_artifact_is_refused(exported: Any, tmp_path: Path, capsys: Any) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(exported.directory, copy)
    for name in ("student.onnx", "student.pt"):
        with open(copy / name, "ab") as fh:
            fh.write(b"\0")
    with pytest.raises(ExportError, match="modified after export"):
        evaluate_artifact(copy / "student.onnx", load_data("digits"))
    with pytest.raises(ExportError, match="modified after export"):
        autokd.load_student(copy)
    assert main(["evaluate", str(copy / "student.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "modified after export" in err[0]


def test_picks_follow_their_rules(tiny: Any) -> None:
    study, _ = tiny
    usable = [t for t in study.trials if t.state.name == "COMPLETE"]
    t, _, _ = select_trial(study, pick="smallest", min_retention=0.0)
    assert TrialRecord.of(t).get("params") == min(TrialRecord.of(u).get("params") for u in usable)
    t, _, _ = select_trial(study, pick="fastest", min_retention=0.0)
    assert TrialRecord.of(t).get("latency_ms") == min(TrialRecord.of(u).get("latency_ms") for u in usable)
    limit = sorted(TrialRecord.of(u).get("params") for u in usable)[1]
    t, _, notes = select_trial(study, where=f"params<={limit} and retention>0")
    assert TrialRecord.of(t).get("params") <= limit and notes  # filtering on test retention warns
    with pytest.raises(ExportError, match="lower --min-retention"):
        select_trial(study, pick="smallest", min_retention=1.9)
    with pytest.raises(ConfigError):
        select_trial(study, trial=0, pick="accuracy")


def test_pick_fastest_ranks_by_the_deploy_runtime_when_the_front_was_retimed(tiny: Any) -> None:
    """Eager latency ranks Python dispatch: after the search re-timed the front in ONNX
    Runtime, ``--pick fastest`` goes by that, among the re-timed students, and says so."""
    from autokd.runtime_front import RUNTIME_ATTR

    study, _ = tiny
    eager, how, _ = select_trial(study, pick="fastest", min_retention=0.0)
    assert "onnxruntime" not in how
    usable = [t for t in study.trials if t.state.name == "COMPLETE"]
    # the runtime disagrees with eager: another student is the fastest there
    target = next(t for t in usable if t.number != eager.number)
    timed = {str(t.number): {"latency_ms": 0.5 if t is target else 1.0 + t.number}
             for t in usable}
    study.set_user_attr(RUNTIME_ATTR, {"runtime": "onnxruntime", "trials": timed})
    try:
        t, how, notes = select_trial(study, pick="fastest", min_retention=0.0)
        assert t.number == target.number and "onnxruntime" in how and not notes
        del timed[str(target.number)]  # only some were re-timed: the rest are left out, said
        study.set_user_attr(RUNTIME_ATTR, {"runtime": "onnxruntime", "trials": timed})
        t, _, notes = select_trial(study, pick="fastest", min_retention=0.0)
        assert t.number != target.number and str(t.number) in timed
        assert notes and "not timed in onnxruntime" in notes[0]
    finally:
        study.set_user_attr(RUNTIME_ATTR, None)
    assert select_trial(study, pick="fastest", min_retention=0.0)[0].number == eager.number


def test_bad_trials_are_one_clear_error(tiny: Any, capsys: Any) -> None:
    study, paths = tiny
    with pytest.raises(ExportError, match="does not exist"):
        export_student(study, paths, trial=999)
    failed = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                       user_attrs={"fail_reason": "out of memory"})
    study.add_trial(failed)
    number = study.trials[-1].number
    assert main(["export", str(paths.root), "--trial", str(number)]) == 2
    assert "is fail (out of memory)" in capsys.readouterr().err
    assert not (paths.export / str(number)).exists()


def test_unwritable_output_leaves_nothing(tiny: Any, tmp_path: Path) -> None:
    study, paths = tiny
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="cannot write"):
        export_student(study, paths, out=blocker / "sub" / "out", formats="onnx")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ExportError, match="not an autokd export"):
        export_student(study, paths, out=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_failed_verification_publishes_nothing(tiny: Any, tmp_path: Path, capsys: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A weight changed inside the ONNX file as it is written, before its sha256 is carded:
    parity refuses it, and neither the folder nor a card is left behind."""
    _, paths = tiny
    monkeypatch.setitem(FORMATS._items, "onnx", corrupting(FORMATS.get("onnx"), "onnx"))
    out = tmp_path / "exports" / "x"
    assert main(["export", str(paths.root), "--formats", "pt,onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "onnx export does not match the PyTorch student" in err[0], err
    assert not out.exists() and not (tmp_path / "exports").exists()


def test_missing_weights_reproduce_the_trial(tiny: Any, tmp_path: Path) -> None:
    _, paths = tiny
    shutil.copytree(paths.root, tmp_path / "tiny", ignore=shutil.ignore_patterns("students"))
    study, copy = find_study(str(tmp_path / "tiny"))
    trial = study.trials[0]
    result = export_student(study, copy, trial=0, formats="onnx")
    weights = result.card["provenance"]["weights"]
    assert weights["how"] == "retrained" and weights["epochs"] == 2
    assert "kept no weights" in weights["reason"]
    assert result.card["metrics"]["val"]["accuracy"] == pytest.approx(
        TrialRecord.of(trial).get("val_accuracy"), abs=1e-6)


def test_retrain_uses_the_recorded_recipe(tiny: Any, tmp_path: Path) -> None:
    study, paths = tiny
    result = export_student(study, paths, trial=0, retrain=True, epochs=1, formats=("onnx",),
                            out=tmp_path / "re")
    weights = result.card["provenance"]["weights"]
    assert weights["how"] == "retrained" and weights["epochs"] == 1
    assert sorted(p.name for p in result.directory.iterdir()) == [
        "model_card.json", "model_card.md", "student.onnx"]
    assert result.card["hyperparameters"]["recipe"] == TrialRecord.of(study.trials[0]).get("recipe")
    again = export_student(study, paths, trial=0, retrain=True, epochs=1, formats=("onnx",),
                           out=tmp_path / "re")  # re-export replaces the folder atomically
    assert again.directory == result.directory
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    x = load_data("digits").x_test[:5]
    assert np.isfinite(OnnxModule(again.directory / "student.onnx")(x).numpy()).all()


def test_cli_export_prints_both_latencies(tiny: Any, tmp_path: Path, capsys: Any) -> None:
    _, paths = tiny
    args = ["export", str(paths.root), "--where", "val_accuracy>0 and retention>0",
            "--formats", "pt,onnx", "--out", str(tmp_path / "cli")]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "test-split metrics" in captured.err  # filtering on test retention is flagged
    assert "latency ms b1 / b64 (search)" in captured.out
    assert "latency ms b1 / b64 (export)" in captured.out and "sha256" in captured.out
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == [
        "model_card.json", "model_card.md", "student.onnx", "student.pt"]
