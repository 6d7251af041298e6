"""Per-epoch checkpoints: a search killed mid-trial continues that trial from its last epoch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from autokd.checkpoints import TrialCheckpoints, run_key
from autokd.config import TrainConfig
from autokd.distill import KDConfig
from autokd.record import TrialRecord
from autokd.search import SearchConfig, run_search
from autokd.study import find_study
from autokd.train import Trainer
from tests._helpers import TINY_SPACE, quick_teacher

KILL_AFTER = 3
EPOCHS = 6

# the search, in a child process that dies (os._exit: no clean-up, like SIGKILL) right after
# the checkpoint of epoch KILL_AFTER of its first trial was written
_KILLED = """
import os, sys
from autokd.checkpoints import TrialCheckpoints
from autokd.cli import main
real = TrialCheckpoints.saver
def saver(self, key):
    save = real(self, key)
    def wrapped(trainer, epoch, metrics):
        save(trainer, epoch, metrics)
        if epoch == {kill}:
            os._exit(9)
    return wrapped
TrialCheckpoints.saver = saver
sys.exit(main(sys.argv[1:]))
"""


def _args(tmp_path: Path, name: str, teacher: Path) -> list[str]:
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump({**TINY_SPACE, "training": {"lr": 0.005,
                                                                 "epochs": EPOCHS}}))
    return ["search", "--strategy", "optuna", "--space", str(space), "--budget", "1", "--name", name,
            "--results", str(tmp_path / "results"), "--teacher", str(teacher), "--no-latency",
            "--device", "cpu", "--checkpoint-every", "1e-9", "--metric", "balanced_accuracy"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_killed_trial_continues_from_its_checkpoint(tmp_path: Path) -> None:
    from autokd.cli import main

    teacher = quick_teacher(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    killed = subprocess.run([sys.executable, "-c", _KILLED.format(kill=KILL_AFTER),
                             *_args(tmp_path, "k", teacher)], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert killed.returncode == 9, killed.stderr
    saved = list((tmp_path / "results" / "k" / "artifacts" / "checkpoints").glob("*.pt"))
    assert len(saved) == 1  # the dead trial's state, after epoch KILL_AFTER

    assert main(_args(tmp_path, "k", teacher)) == 0  # resume: the trial is re-queued
    assert main(_args(tmp_path, "straight", teacher)) == 0  # the same search, never killed
    resumed, paths = find_study(str(tmp_path / "results" / "k"))
    straight, spaths = find_study(str(tmp_path / "results" / "straight"))
    dead, retry = resumed.trials
    assert dead.state.name == "FAIL" and retry.state.name == "COMPLETE"
    a, b = TrialRecord.of(retry), TrialRecord.of(straight.trials[0])
    assert a.retry_of == 0 and a.resumed_epoch == KILL_AFTER and a.epochs_run == EPOCHS
    assert a.seed == b.seed  # the retry is the same run as the killed trial
    for key in ("val_balanced_accuracy", "val_accuracy", "val_nll", "test_accuracy",
                "test_macro_f1", "best_epoch", "val_per_class_accuracy"):
        assert a.get(key) == b.get(key), key
    assert retry.values == straight.trials[0].values
    wa = _weights(paths.root / a.checkpoint)
    wb = _weights(spaths.root / b.checkpoint)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not any(saved[0].parent.iterdir())  # the completed trial deleted its checkpoint


def test_saver_is_throttled_and_resumes_exactly(tmp_path: Path, digits) -> None:
    from autokd.models import build_student

    def trainer(epochs: int) -> Trainer:
        torch.manual_seed(0)
        model = build_student("mlp", {"depth": 1, "widths": [16]}, digits.input_shape, digits.num_classes)
        return Trainer(model, digits, TrainConfig(epochs=epochs, schedule_epochs=4),
                       KDConfig().scratch())

    slow = TrialCheckpoints(str(tmp_path / "never"), every=3600.0)
    t = trainer(2)
    t.add_callback("on_epoch_end", slow.saver("k"))
    t.fit()
    assert slow.load("k") is None  # two fast epochs: nothing written
    store = TrialCheckpoints(str(tmp_path / "store"), every=1e-9)
    t = trainer(2)
    t.add_callback("on_epoch_end", store.saver("k"))
    t.fit()
    state = store.load("k")
    assert state is not None and state.epoch == 2
    t = trainer(4)
    t.resume(state)
    continued = t.fit()
    straight = trainer(4).fit()
    assert continued.history == straight.history
    assert all(torch.equal(a, b) for a, b in zip(continued.model.state_dict().values(),
                                                 straight.model.state_dict().values()))


def test_damaged_checkpoint_is_ignored_and_removed(tmp_path: Path) -> None:
    store = TrialCheckpoints(str(tmp_path), every=1.0)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "abc.pt").write_bytes(b"not a checkpoint")
    assert store.load("abc") is None
    store.remove("abc")
    store.remove("abc")  # already gone: not an error
    assert not (tmp_path / "checkpoints" / "abc.pt").exists()


def test_run_key_is_what_the_run_is() -> None:
    args = ("cnn", {"depth": 1}, {"alpha": 0.9}, {}, TrainConfig(seed=3), "split", "teacher")
    same = run_key(*args[:4], TrainConfig(seed=3, device="cuda", threads=4), *args[5:])
    assert run_key(*args) == same  # where it trains does not change what it is
    assert run_key(*args) != run_key(*args[:4], TrainConfig(seed=4), *args[5:])
    assert run_key(*args) != run_key(*args[:4], TrainConfig(seed=3, metric="macro_f1"),
                                     *args[5:])
    assert run_key(*args) != run_key(*args[:5], "other split", "teacher")


def test_checkpoint_every_validated(tmp_path: Path) -> None:
    from autokd.cli import main

    code = main(["search", "--checkpoint-every", "-1", "--results", str(tmp_path)])
    assert code == 2


def test_checkpoints_off_writes_nothing(tmp_path: Path, digits, digits_teacher) -> None:
    from autokd.config import CostConfig, SearchSettings

    settings = SearchSettings(cost=CostConfig(latency=False), checkpoint_every=0.0, epochs=2)
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    cfg = SearchConfig(space=str(space), budget=1, name="off", settings=settings,
                       results=str(tmp_path / "results"), device="cpu", strategy="optuna")
    run_search(cfg)
    assert not (tmp_path / "results" / "off" / "artifacts" / "checkpoints").exists()
