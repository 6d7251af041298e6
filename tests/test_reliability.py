"""Faults injected into real runs: signals, broken trials, full or unwritable disks.

Each test injects one fault and then checks the study on disk: finished trials kept, nothing
left RUNNING, no half-written file in place, and the same command resumes. Signals are sent to
this very process from inside the run (a forward hook, a patched file write), so they land at
a known point; one test sends SIGTERM to a real ``autokd search`` process. tests/conftest.py makes SIGINT raise
KeyboardInterrupt during each test even when pytest was started with SIGINT ignored.

Covered elsewhere, not repeated here: SIGKILL of a single-process search, then resume
(tests/test_search.py::test_sigkill_then_resume_loses_nothing); Ctrl-C of a real search
process (test_search.py::test_ctrl_c_keeps_finished_trials_and_says_how_to_resume); every
early trial failing (test_search.py::test_all_failing_trials_stop_with_reason); a killed worker
and a database outage mid-search (tests/test_distributed.py).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

import optuna
import pandas as pd
import pytest
import torch
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from autokd import teachers, train
from autokd.cli import main
from autokd.config import CostConfig, TrainConfig
from autokd.data import load_data
from autokd.distill import KDConfig
from autokd.export import check_card
from autokd.pipeline import run_distillation
from autokd.record import TrialRecord, count_done
from autokd.report import build_report
from autokd.study import StudyPaths, storage_url
from tests._helpers import count_complete

SPACE = """
family: cnn
architecture:
  depth: {int: [1, 2]}
  widths: {choice: [4, 8]}
distillation:
  temperature: {float: [2.0, 6.0]}
  alpha: {float: [0.5, 1.0]}
training:
  lr: 0.01
  epochs: 2
"""
SIGNALS = [pytest.param(signal.SIGINT, 130, "interrupted", id="SIGINT"),
           pytest.param(signal.SIGTERM, 143, "terminated (SIGTERM)", id="SIGTERM")]


# -- shared pieces -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A quickly trained digits teacher and a tiny space (no default-teacher training)."""
    root = tmp_path_factory.mktemp("reliability")
    data = load_data("digits")
    run = run_distillation(data, None, "cnn", {"depth": 1, "widths": [16]},
                           KDConfig(soft_loss="none", alpha=0.0), TrainConfig(epochs=3),
                           CostConfig(latency=False))
    teacher = teachers.save_checkpoint(run.model, root / "teacher.pt", data=data.describe())
    (root / "space.yaml").write_text(SPACE)
    return {"teacher": teacher, "space": root / "space.yaml"}


def search_argv(files: dict[str, Path], results: Path, budget: int = 3, *extra: str,
                teacher: bool = True) -> list[str]:
    argv = ["search", "--strategy", "optuna", "--space", str(files["space"]), "--budget",
            str(budget), "--name", "r",
            "--results", str(results), "--no-latency", "--device", "cpu", *extra]
    return argv + (["--teacher", str(files["teacher"])] if teacher else [])


def open_r(results: Path) -> optuna.Study:
    return optuna.load_study(study_name="r", storage=f"sqlite:///{results / 'r' / 'study.db'}")


