"""Results written by autokd v0.1 must still report, export and resume.

tests/fixtures/v01/ is a small study exactly as v0.1 left it (tests/fixtures/make_v01_fixture.py
records how it was made; the tests never regenerate it). Each test copies the fixture root into
a temporary folder and runs the CLI from there, as the user who made it would: the paths v0.1
recorded (``--teacher teachers/small.pt``, ``--space tiny.yaml``, ``--results results``) are
relative to that folder. Expected values come from the v0.1 files themselves (trials.csv,
pareto.csv, the model card), so the assertions hold however later versions store trials.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest

from autokd.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "v01"
META: dict[str, Any] = json.loads((FIXTURE / "fixture.json").read_text())
STUDY_DIR = META["study_dir"]
ARTIFACTS = ("student.pt", "student.torchscript.pt", "student.onnx")
NUMBERS = ("val_accuracy", "test_accuracy", "flops", "params")
FINISHED = ("COMPLETE", "PRUNED")


@pytest.fixture
def v01(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the fixture root as the working directory, with an empty cache."""
    root = tmp_path / "v01"
    shutil.copytree(FIXTURE, root)
    monkeypatch.chdir(root)
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "cache"))
    return root


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    """Run ``autokd ARGV`` (with ``--json``) in-process; it must succeed."""
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == 0, f"autokd {' '.join(argv)} exited {code}: {captured.err}"
    return json.loads(captured.out)


def _rows(path: Path) -> dict[int, dict[str, str]]:
    with path.open(newline="") as fh:
        return {int(r["trial"]): r for r in csv.DictReader(fh)}


def _recorded(path: Path) -> dict[int, dict[str, Any]]:
    """What the reports show per trial, parsed from a trials.csv."""
    out = {}
    for number, r in _rows(path).items():
        if r["state"] != "COMPLETE":
            continue
        out[number] = {**{k: float(r[k]) for k in NUMBERS}, "family": r["family"],
                       "spec": json.loads(r["spec"]), "recipe": json.loads(r["recipe"])}
    return out


V01_TRIALS = _recorded(FIXTURE / STUDY_DIR / "trials.csv")


