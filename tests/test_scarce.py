"""Scarce labels, unlabelled inputs and privileged features (``autokd.data.scarce``).

What must hold: shrinking touches only the labelled train split (stratified, deterministic);
unlabelled rows that also sit in val/test are dropped whatever their dtype; the unlabelled
batches reach the loss only through label-free terms; a teacher always reads every column
while the student reads its subset; every bad flag is one line, exit 2.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from autokd.cli import main
from autokd.config import CostConfig, DataConfig, TrainConfig, from_dict, to_dict
from autokd.data import load_data
from autokd.distill import DistillLoss, KDConfig
from autokd.distill.response import KLDivergenceLoss
from autokd.errors import DataError
from autokd.models import build_student
from autokd.pipeline import teacher_profile
from autokd.teachers import load_teacher, save_checkpoint
from autokd.train import Trainer

ROOT = Path(__file__).resolve().parents[1]


# -- shrinking the labelled split ------------------------------------------------------------
def test_train_fraction_and_shots_shrink_train_only() -> None:
    full = load_data("digits")
    few = load_data("digits", train_fraction=0.1)
    again = load_data("digits", train_fraction=0.1)
    shots = load_data("digits", shots_per_class=3)
    for split in ("val", "test"):  # the held-out samples are the full data's (normalised
        x, y = few.split(split)  # with the smaller train split's statistics)
        assert torch.allclose(few.denormalize(x), full.denormalize(full.split(split)[0]),
                              atol=1e-4)
        assert torch.equal(y, full.split(split)[1]) and torch.equal(shots.split(split)[1], y)
    assert few.split_hash == again.split_hash and torch.equal(few.x_train, again.x_train)
    assert len({full.split_hash, few.split_hash, shots.split_hash}) == 3
    counts = np.bincount(few.y_train.numpy(), minlength=10)
    full_counts = np.bincount(full.y_train.numpy(), minlength=10)
    assert np.all(np.abs(counts - 0.1 * full_counts) <= 0.5 + 1e-9)  # per class, rounded
    assert np.bincount(shots.y_train.numpy(), minlength=10).tolist() == [3] * 10
    assert few.describe()["labels"] == {"train_fraction": 0.1, "labelled": int(counts.sum()),
                                        "left_out": len(full.y_train) - int(counts.sum())}
    # a worker rebuilds the same data from the recorded DataConfig
    cfg = DataConfig(source="digits", train_fraction=0.1, unlabeled="rest")
    assert load_data(from_dict(DataConfig, to_dict(cfg))).split_hash == load_data(cfg).split_hash


# -- unlabelled inputs ---------------------------------------------------------------------
def _labelled_npz(root: Path) -> Path:
    """120 rows of whole numbers (so denormalised rows round back to the exact raw values)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, size=(120, 4)).astype(np.int64)
    np.savez(root / "lab.npz", X=x, y=np.arange(120) % 3)
    return root / "lab.npz"


def _raw(data: Any, split: str) -> np.ndarray:
    return data.denormalize(data.split(split)[0]).double().round().numpy()


def test_unlabeled_rows_in_val_or_test_are_dropped(tmp_path: Path) -> None:
    lab = load_data(f"npz:{_labelled_npz(tmp_path)}")
    fresh = np.full((10, 4), 100.0) + np.arange(10)[:, None]  # never in the labelled data
    pool = np.concatenate([_raw(lab, "test")[:5], _raw(lab, "val")[:2], fresh])
    np.savez(tmp_path / "pool.npz", X=pool.astype(np.float32))  # no y; another dtype
    data = load_data(f"npz:{tmp_path / 'lab.npz'}", unlabeled=f"npz:{tmp_path / 'pool.npz'}")
    assert data.describe()["unlabeled"] == {"source": f"npz:{tmp_path / 'pool.npz'}",
                                            "samples": 10, "leaked_dropped": 7}
    assert torch.allclose(data.denormalize(data.x_unlabeled).double(),
                          torch.from_numpy(fresh), atol=1e-4)  # normalised like train
    assert data.split_hash != lab.split_hash and data.sizes() == lab.sizes()
    np.savez(tmp_path / "leak.npz", X=pool[:7])
    with pytest.raises(DataError, match="every one of the 7 unlabelled samples"):
        load_data(f"npz:{tmp_path / 'lab.npz'}", unlabeled=f"npz:{tmp_path / 'leak.npz'}")
    np.savez(tmp_path / "wide.npz", X=np.ones((5, 6)))
    with pytest.raises(DataError, match=r"per-sample shape \(6,\)"):
        load_data(f"npz:{tmp_path / 'lab.npz'}", unlabeled=f"npz:{tmp_path / 'wide.npz'}")


