"""MNIST-1D end to end: 1-D CNN students train on it, MLPs take it flattened, the cnn1d space
loads and samples buildable students no costlier than the default teacher, a tiny search
completes, and the generated split is a pure function of its seed.

Data is generated small (``num_samples=300``) and the teacher is a 1-epoch cnn1d built here,
so the file runs in seconds without the real default teacher.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch

from autokd.config import CostConfig, DataConfig, TrainConfig
from autokd.cost import count_flops
from autokd.data import DataSplits, load_data
from autokd.distill import KDConfig
from autokd.distill.hooks import FeatureHooks
from autokd.models import build_student
from autokd.record import SearchRecord, TrialRecord, budget_used
from autokd.search import default_space_name, search
from autokd.space import SPACES_DIR, load_space
from autokd.teachers import default_teacher_spec, save_checkpoint
from autokd.train import distill

SCRATCH = KDConfig(soft_loss="none", alpha=0.0)
SMALL = DataConfig(source="mnist1d", num_samples=300)
NO_LATENCY = CostConfig(latency=False)


@pytest.fixture(scope="module")
def mnist1d() -> DataSplits:
    return load_data(SMALL)


@pytest.fixture(scope="module")
def teacher_path(mnist1d: DataSplits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 3-stage cnn1d trained one epoch: shaped like the default teacher, fast."""
    torch.manual_seed(0)
    model = build_student(
        "cnn1d",
        {"depth": 3, "widths": [8, 16, 16], "kernel": 5},
        mnist1d.input_shape,
        mnist1d.num_classes,
    )
    result = distill(model, mnist1d, None, SCRATCH, TrainConfig(epochs=1))
    return save_checkpoint(result.model, tmp_path_factory.mktemp("teacher") / "t.pt")


def test_cnn1d_builds_taps_and_trains_on_mnist1d(mnist1d: DataSplits) -> None:
    assert mnist1d.input_shape == (1, 40) and mnist1d.x_train.shape[1:] == (1, 40)
    torch.manual_seed(0)
    spec = {"depth": 3, "widths": [4, 8, 8], "kernel": 5, "pool": "max"}
    model = build_student("cnn1d", spec, mnist1d.input_shape, mnist1d.num_classes)
    with FeatureHooks(model, model.feature_taps) as hooks:
        model(mnist1d.x_train[:2])
        shapes = [tuple(f.shape) for f in hooks.features]
    assert shapes == [(2, 4, 20), (2, 8, 10), (2, 8, 5)]  # (B, C, L): 40 halves per stage
    before = [p.detach().clone() for p in model.parameters()]
    result = distill(model, mnist1d, None, SCRATCH, TrainConfig(epochs=2, lr=1e-2))
    assert 0.0 <= result.val["accuracy"] <= 1.0 and torch.isfinite(torch.tensor(result.val["nll"]))
    after = list(result.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_mlp_runs_on_flattened_signals(mnist1d: DataSplits) -> None:
    torch.manual_seed(0)
    model = build_student("mlp", {"depth": 1, "widths": 16}, mnist1d.input_shape, 10)
    assert model(mnist1d.x_val[:3]).shape == (3, 10)  # (B, 1, 40) -> (B, K)
    assert count_flops(model, mnist1d.input_shape) == 40 * 16 + 16 * 10  # MACs, by hand
    result = distill(model, mnist1d, None, SCRATCH, TrainConfig(epochs=2, lr=1e-2))
    assert result.epochs_run == 2 and 0.0 <= result.test["accuracy"] <= 1.0


def test_signal_data_defaults_to_cnn1d_space_and_teacher(mnist1d: DataSplits) -> None:
    assert default_space_name(mnist1d) == "cnn1d"
    family, spec, cfg = default_teacher_spec(mnist1d)
    assert family == "cnn1d" and spec["depth"] == 3 and cfg.epochs >= 1


def test_cnn1d_space_loads_samples_and_stays_below_the_teacher(mnist1d: DataSplits) -> None:
    text = (SPACES_DIR / "cnn1d.yaml").read_text()
    assert text.startswith("# ") and "Covers:" in text  # the comment block says what it covers
    space = load_space("cnn1d")
    assert space.family == "cnn1d"
    assert set(space.architecture_choices()) >= {
        "depth",
        "kernel",
        "pool",
        "batch_norm",
        "activation",
        "widths_0",
    }
    t_family, t_spec, _ = default_teacher_spec(mnist1d)
    teacher_flops = count_flops(build_student(t_family, t_spec, (1, 40), 10), (1, 40))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        cand = space.sample(study.ask())
        cand.kd.validate()
        model = build_student(cand.family, cand.spec, (1, 40), 10)
        assert model(torch.randn(2, 1, 40)).shape == (2, 10)
        assert count_flops(model, (1, 40)) < teacher_flops
    widest = {"depth": 4, "widths": 64, "kernel": 9, "pool": "max"}  # the space's costliest
    assert count_flops(build_student("cnn1d", widest, (1, 40), 10), (1, 40)) < teacher_flops


def test_tiny_search_on_mnist1d(
    tmp_path: Path, teacher_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "cache"))
    study = search(
        "mnist1d",
        budget=2,
        epochs=2,
        num_samples=300,
        teacher=[str(teacher_path)],
        results=str(tmp_path),
        name="m1d",
        cost=NO_LATENCY,
        seed=0,
    )
    done = [t for t in study.trials if t.state.is_finished()]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    # the default strategy, asha: 2 epochs are rungs of 1 and 2, each rung half a training
    assert SearchRecord.of(study).strategy == "asha" and 2 <= budget_used(study) <= 2.5
    assert {TrialRecord.of(t).rung for t in done} <= {0, 1} and len(done) >= 3
    assert SearchRecord.of(study).family == "cnn1d"
    assert SearchRecord.of(study).dataset["sizes"]["val"] == load_data(SMALL).sizes()["val"]
    for t in done:
        assert TrialRecord.of(t).get("family") == "cnn1d"
        assert 0.0 <= TrialRecord.of(t).get("test_accuracy") <= 1.0  # recorded, never selected on
    assert len(pd.read_csv(tmp_path / "m1d" / "trials.csv")) == len(done)


def test_mlp_space_searches_flattened_signals(
    tmp_path: Path, teacher_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "cache"))
    study = search(
        "mnist1d",
        budget=2,
        epochs=1,
        num_samples=300,
        teacher=[str(teacher_path)],
        space="mlp",
        results=str(tmp_path),
        name="m1d-mlp",
        cost=NO_LATENCY,
        seed=1,
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2 and {TrialRecord.of(t).get("family") for t in done} == {"mlp"}


def test_split_is_deterministic_under_seed() -> None:
    a, b = load_data(SMALL), load_data(SMALL)
    assert a.split_hash == b.split_hash
    for split in ("train", "val", "test"):
        assert torch.equal(a.split(split)[0], b.split(split)[0])
        assert torch.equal(a.split(split)[1], b.split(split)[1])
    other = load_data(SMALL, seed=1)
    assert other.split_hash != a.split_hash
    assert not torch.equal(other.x_train, a.x_train)
    assert load_data(SMALL, num_samples=400).split_hash != a.split_hash