def leftovers(root: Path) -> list[str]:
    """Temp files and staging folders that an interrupted write left behind."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith(".tmp") or ".tmp-" in p.name or ".old-" in p.name)


def enqueue(results: Path, params: list[dict[str, Any]]) -> None:
    """Create study ``r`` with these candidates queued, so each trial number is known."""
    (results / "r").mkdir(parents=True)
    study = optuna.create_study(study_name="r", directions=["maximize", "minimize"],
                                storage=f"sqlite:///{results / 'r' / 'study.db'}")
    for p in params:
        study.enqueue_trial({"widths": 4, "temperature": 4.0, "alpha": 0.9, **p})


def patch_build(monkeypatch: pytest.MonkeyPatch,
                faults: dict[int, Callable[[torch.nn.Module], None]],
                unbuildable: int | None = None) -> None:
    """Apply ``faults[n]`` to the student of trial n (its seed is the trial number).

    Trial ``unbuildable`` asks the family for 13 stages, which it refuses to build (a space
    cannot say so any more: the parser checks its ranges against the family's limits).
    """
    from autokd import objective

    real = objective.build_seeded

    def build(family: str, spec: dict[str, Any], data: Any, seed: int) -> torch.nn.Module:
        spec = {**spec, "depth": 13} if seed == unbuildable else spec
        model = real(family, spec, data, seed)
        if seed in faults:
            faults[seed](model)
        return model

    monkeypatch.setattr(objective, "build_seeded", build)


def on_training_forward(action: Callable[[], Any], at_call: int = 3) -> Callable[..., None]:
    """A fault that runs ``action`` at the ``at_call``-th training forward (not cost probes)."""

    def install(model: torch.nn.Module) -> None:
        calls = {"n": 0}

        def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> Any:
            if not module.training:
                return None
            calls["n"] += 1
            return action() if calls["n"] >= at_call else None

        model.register_forward_hook(hook)

    return install


def send(sig: int) -> Callable[[], None]:
    return lambda: os.kill(os.getpid(), sig)


# -- signals during a trial ------------------------------------------------------------------
@pytest.mark.parametrize("sig, code, word", SIGNALS)
def test_signal_mid_trial_keeps_finished_trials_and_resumes(
        sig: int, code: int, word: str, files: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    argv = search_argv(files, results, 3, "--epochs", "3", "--no-early-stop")
    enqueue(results, [{"depth": 1}, {"depth": 2}, {"depth": 1, "widths": 8}])
    handler = signal.getsignal(signal.SIGTERM)
    with monkeypatch.context() as mp:
        patch_build(mp, {1: on_training_forward(send(sig))})
        assert main(argv) == code
    err = capsys.readouterr().err
    assert f"autokd: {word}; everything finished so far is saved" in err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGTERM) == handler  # main() restores what it replaced
    before = open_r(results).trials
    assert [t.state for t in before[:2]] == [TrialState.COMPLETE, TrialState.FAIL]
    assert TrialRecord.of(before[1]).get("fail_reason") == "interrupted"
    assert not [t for t in before if t.state == TrialState.RUNNING]
    assert (results / "r" / "trials.csv").exists() and leftovers(results) == []
    assert main(argv) == 0  # the same command resumes
    after = open_r(results)
    assert count_done(after) == 3 and after.trials[0].values == before[0].values
    retries = [t for t in after.trials if TrialRecord.of(t).get("retry_of") == 1]
    assert len(retries) == 1 and retries[0].params == before[1].params
    assert retries[0].state == TrialState.COMPLETE


@pytest.mark.slow
def test_sigterm_to_a_real_search_process(files: dict[str, Path], tmp_path: Path) -> None:
    """The real signal path: kill(1) / systemd / Kubernetes send SIGTERM, then wait."""
    results = tmp_path / "results"
    argv = search_argv(files, results, 3, "--epochs", "100", "--no-early-stop")
    cmd = [sys.executable, "-m", "autokd", *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while count_complete(results / "r" / "study.db") < 1 and proc.poll() is None:
        assert time.time() < deadline, "no trial finished in time"
        time.sleep(0.1)
    time.sleep(0.2)  # the next trial is training now (each takes seconds)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    study = open_r(results)
    assert count_done(study) >= 1
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert {TrialRecord.of(t).get("fail_reason") for t in study.trials
            if t.state == TrialState.FAIL} <= {"interrupted"}
    assert leftovers(results) == []


# -- signals while the default teacher is trained, saved or copied ---------------------------
def _quick_default_teacher(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """The default teacher, trained for 2 epochs in an empty cache (the real one takes 30)."""
    monkeypatch.setenv("AUTOKD_CACHE", str(cache))
    monkeypatch.setattr(teachers, "_OUTPUT_CACHE", {})
    real = teachers.default_teacher_spec

    def quick(data: Any, family: str | None = None) -> tuple[str, dict[str, Any], TrainConfig]:
        family, spec, cfg = real(data, family)
        cfg.epochs = 2
        return family, spec, cfg

    monkeypatch.setattr(teachers, "default_teacher_spec", quick)


def _interrupt_training(mp: pytest.MonkeyPatch, sig: int) -> None:
    real = teachers.distill

    def distill(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        on_training_forward(send(sig))(model)
        return real(model, *args, **kwargs)

    mp.setattr(teachers, "distill", distill)


def _interrupt_saving(mp: pytest.MonkeyPatch, sig: int) -> None:
    real = torch.save

    def save(obj: Any, path: Any, *args: Any, **kwargs: Any) -> None:
        real(obj, path, *args, **kwargs)
        with open(path, "r+b") as fh:  # the process dies half-way through the write
            fh.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), sig)

    mp.setattr(torch, "save", save)


def _interrupt_copying(mp: pytest.MonkeyPatch, sig: int) -> None:
    def copy(src: Any, dst: Any) -> None:
        Path(dst).write_bytes(Path(src).read_bytes()[:1000])
        os.kill(os.getpid(), sig)

    mp.setattr(shutil, "copyfile", copy)


@pytest.mark.parametrize("sig, code, word", SIGNALS)
@pytest.mark.parametrize("interrupt", [_interrupt_training, _interrupt_saving,
                                       _interrupt_copying], ids=["training", "saving", "copying"])
def test_signal_around_the_default_teacher_leaves_no_half_teacher(
        interrupt: Callable[[pytest.MonkeyPatch, int], None], sig: int, code: int, word: str,
        files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    cache, results = tmp_path / "cache", tmp_path / "results"
    _quick_default_teacher(monkeypatch, cache)
    argv = search_argv(files, results, 1, "--epochs", "2", teacher=False)
    with monkeypatch.context() as mp:
        interrupt(mp, sig)
        assert main(argv) == code
    err = capsys.readouterr().err
    assert f"autokd: {word};" in err and "Traceback" not in err
    cached = sorted((cache / "teachers").glob("*")) if (cache / "teachers").exists() else []
    local = results / "r" / "teacher.pt"
    if interrupt is _interrupt_copying:  # the cache holds the finished teacher, whole
        assert len(cached) == 1 and teachers.load_checkpoint(cached[0])
    else:
        assert cached == []
    assert not local.exists() and leftovers(tmp_path) == []
    assert main(argv) == 0  # the rerun trains (or reuses) the teacher and searches
    cached = sorted((cache / "teachers").glob("*"))
    assert len(cached) == 1 and local.read_bytes() == cached[0].read_bytes()
    assert count_done(open_r(results)) == 1


# -- signals while writing the report or an export -------------------------------------------
TEACHER = {"name": "teacher.pt", "hash": "t0", "val_accuracy": 0.98, "test_accuracy": 0.96,
           "params": 100_000, "flops": 1_000_000, "bytes": 400_000, "latency_ms": 1.0,
           "latency_ms_batch": 8.0}
REPORT_FILES = ["report.html", "report.md", "pareto.png", "trials.csv", "pareto.csv"]


def synthetic_study(root: Path) -> StudyPaths:
    """A finished study written as the trial-record contract says (no training needed)."""
    paths = StudyPaths(root / "syn")
    paths.root.mkdir(parents=True)
    study = optuna.create_study(study_name="syn", storage=storage_url(paths, None),
                                directions=["maximize", "minimize"])
    attrs = {"objectives": ["accuracy", "flops"], "mode": "pareto", "teacher": TEACHER,
             "dataset": {"name": "digits", "sizes": {"train": 1167, "val": 270, "test": 360}},
             "dataset_hash": "abc", "teacher_hash": "t0", "limits": {},
             "budget": {"trials": 4, "seconds": None}, "settings": {"epochs": 2}}
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    for depth, (val, flops) in enumerate([(0.9, 2000), (0.95, 9000), (0.8, 500)], start=1):
        study.add_trial(optuna.trial.create_trial(
            values=[val, flops], params={"depth": depth},
            distributions={"depth": IntDistribution(1, 3)},
            user_attrs={"family": "cnn", "spec": {"depth": depth, "widths": [8] * depth},
                        "recipe": {"soft_loss": "kl", "alpha": 0.9}, "val_accuracy": val,
                        "test_accuracy": val - 0.01, "flops": flops, "params": flops // 2,
                        "bytes": flops * 2, "constraints": [0.0] * 4}))
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.FAIL, user_attrs={"fail_reason": "out of memory: CUDA out of memory"}))
    return paths


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> StudyPaths:
    paths = synthetic_study(tmp_path_factory.mktemp("report"))
    assert main(["report", str(paths.root), "--json"]) == 0
    return paths


def _copy(paths: StudyPaths, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    root = Path(shutil.copytree(paths.root, tmp_path / "syn"))
    return root, {name: (root / name).read_bytes() for name in REPORT_FILES}


def _whole(root: Path) -> None:
    """Every report file parses to its end (none was cut off)."""
    assert (root / "report.html").read_text().rstrip().endswith("</html>")
    assert (root / "pareto.png").read_bytes()[-8:] == b"IEND\xaeB`\x82"
    assert "Pareto" in (root / "report.md").read_text()
    assert len(pd.read_csv(root / "trials.csv")) == 4
    assert len(pd.read_csv(root / "pareto.csv")) == 3


@pytest.mark.parametrize("sig, code, word", SIGNALS)
@pytest.mark.parametrize("victim", REPORT_FILES)
def test_signal_while_writing_the_report_leaves_each_file_whole(
        victim: str, sig: int, code: int, word: str, reported: StudyPaths, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    root, before = _copy(reported, tmp_path)
    real = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).name == victim:  # the temp file is complete; the rename has not happened
            os.kill(os.getpid(), sig)
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["report", str(root), "--json"]) == code
    monkeypatch.setattr(os, "replace", real)
    assert "Traceback" not in capsys.readouterr().err
    assert (root / victim).read_bytes() == before[victim]  # the old file, untouched
    _whole(root)
    assert leftovers(root) == []


def test_sigint_ignored_by_the_parent_stays_ignored(
        reported: StudyPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started with SIGINT ignored (a background job, nohup), autokd does not stop on it."""
    root, _ = _copy(reported, tmp_path)
    real = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).name == "report.html":
            os.kill(os.getpid(), signal.SIGINT)
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the autouse fixture restores the handler
    assert main(["report", str(root), "--json"]) == 0
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    monkeypatch.setattr(os, "replace", real)
    _whole(root)