def test_unlabeled_rest_is_what_shrinking_left_out() -> None:
    data = load_data("wine", train_fraction=0.5, unlabeled="rest")
    full = load_data("wine")
    assert len(data.x_unlabeled) + len(data.y_train) == len(full.y_train)
    assert data.describe()["unlabeled"]["leaked_dropped"] == 0


def test_unlabeled_loss_reads_no_labels() -> None:
    kd = KDConfig(alpha=0.7, temperature=3.0, importance="student_loss")
    loss = DistillLoss(kd, 4)
    torch.manual_seed(0)
    s, t = torch.randn(6, 4), torch.randn(6, 4)
    got = loss.unlabeled_total(s, t, progress=0.0)
    want = 0.7 * KLDivergenceLoss.compute(s, torch.softmax(t / 3.0, -1), 3.0).mean()
    assert torch.allclose(got, want)  # the hard term dropped, equal weights
    labelled = loss.total(s, torch.zeros(6, dtype=torch.long), t, progress=0.0)
    assert not torch.allclose(labelled, got)


class _CountingTeacher:
    """A teacher-like object: fixed random logits per split, recording what was asked."""

    module = None
    feature_taps: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.asked: list[str] = []

    def outputs(self, data: Any, split: str) -> torch.Tensor:
        self.asked.append(split)
        n = len(data.inputs(split))
        return torch.randn(1, n, data.num_classes, generator=torch.Generator().manual_seed(n))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("no augmentation here: cached outputs only")


def _trainer(data: Any, kd: KDConfig, epochs: int, horizon: int | None = None) -> Trainer:
    torch.manual_seed(0)
    student = build_student("cnn", {"depth": 1, "widths": [4]}, data.input_shape, 10)
    cfg = TrainConfig(epochs=epochs, batch_size=256, seed=0, threads=1,
                      schedule_epochs=horizon)
    return Trainer(student, data, cfg, kd, _CountingTeacher())


def test_trainer_steps_over_the_unlabelled_pool_and_resumes() -> None:
    data = load_data("digits", train_fraction=0.1, unlabeled="rest")
    n_l, n_u = len(data.y_train), len(data.x_unlabeled)
    kd_run = _trainer(data, KDConfig(), 2)
    kd_run.fit()
    assert "unlabeled" in kd_run.teacher.asked
    assert kd_run.global_step == 2 * math.ceil(n_u / 256)  # an epoch: the larger set
    scratch = _trainer(data, KDConfig().scratch(), 1)
    scratch.fit()
    assert scratch.global_step == math.ceil(n_l / 256)  # no teacher term: unlabelled unused
    first = _trainer(data, KDConfig(), 1, horizon=2)
    first.keep_state = True
    first.fit()
    resumed = _trainer(data, KDConfig(), 2)
    resumed.resume(first.state)
    resumed.fit()
    for a, b in zip(kd_run.student.state_dict().values(), resumed.student.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)  # stopping and resuming changes nothing