def _assert_same(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    for key in NUMBERS:
        assert float(got[key]) == pytest.approx(want[key], rel=1e-9), f"{where}: {key}"
    for key in ("family", "spec", "recipe"):
        assert got[key] == want[key], f"{where}: {key}"


def _assert_same_architecture(card: dict[str, Any], trial: dict[str, Any]) -> None:
    """The exported student is the trial's network: same family, same measured size (the card
    spells the spec out in full, e.g. one kernel per stage, so it is not compared as text)."""
    assert card["model"]["family"] == trial["family"]
    assert (card["costs"]["params"], card["costs"]["flops"]) == (trial["params"], trial["flops"])


def _trials(db: Path) -> dict[int, tuple[str, tuple[float, ...] | None]]:
    """State and objective values of every trial, read with plain Optuna."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    try:
        study = optuna.load_study(study_name=META["study"], storage=storage)
        return {t.number: (t.state.name, tuple(t.values) if t.values else None)
                for t in study.get_trials(deepcopy=False)}
    finally:
        storage.engine.dispose()


def test_fixture_is_consistent() -> None:
    """The fixture's own bookkeeping agrees with its files (guards against a partial copy)."""
    front = set(_rows(FIXTURE / STUDY_DIR / "pareto.csv"))
    assert front == set(META["front"]) and META["export_trial"] in front
    assert META["retrain_trial"] in V01_TRIALS and META["retrain_trial"] not in front
    assert len(V01_TRIALS) == META["budget"]
    kept = {int(p.name) for p in (FIXTURE / STUDY_DIR / "students").iterdir()}
    assert kept == front
    assert {p.name for p in (FIXTURE / STUDY_DIR / "export" / str(META["export_trial"]))
            .iterdir()} >= {*ARTIFACTS, "model_card.json", "model_card.md"}


def test_report_of_an_old_study(v01: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = v01 / STUDY_DIR
    for name in ("report.md", "pareto.png", "trials.csv", "pareto.csv"):
        (study / name).unlink()  # so the files checked below are the ones this run wrote
    out = _cli(capsys, "report", STUDY_DIR, "--json")
    for name in ("report.html", "report.md", "pareto.png", "trials.csv", "pareto.csv"):
        assert (study / name).stat().st_size > 0, name
    # v0.1's front, less its students below today's usefulness floor (retention < 0.5)
    below = set(out["usefulness"]["trials"])
    useful = set(META["front"]) - below
    assert below & set(META["front"]) and useful
    assert sorted(r["trial"] for r in out["front"]) == sorted(useful)
    assert set(_rows(study / "pareto.csv")) == useful
    assert out["counts"]["complete"] == out["counts"]["total"] == META["budget"]
    assert out["study"] == META["study"]


def test_old_trial_attributes_read_back(v01: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Metrics, costs, architecture and recipe of every old trial read back as v0.1 wrote
    them: in the report's front and in the regenerated trials.csv."""
    out = _cli(capsys, "report", STUDY_DIR, "--json")
    for row in out["front"]:
        _assert_same(row, V01_TRIALS[row["trial"]], f"report front, trial {row['trial']}")
        assert row["weights_kept"], f"trial {row['trial']}: kept weights not found"
        assert row["architecture"] and row["recipe_summary"]
    again = _recorded(v01 / STUDY_DIR / "trials.csv")
    assert set(again) == set(V01_TRIALS)
    for number, want in V01_TRIALS.items():
        _assert_same(again[number], want, f"trials.csv, trial {number}")


def test_export_reuses_kept_weights(v01: Path, capsys: pytest.CaptureFixture[str]) -> None:
    number = META["export_trial"]
    folder = v01 / STUDY_DIR / "export" / str(number)
    old_card = json.loads((folder / "model_card.json").read_text())
    assert (v01 / STUDY_DIR / "students" / str(number) / "student.pt").is_file()
    out = _cli(capsys, "export", STUDY_DIR, "--trial", str(number), "--json")
    card = out["card"]
    assert out["trial"] == number and Path(out["directory"]).resolve() == folder.resolve()
    assert card["provenance"]["weights"]["how"] == "reused"
    for fmt in ("pt", "torchscript", "onnx"):
        assert card["verification"][fmt]["passed"], fmt
    for name in (*ARTIFACTS, "model_card.json", "model_card.md"):
        assert (folder / name).stat().st_size > 0, name
    # the very weights the search kept: same accuracy as at search time and as v0.1's export
    test_accuracy = card["metrics"]["test"]["accuracy"]
    assert test_accuracy == old_card["metrics"]["test"]["accuracy"]
    assert test_accuracy == pytest.approx(V01_TRIALS[number]["test_accuracy"], abs=1e-6)
    assert card["metrics"]["search"]["test_accuracy"] == pytest.approx(
        V01_TRIALS[number]["test_accuracy"], rel=1e-9)
    _assert_same_architecture(card, V01_TRIALS[number])
    assert card["teacher"]["hash"] == old_card["teacher"]["hash"]
    evaluated = _cli(capsys, "evaluate", str(folder / "student.onnx"), "--dataset", "digits",
                     "--no-latency", "--json")
    assert evaluated["card"]["verified"] and evaluated["test_accuracy"] == test_accuracy


@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_evaluate_an_old_export(v01: Path, capsys: pytest.CaptureFixture[str],
                                artifact: str) -> None:
    """Files exported by v0.1 still load, match their model card and score what it says."""
    folder = v01 / STUDY_DIR / "export" / str(META["export_trial"])
    card = json.loads((folder / "model_card.json").read_text())
    out = _cli(capsys, "evaluate", str(folder / artifact), "--dataset", "digits",
               "--no-latency", "--json")
    assert out["card"]["verified"], out["card"]
    assert out["test_accuracy"] == card["metrics"]["test"]["accuracy"]
    assert out["val_accuracy"] == card["metrics"]["val"]["accuracy"]
    assert "warning" not in out  # same data split as the card's


def test_export_without_kept_weights_trains_from_the_recorded_teacher(
        v01: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A trial off the front has no kept weights: export trains it again with the recorded
    recipe, the study's --epochs override and the teacher path the search recorded."""
    number = META["retrain_trial"]
    assert not (v01 / STUDY_DIR / "students" / str(number)).exists()
    out = _cli(capsys, "export", STUDY_DIR, "--trial", str(number), "--formats", "pt",
               "--json")
    card = out["card"]
    assert card["provenance"]["weights"]["how"] == "retrained"
    assert card["provenance"]["weights"]["epochs"] == 2  # the search's --epochs 2
    _assert_same_architecture(card, V01_TRIALS[number])
    assert card["hyperparameters"]["recipe"] == V01_TRIALS[number]["recipe"]
    assert card["verification"]["pt"]["passed"]


def test_resume_adds_only_the_extra_trials(v01: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    db = v01 / STUDY_DIR / "study.db"
    budget = META["budget"]
    before = _trials(db)
    assert sum(state in FINISHED for state, _ in before.values()) == budget
    # the very command that made the study: nothing left to do, nothing changes
    out = _cli(capsys, *META["search_args"], "--budget", str(budget), "--json")
    assert out["status"] == "already_finished" and out["finished_trials"] == budget
    assert _trials(db) == before
    # a larger budget runs exactly the missing trials and keeps every old one as it was
    out = _cli(capsys, *META["search_args"], "--budget", str(budget + 2), "--json")
    assert out["status"] == "finished" and out["finished_trials"] == budget + 2
    after = _trials(db)
    assert {n: after[n] for n in before} == before
    new = sorted(set(after) - set(before))
    assert new == [max(before) + 1, max(before) + 2]
    assert all(after[n][0] in FINISHED for n in new)
    front = {r["trial"] for r in out["pareto"]}
    assert front and front <= set(after)
    for n in front & set(before):  # old members still on the front keep their weights
        assert (v01 / STUDY_DIR / "students" / str(n) / "student.pt").is_file(), n
    assert set(_rows(v01 / STUDY_DIR / "trials.csv")) == set(after)