def test_disk_full_while_writing_the_report(reported: StudyPaths, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    root, before = _copy(reported, tmp_path)
    real_text, real_bytes = Path.write_text, Path.write_bytes

    def full(path: Path, data: Any, *args: Any, **kwargs: Any) -> NoReturn:
        """A disk that fills up after the first 100 bytes of any file."""
        (real_text if isinstance(data, str) else real_bytes)(path, data[:100], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    monkeypatch.setattr(Path, "write_bytes", full)
    code = main(["report", str(root)])
    monkeypatch.setattr(Path, "write_text", real_text)
    monkeypatch.setattr(Path, "write_bytes", real_bytes)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "No space left on device" in err[0]
    assert {n: (root / n).read_bytes() for n in REPORT_FILES} == before
    assert leftovers(root) == []


@pytest.fixture(scope="module")
def searched(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-trial search whose students are kept (for exports)."""
    results = tmp_path_factory.mktemp("searched")
    assert main(search_argv(files, results, 2, "--epochs", "2", "--json")) == 0
    return results / "r"


def test_sigterm_during_export_publishes_nothing_and_keeps_the_old_export(
        searched: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "exports" / "best"
    argv = ["export", str(searched), "--formats", "pt", "--out", str(out), "--json"]
    with monkeypatch.context() as mp:
        mp.setattr("autokd.export.verify_artifacts", lambda *a, **k: send(signal.SIGTERM)())
        assert main(argv) == 143
    assert not (tmp_path / "exports").exists()  # neither the export nor its staging folder
    assert main(argv) == 0
    card = (out / "model_card.json").read_bytes()
    with monkeypatch.context() as mp:
        mp.setattr("autokd.export.verify_artifacts", lambda *a, **k: send(signal.SIGTERM)())
        assert main(argv) == 143
    assert "Traceback" not in capsys.readouterr().err
    assert (out / "model_card.json").read_bytes() == card
    assert check_card(out / "student.pt")["verified"]  # the old export, intact
    assert leftovers(tmp_path) == []


# -- broken trials: the trial fails with its reason, the search goes on ----------------------
def _faults() -> dict[int, Callable[[torch.nn.Module], None]]:
    def nan_output(model: torch.nn.Module) -> None:
        model.register_forward_hook(lambda m, i, o: o * float("nan") if m.training else None)

    def exploding(model: torch.nn.Module) -> None:
        for p in model.parameters():
            p.register_hook(lambda g: g * float("inf"))

    def raises(message: str) -> Callable[[torch.nn.Module], None]:
        def fail() -> None:
            raise RuntimeError(message)

        return on_training_forward(fail, at_call=1)

    def inf_loss(model: torch.nn.Module) -> None:  # see _overflowing_loss
        model.autokd_test_inf_loss = True

    return {2: nan_output, 3: inf_loss, 4: exploding,
            5: raises("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8 GiB total)"),
            6: raises("Calculated padded input size per channel: (1 x 1). Kernel size: (3 x 3). "
                      "Kernel size can't be greater than actual input size")}


def _overflowing_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loss of a student marked ``autokd_test_inf_loss`` overflows to +inf (a distillation
    loss overflows to inf, where huge logits alone give nan)."""
    real = train.Trainer._batch_loss

    def batch_loss(self: train.Trainer, *args: Any) -> torch.Tensor:
        loss = real(self, *args)
        return loss * float("inf") if getattr(self.student, "autokd_test_inf_loss", 0) else loss

    monkeypatch.setattr(train.Trainer, "_batch_loss", batch_loss)


EXPECTED = {
    1: "invalid candidate: cnn depth must be an integer in 1..12, got 13",
    2: "training diverged: loss became nan at epoch 1 step 1",
    3: "training diverged: loss became inf at epoch 1 step 1",
    4: "training diverged: loss became nan at epoch 1 step 2",  # inf gradients -> nan weights
    5: "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8 GiB total)",
    6: "RuntimeError: Calculated padded input size per channel: (1 x 1).",
}


def test_broken_trials_fail_with_their_reason_and_the_report_groups_them(
        files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    enqueue(results, [{"depth": 1}, {"depth": 2}, *[{"depth": 1}] * 5, {"depth": 2}])
    patch_build(monkeypatch, _faults(), unbuildable=1)
    _overflowing_loss(monkeypatch)
    assert main(search_argv(files, results, 2, "--epochs", "2", "--no-early-stop")) == 0
    out = capsys.readouterr().out
    study = open_r(results)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, *[TrialState.FAIL] * 6, TrialState.COMPLETE]
    for number, reason in EXPECTED.items():
        assert TrialRecord.of(study.trials[number]).get("fail_reason").startswith(reason), number
        assert f"trial {number} fail: {reason}" in out  # the progress line says why
    assert count_done(study) == 2  # failures do not use up the budget
    data = build_report(study, StudyPaths(results / "r"))
    groups = {g["reason"]: g["trials"] for g in data["failures"]}
    diverged = "training diverged: loss became # at epoch # step # (try a lower learning rate)"
    assert groups.pop(diverged) == [2, 3, 4]  # nan or inf, at any step: one group
    assert sorted(groups.values()) == [[1], [5], [6]]
    md = (results / "r" / "report.md").read_text()
    assert "out of memory" in md and "invalid candidate" in md
    trials_csv = pd.read_csv(results / "r" / "trials.csv")
    assert trials_csv["fail_reason"].notna().sum() == 6


# -- full or unwritable disks ----------------------------------------------------------------
@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if a search gets as far as loading or training a teacher."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("work started before the results directory was checked")

    module = sys.modules["autokd.search"]  # ``autokd.search`` is also the API function
    monkeypatch.setattr(module, "load_teachers", refuse)
    monkeypatch.setattr(module, "default_teacher", refuse)


def _enospc(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


DISK_FAULTS = {
    "results under a file": (None, "cannot write to results directory .*: Not a directory"),
    "disk full on write": (("os.fsync", _enospc),
                           "cannot write to results directory .*: No space left on device"),
    "almost no space": (("shutil.disk_usage", lambda p: SimpleNamespace(free=2**20)),
                        "only 1 MiB free under .*; a search needs at least 50 MiB"),
}


@pytest.mark.parametrize("case", list(DISK_FAULTS))
def test_unusable_results_directory_is_one_error_before_any_work(
        case: str, files: dict[str, Path], tmp_path: Path, no_work: None,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import re

    patch, message = DISK_FAULTS[case]
    results = tmp_path / "results"
    if patch is None:
        (tmp_path / "file").write_text("x")  # root ignores chmod; a file can hold no folder
        results = tmp_path / "file" / "results"
    else:
        monkeypatch.setattr(patch[0], patch[1])
    assert main(search_argv(files, results)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not list(tmp_path.rglob("study.db")) and leftovers(tmp_path) == []


def test_disk_full_mid_search_fails_that_trial_only(files: dict[str, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    real = torch.save

    def save(obj: Any, path: Any, *args: Any, **kwargs: Any) -> None:
        where = Path(path).parent if isinstance(path, (str, os.PathLike)) else None  # or BytesIO
        if where is not None and (where.parent.name, where.name) == ("students", "1"):
            with open(path, "wb") as fh:
                fh.write(b"PK\x03\x04" + b"\0" * 100)  # the disk fills up mid-write
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert main(search_argv(files, results, 2, "--epochs", "2", "--json")) == 0
    study = open_r(results)
    assert study.trials[1].state == TrialState.FAIL
    assert "No space left on device" in TrialRecord.of(study.trials[1]).get("fail_reason")
    assert count_done(study) == 2 and len(study.trials) == 3
    assert not (results / "r" / "students" / "1").exists() and leftovers(results) == []
    for t in study.trials:  # every kept checkpoint loads
        if TrialRecord.of(t).get("checkpoint") is not None and (results / "r" / TrialRecord.of(t).get("checkpoint")).exists():
            teachers.load_checkpoint(results / "r" / TrialRecord.of(t).get("checkpoint"))