# -- privileged features -------------------------------------------------------------------
def test_student_columns_by_name_and_index() -> None:
    data = load_data("breast_cancer", student_features="mean radius, 3 ,worst area")
    full = data.for_teacher()
    assert data.input_shape == (3,) and full.input_shape == (30,)
    assert torch.equal(data.x_val, full.x_val[:, [0, 3, 23]])
    assert data.normalizer["mean"] == [full.normalizer["mean"][c] for c in (0, 3, 23)]
    assert data.describe()["student_features"]["names"] == ["mean radius", "mean area",
                                                            "worst area"]
    assert data.split_hash != full.split_hash
    for spec, message in (("mean radios", "did you mean 'mean radius'"),
                          ("30", "out of range"), ("1,1", "more than once"), ("0,,2", "empty")):
        with pytest.raises(DataError, match=message):
            load_data("breast_cancer", student_features=spec)
    with pytest.raises(DataError, match="needs tabular data"):
        load_data("digits", student_features="0")


def test_teacher_reads_every_column(tmp_path: Path) -> None:
    data = load_data("breast_cancer", student_features="0,1,2")
    torch.manual_seed(0)
    net = build_student("mlp", {"depth": 1, "widths": 8}, (30,), 2).eval()
    teacher = load_teacher(save_checkpoint(net, tmp_path / "t.pt"), data=data)  # checked
    with torch.no_grad():
        want = net(data.for_teacher().x_val)
    assert torch.allclose(teacher.outputs(data, "val")[0], want, atol=1e-6)
    assert teacher_profile(teacher, data, CostConfig(latency=False))["flops"] >= 30 * 8
    student = build_student("mlp", {"depth": 1, "widths": 4}, data.input_shape, 2)
    kd = KDConfig(terms={"kl": 0.5, "ce": 0.5, "fitnet": 0.5})  # cached taps: teacher's view
    result = Trainer(student, data, TrainConfig(epochs=1, threads=1), kd, teacher).fit()
    assert result.model.input_shape == (3,) and 0.0 <= result.test["accuracy"] <= 1.0


# -- the command line ----------------------------------------------------------------------
def _user_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and "Traceback" not in "\n".join(err), err
    assert len(err) == 1 or err[0].startswith("usage:"), err
    return err[-1]


@pytest.mark.parametrize(("flags", "message"), [
    (["--train-fraction", "0"], r"train_fraction must be in \(0, 1\]"),
    (["--train-fraction", "1.5"], r"train_fraction must be in \(0, 1\]"),
    (["--train-fraction", "0.5", "--shots-per-class", "3"], "mutually exclusive"),
    (["--shots-per-class", "0"], "positive integer"),
    (["--unlabeled", "rest"], "train_fraction or shots_per_class"),
    (["--unlabeled", "npz:/no/such/pool.npz"], "not found"),
    (["--student-features", "0"], "needs tabular data"),
    (["--dataset", "wine", "--student-features", "alcohol,nope"], "unknown column 'nope'"),
])
def test_bad_flags_are_one_line(capsys: pytest.CaptureFixture, flags: list[str],
                                message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(Trainer, "fit", refuse)
    line = _user_error(capsys, ["distill", "--epochs", "1", *flags])
    assert re.search(message, line), line


# -- the benchmark -------------------------------------------------------------------------
@pytest.mark.slow
def test_benchmark_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sys.modules.pop("_common", None)
    sys.modules.pop("scarce", None)
    import scarce

    out = scarce.main(["--quick"])
    assert set(out["unlabeled"]["digits"]["test_accuracy"]) == {"scratch", "kd", "kd_unlabeled"}
    assert out["unlabeled"]["digits"]["labelled"] + out["unlabeled"]["digits"]["unlabeled"] \
        + out["unlabeled"]["digits"]["unlabeled_leaked_dropped"] == 1167
    lupi = out["lupi"]["breast_cancer"]
    assert lupi["every_third"]["student_columns"]["indices"] == list(range(0, 30, 3))
    assert lupi["errors"]["student_columns"]["indices"] == list(range(10, 20))
    assert isinstance(out["digits_kd_unlabeled_minus_kd"], float)
    written = tmp_path / "autokd-bench-quick" / "scarce.json"
    assert written.exists()
