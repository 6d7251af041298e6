"""Stopping a run and continuing it later gives the run that never stopped.

Why it matters: ``--strategy asha`` trains a candidate for a few epochs and resumes the promising
ones; a resumed run that differed from a straight one would rank candidates on a different
training than the one their full budget gives.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from autokd.config import TrainConfig
from autokd.data import DataSplits
from autokd.distill import KDConfig
from autokd.errors import ConfigError, TrainingError
from autokd.models import build_student
from autokd.teachers import Teacher, load_teacher, save_checkpoint
from autokd.train import Trainer, TrainResult, distill
from autokd.train_state import TrainState

# learned layer mapping (trainable logits and projections in the loss) and an exponential
# temperature schedule (reads training progress): both must survive a resume
RECIPE = KDConfig(hint_weight=1.0, hint_mapping="learned", t_schedule="exp", temperature=4.0)


@pytest.fixture(scope="module")
def teacher(digits: DataSplits, tmp_path_factory: pytest.TempPathFactory) -> Teacher:
    torch.manual_seed(0)
    model = build_student("cnn", {"depth": 2, "widths": [8, 16]}, digits.input_shape, 10)
    result = distill(model, digits, None, KDConfig(soft_loss="none", alpha=0.0),
                     TrainConfig(epochs=1, lr=1e-2))
    path = tmp_path_factory.mktemp("teachers") / "t.pt"
    return load_teacher(save_checkpoint(result.model, path), data=digits)


def _student(data: DataSplits, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_student("cnn", {"depth": 2, "widths": [4, 8]}, data.input_shape, 10)


def _fit(data: DataSplits, teacher: Teacher, epochs: int, resume: TrainState | None = None,
         init_seed: int = 0) -> TrainResult:
    cfg = TrainConfig(epochs=epochs, schedule_epochs=6, seed=3, batch_size=128, threads=1)
    trainer = Trainer(_student(data, init_seed), data, cfg, RECIPE, teacher)
    trainer.keep_state = True
    if resume is not None:
        trainer.resume(resume)
    return trainer.fit()


def _same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, value in a.items():
        torch.testing.assert_close(value, b[k], rtol=1e-6, atol=1e-7, msg=k)


def _same_optimizer(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for k, value in a["state"].items():
        _same_tensors(value, b["state"][k])


def test_resumed_run_equals_the_straight_run(digits: DataSplits, teacher: Teacher,
                                             tmp_path: Path) -> None:
    straight = _fit(digits, teacher, 4)
    part = _fit(digits, teacher, 2)
    path = part.state.save(tmp_path / "resume.pt")
    # another student initialisation: everything must come from the saved state
    resumed = _fit(digits, teacher, 4, TrainState.load(path), init_seed=7)
    a, b = straight.state, resumed.state
    steps = 4 * -(-len(digits.x_train) // 128)
    assert (a.epoch, a.global_step, a.best_epoch) == (b.epoch, b.global_step, b.best_epoch) \
        == (4, steps, straight.best_epoch)
    _same_tensors(a.student, b.student)
    _same_tensors(a.loss_fn, b.loss_fn)
    assert a.loss_fn  # the learned mapping really has parameters to carry over
    _same_optimizer(a.optimizer, b.optimizer)
    assert a.scheduler == b.scheduler
    assert torch.equal(a.generator, b.generator) and torch.equal(a.rng, b.rng)
    _same_tensors(straight.model.state_dict(), resumed.model.state_dict())  # best weights
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for h1, h2 in zip(straight.history, resumed.history):
        assert h1 == pytest.approx(h2, rel=1e-6)
    assert straight.val == pytest.approx(resumed.val, rel=1e-6)
    assert straight.test == pytest.approx(resumed.test, rel=1e-6)
    assert resumed.epochs_run == 4 and resumed.best_epoch == straight.best_epoch


def test_the_schedule_spans_schedule_epochs(digits: DataSplits, teacher: Teacher) -> None:
    """Two epochs of a 6-epoch schedule are not a 2-epoch run (the LR has not decayed)."""
    part = _fit(digits, teacher, 2)
    lr = part.state.optimizer["param_groups"][0]["lr"]
    assert 0.5 * TrainConfig().lr < lr < TrainConfig().lr
    short = Trainer(_student(digits, 0), digits, TrainConfig(epochs=2, seed=3, batch_size=128),
                    RECIPE, teacher)
    short.keep_state = True
    assert short.fit().state.optimizer["param_groups"][0]["lr"] < 1e-6


def test_resume_refuses_another_schedule_or_fewer_epochs(digits: DataSplits,
                                                         teacher: Teacher) -> None:
    state = _fit(digits, teacher, 2).state
    with pytest.raises(ConfigError, match="keeps its schedule of 6 epochs"):
        trainer = Trainer(_student(digits, 0), digits, TrainConfig(epochs=3, seed=3), RECIPE,
                          teacher)
        trainer.resume(state)
        trainer.fit()
    with pytest.raises(ConfigError, match="stopped after epoch 2"):
        _fit(digits, teacher, 1, state)


def test_resuming_with_no_epochs_left_returns_the_best_so_far(digits: DataSplits,
                                                              teacher: Teacher) -> None:
    part = _fit(digits, teacher, 2)
    again = _fit(digits, teacher, 2, part.state, init_seed=5)
    assert again.val == part.val and again.epochs_run == 2
    _same_tensors(again.model.state_dict(), part.model.state_dict())


def test_a_state_file_is_checked_and_never_runs_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something else"}, bad)
    with pytest.raises(TrainingError, match="not an autokd training state"):
        TrainState.load(bad)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "autokd-train-state-1", "x": nn.Linear(1, 1)}, evil)
    with pytest.raises(Exception, match="[Ww]eights only"):
        TrainState.load(evil)
