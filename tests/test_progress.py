"""Progress of long steps: plain lines in a log or pipe, a live bar on a terminal, nothing
with ``--json`` or from the library on its own."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

from autokd.cli import main
from autokd.progress import ProgressMeter, epoch_callback, format_eta, showing

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^distill \(mlp\): (\d+)/3 epochs \(\d+%\) epoch \d+ val_acc [\d.]+ "
                  r"loss [\d.e+-]+ \| eta \d+m\d\ds$")


def test_plain_lines_carry_count_metrics_and_eta() -> None:
    out = io.StringIO()
    with showing(out, tty=False, interval_s=0), ProgressMeter(4, "teacher", "epochs") as bar:
        for epoch in range(1, 5):
            bar.update(1, epoch=epoch, val_acc=0.5 + epoch / 10)
    lines = out.getvalue().splitlines()
    assert lines[0] == "teacher: 1/4 epochs (25%) epoch 1 val_acc 0.6 | eta " + lines[0][-5:]
    assert all("\r" not in line for line in lines)
    assert len(lines) == 5 and lines[-1].startswith("teacher: 4/4 epochs (100%) epoch 4")
    assert "done in" in lines[-1]


def test_lines_are_throttled_to_the_interval() -> None:
    out = io.StringIO()
    with showing(out, tty=False, interval_s=3600), ProgressMeter(50, "outputs", "samples") as bar:
        for _ in range(50):
            bar.update(1)
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[-1]]  # closing only
    assert out.getvalue().startswith("outputs: 50/50 samples (100%) | done in")


def test_nothing_is_shown_outside_showing(capsys: pytest.CaptureFixture) -> None:
    with ProgressMeter(3, "quiet", "epochs") as bar:
        bar.update(3, loss=1.0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_a_failed_step_writes_no_closing_line() -> None:
    out = io.StringIO()
    with pytest.raises(RuntimeError), showing(out, tty=False, interval_s=3600), \
            ProgressMeter(3, "teacher", "epochs") as bar:
        bar.update(1)
        raise RuntimeError("boom")
    assert out.getvalue() == ""


def test_eta_follows_the_rate_so_far(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 110.0])  # created at t=100, asked 10 s later after 2 of 10 units
    monkeypatch.setattr("autokd.progress.time.perf_counter", lambda: next(clock))
    bar = ProgressMeter(10, "x")
    bar.done = 2
    assert bar.eta() == pytest.approx(40.0)
    assert format_eta(40.0) == "0m40s" and format_eta(3725) == "1h02m" and format_eta(None) == "-"


def test_epoch_callback_reports_epoch_accuracy_and_loss() -> None:
    bar = ProgressMeter(5, "x", "epochs")
    epoch_callback(bar)(None, 3, {"val_accuracy": 0.75, "train_loss": 0.5, "val_nll": 1.0})
    assert bar.done == 1 and bar.metrics == {"epoch": 3, "val_acc": 0.75, "loss": 0.5}


def test_a_terminal_gets_carriage_return_bar_updates() -> None:
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty_stream, showing(tty_stream), \
                ProgressMeter(2, "teacher", "epochs") as bar:
            bar.update(1, val_acc=0.5)
            bar.update(1, val_acc=0.75)
        text = _drain(master)
    finally:
        os.close(master)
        os.close(slave)
    assert text.count("\r") >= 2 and "[" + "#" * 24 + "]" in text
    assert text.endswith("done in 0m00s\x1b[K\r\n") and "val_acc 0.75" in text  # pty: \n->\r\n


def _drain(fd: int, timeout: float = 5.0) -> str:
    chunks = []
    while select.select([fd], [], [], timeout)[0]:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the other side closed
            break
        if not data:
            break
        chunks.append(data)
        timeout = 0.5
    return b"".join(chunks).decode(errors="replace")


# -- the CLI -----------------------------------------------------------------------------------
def test_distill_on_a_pipe_prints_a_line_per_epoch(capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   wine_teacher: Path) -> None:
    monkeypatch.setenv("AUTOKD_PROGRESS_INTERVAL", "0")
    assert main(["distill", "--dataset", "wine", "--teacher", str(wine_teacher),
                 "--student", "mlp:depth=1,widths=8", "--epochs", "3", "--device", "cpu"]) == 0
    err = capsys.readouterr().err.splitlines()
    epochs = [line for line in err if line.startswith("distill (mlp)")]
    assert [LINE.match(line).group(1) for line in epochs[:3]] == ["1", "2", "3"]
    assert "done in" in epochs[-1]


def test_json_output_has_no_progress(capsys: pytest.CaptureFixture,
                                     monkeypatch: pytest.MonkeyPatch, wine_teacher: Path) -> None:
    monkeypatch.setenv("AUTOKD_PROGRESS_INTERVAL", "0")
    assert main(["distill", "--dataset", "wine", "--teacher", str(wine_teacher),
                 "--student", "mlp:depth=1,widths=8", "--epochs", "2", "--device", "cpu",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["student"]["epochs_run"] == 2
    assert "epochs" not in captured.err and "eta" not in captured.err


def test_teacher_train_shows_a_bar_on_a_terminal(tmp_path: Path) -> None:
    """A real process with stderr on a pseudo-terminal: the bar is redrawn with ``\\r``."""
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autokd", "teacher", "train", "--dataset", "wine",
             "--epochs", "3", "--device", "cpu", "--out", str(tmp_path / "t.pt")],
            stdout=subprocess.PIPE, stderr=slave, env=env, cwd=tmp_path)
        os.close(slave)
        err = _drain(master, timeout=120)
        out, _ = proc.communicate(timeout=120)
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    assert re.search(r"\r\[#+-*\] teacher \(mlp\): 1/3 epochs .*val_acc", err), err
    assert "teacher (mlp): 3/3 epochs (100%)" in err and b"teacher saved" in out
