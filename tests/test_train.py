"""The distillation loop: determinism, best-epoch selection, failure modes, callbacks, recipes.

Students and teachers are tiny and train for 2-3 epochs: these tests check the loop's
behaviour, not the accuracy it reaches.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from autokd import teachers
from autokd.config import TrainConfig
from autokd.data import DataSplits, load_data
from autokd.distill import KDConfig
from autokd.errors import ConfigError, TrainingError
from autokd.models import build_student
from autokd.teachers import Teacher, load_teacher, save_checkpoint
from autokd.train import Trainer, TrainResult, clip_gradients, distill, evaluate

SCRATCH = KDConfig(soft_loss="none", alpha=0.0)
FEATURE_RECIPES = {
    "hint-uniform": {"hint_weight": 1.0, "hint_mapping": "uniform"},
    "hint-bottom_up": {"hint_weight": 1.0, "hint_mapping": "bottom_up"},
    "hint-top_down": {"hint_weight": 1.0, "hint_mapping": "top_down"},
    "hint-learned": {"hint_weight": 1.0, "hint_mapping": "learned"},
    "rkd": {"relation": "rkd", "relation_weight": 1.0},
    "gram": {"relation": "gram", "relation_weight": 1.0},
    "attention": {"attention_weight": 1.0},
}


@pytest.fixture(scope="module")
def wine() -> DataSplits:
    return load_data("wine")


def _student(data: DataSplits, family: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    spec = {"depth": 2, "widths": [4, 8]} if family == "cnn" else {"depth": 2, "widths": [16, 8]}
    return build_student(family, spec, data.input_shape, data.num_classes)


def _train_teacher(data: DataSplits, family: str, spec: dict, path: Path) -> Teacher:
    """A small teacher shaped like the default (3 stages), trained for 2 epochs."""
    torch.manual_seed(0)
    model = build_student(family, spec, data.input_shape, data.num_classes)
    result = distill(model, data, None, SCRATCH, TrainConfig(epochs=2, lr=1e-2))
    return load_teacher(save_checkpoint(result.model, path), data=data)


@pytest.fixture(scope="module")
def cnn_teacher(digits: DataSplits, tmp_path_factory: pytest.TempPathFactory) -> Teacher:
    path = tmp_path_factory.mktemp("teachers") / "cnn.pt"
    return _train_teacher(digits, "cnn", {"depth": 3, "widths": [8, 16, 16]}, path)


@pytest.fixture(scope="module")
def mlp_teacher(wine: DataSplits, tmp_path_factory: pytest.TempPathFactory) -> Teacher:
    path = tmp_path_factory.mktemp("teachers") / "mlp.pt"
    return _train_teacher(wine, "mlp", {"depth": 3, "widths": [32, 32, 16]}, path)


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().flatten().float() for t in model.state_dict().values()])


# -- determinism and selection ---------------------------------------------------------------
def test_same_seed_same_run(digits: DataSplits, cnn_teacher: Teacher) -> None:
    cfg = TrainConfig(epochs=2, seed=3)
    runs = [distill(_student(digits, "cnn"), digits, cnn_teacher, KDConfig(), cfg) for _ in "ab"]
    assert runs[0].val == runs[1].val and runs[0].history == runs[1].history
    assert torch.equal(_flat(runs[0].model), _flat(runs[1].model))
    other = distill(_student(digits, "cnn"), digits, cnn_teacher, KDConfig(),
                    TrainConfig(epochs=2, seed=4))  # same init, other batch order
    assert not torch.equal(_flat(other.model), _flat(runs[0].model))


class _Blinded(nn.Module):
    """Wraps a student; once ``blind`` is set, evaluation sees constant logits (chance level)
    while training goes on normally, so later epochs *look* worse than they are."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.blind = inner, False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return torch.zeros_like(out) if self.blind and not self.training else out


def test_best_epoch_is_kept_not_the_last(digits: DataSplits) -> None:
    model = _Blinded(_student(digits, "mlp"))
    snapshots: dict[int, torch.Tensor] = {}

    def watch(trainer: Trainer, epoch: int, metrics: dict) -> None:
        snapshots[epoch] = _flat(trainer.student)
        model.blind = epoch >= 2  # epochs 3 and 4 are judged at chance level

    result = distill(model, digits, None, SCRATCH, TrainConfig(epochs=4, lr=1e-2),
                     callbacks={"on_epoch_end": [watch]})
    accs = [h["val_accuracy"] for h in result.history]
    assert max(accs[2:]) < 0.15 < max(accs[:2])  # blind epochs score class 0 share (0.1)
    assert result.best_epoch == 1 + accs.index(max(accs)) <= 2
    assert result.val["accuracy"] == max(accs)
    assert torch.equal(_flat(result.model), snapshots[result.best_epoch])
    assert not torch.equal(_flat(result.model), snapshots[4])  # not the last weights
    model.blind = False
    again = evaluate(result.model, digits.x_val, digits.y_val)
    assert again["accuracy"] == max(accs)


class _Breaks(nn.Module):
    """Wraps a student; from its ``at``-th training forward on, the output is ``value``."""

    def __init__(self, inner: nn.Module, at: int, value: float) -> None:
        super().__init__()
        self.inner, self.at, self.value, self.calls = inner, at, value, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        self.calls += self.training
        return out * self.value if self.training and self.calls >= self.at else out


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_loss_stops_with_a_clear_reason(wine: DataSplits, value: float) -> None:
    model = _Breaks(_student(wine, "mlp"), at=3, value=value)
    with pytest.raises(TrainingError, match=r"loss became (nan|inf) at epoch 1 step 3.*lower"):
        distill(model, wine, None, SCRATCH, TrainConfig(epochs=2, batch_size=16))
    assert model.calls == 3  # stopped at once, no further step


# -- callbacks -------------------------------------------------------------------------------
def test_callbacks_get_per_epoch_metrics(wine: DataSplits, mlp_teacher: Teacher) -> None:
    seen: list[tuple[int, dict]] = []
    ended: list[dict] = []
    trainer = Trainer(_student(wine, "mlp"), wine, TrainConfig(epochs=3), KDConfig(), mlp_teacher)
    trainer.add_callback("on_epoch_end", lambda t, e, m: seen.append((e, dict(m))))
    trainer.add_callback("on_train_end", lambda t, e, s: ended.append(s))
    result = trainer.fit()
    assert [e for e, _ in seen] == [1, 2, 3]
    for (_, metrics), row in zip(seen, result.history, strict=True):
        assert set(metrics) == {"val_accuracy", "val_nll", "val_kd_loss", "train_loss"}
        assert all(math.isfinite(v) for v in metrics.values())
        assert metrics.items() <= row.items()
    assert len(ended) == 1 and ended[0]["epochs_run"] == 3 and ended[0]["samples_per_second"] > 0
    with pytest.raises(ConfigError, match="on_epoch_end"):
        trainer.add_callback("on_batch_end", print)


class _Prune(Exception):
    pass


def test_raising_or_stopping_in_a_callback_ends_training(wine: DataSplits) -> None:
    epochs: list[int] = []

    def prune(trainer: Trainer, epoch: int, metrics: dict) -> None:
        epochs.append(epoch)
        if epoch == 2:
            raise _Prune

    with pytest.raises(_Prune):
        distill(_student(wine, "mlp"), wine, None, SCRATCH, TrainConfig(epochs=5),
                callbacks={"on_epoch_end": [prune]})
    assert epochs == [1, 2]

    def stop(trainer: Trainer, epoch: int, metrics: dict) -> None:
        trainer.stop_requested = epoch == 2

    result = distill(_student(wine, "mlp"), wine, None, SCRATCH, TrainConfig(epochs=5),
                     callbacks={"on_epoch_end": [stop]})
    assert result.epochs_run == 2 and len(result.history) == 2


# -- recipes ---------------------------------------------------------------------------------
def test_scratch_needs_no_teacher_but_kd_does(wine: DataSplits) -> None:
    result = distill(_student(wine, "mlp"), wine, None, SCRATCH, TrainConfig(epochs=2))
    assert isinstance(result, TrainResult) and "kd_loss" not in result.val
    assert result.val["accuracy"] > 0 and result.test.keys() == {
        "accuracy", "balanced_accuracy", "macro_f1", "per_class_accuracy", "nll"}
    for kd in (KDConfig(), KDConfig(soft_loss="none", alpha=0.0, hint_weight=1.0)):
        with pytest.raises(ConfigError, match="needs a teacher"):
            Trainer(_student(wine, "mlp"), wine, TrainConfig(epochs=1), kd, None)
    with pytest.raises(ConfigError, match="epochs"):
        Trainer(_student(wine, "mlp"), wine, TrainConfig(epochs=0), SCRATCH, None)


def test_scratch_with_a_teacher_still_reports_kd_loss(wine: DataSplits,
                                                      mlp_teacher: Teacher) -> None:
    result = distill(_student(wine, "mlp"), wine, mlp_teacher, SCRATCH, TrainConfig(epochs=1))
    assert result.val["kd_loss"] >= 0 and result.test["kd_loss"] >= 0


class _OutputsOnly:
    """A teacher with cached outputs but no network (like a scikit-learn estimator)."""

    def __init__(self) -> None:
        self.module: nn.Module | None = None
        self.feature_taps: list[str] = []

    def outputs(self, data: DataSplits, split: str) -> torch.Tensor:
        return torch.zeros(1, len(data.split(split)[1]), data.num_classes)


def test_feature_losses_need_a_network_teacher(wine: DataSplits) -> None:
    kd = KDConfig(hint_weight=1.0)
    with pytest.raises(ConfigError, match="feature taps"):
        Trainer(_student(wine, "mlp"), wine, TrainConfig(epochs=1), kd, _OutputsOnly())
    result = distill(_student(wine, "mlp"), wine, _OutputsOnly(), KDConfig(),
                     TrainConfig(epochs=1))
    assert result.val["kd_loss"] >= 0  # response KD works from outputs alone


@pytest.fixture(scope="module")
def response_only(digits: DataSplits, wine: DataSplits, cnn_teacher: Teacher,
                  mlp_teacher: Teacher) -> dict[str, torch.Tensor]:
    """Weights after plain response KD; a feature term must change them."""
    cfg = TrainConfig(epochs=2)
    cnn = distill(_student(digits, "cnn"), digits, cnn_teacher, KDConfig(), cfg)
    mlp = distill(_student(wine, "mlp"), wine, mlp_teacher, KDConfig(), cfg)
    return {"cnn": _flat(cnn.model), "mlp": _flat(mlp.model)}


@pytest.mark.parametrize("recipe", list(FEATURE_RECIPES))
@pytest.mark.parametrize("family", ["cnn", "mlp"])
def test_feature_kd_end_to_end(family: str, recipe: str, request: pytest.FixtureRequest,
                               response_only: dict[str, torch.Tensor]) -> None:
    data = request.getfixturevalue("digits" if family == "cnn" else "wine")
    teacher = request.getfixturevalue(f"{family}_teacher")
    kd = KDConfig(**FEATURE_RECIPES[recipe])
    if family == "mlp" and recipe == "attention":  # needs spatial maps; must fail up front
        with pytest.raises(ConfigError, match="attention"):
            Trainer(_student(data, family), data, TrainConfig(epochs=2), kd, teacher)
        return
    result = distill(_student(data, family), data, teacher, kd, TrainConfig(epochs=2))
    assert result.epochs_run == 2 and all(math.isfinite(h["train_loss"]) for h in result.history)
    assert math.isfinite(result.val["kd_loss"]) and 0 < result.val["accuracy"] <= 1
    assert not torch.equal(_flat(result.model), response_only[family])


def test_amp_flag_is_ignored_on_cpu(wine: DataSplits, mlp_teacher: Teacher) -> None:
    runs = [distill(_student(wine, "mlp"), wine, mlp_teacher, KDConfig(),
                    TrainConfig(epochs=2, amp=amp, device="cpu")) for amp in (True, False)]
    assert torch.equal(_flat(runs[0].model), _flat(runs[1].model))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="AMP runs only on CUDA")
def test_amp_feature_kd_on_cuda(digits: DataSplits, cnn_teacher: Teacher) -> None:
    kd = KDConfig(hint_weight=1.0, attention_weight=1.0)
    result = distill(_student(digits, "cnn"), digits, cnn_teacher, kd,
                     TrainConfig(epochs=2, device="cuda", amp=True))
    assert math.isfinite(result.val["kd_loss"]) and result.val["accuracy"] > 0.1


def test_evaluate_matches_a_hand_computation(wine: DataSplits) -> None:
    model = _student(wine, "mlp").eval()
    with torch.no_grad():
        logits = model(wine.x_test)
    teacher_logits = torch.randn(2, *logits.shape)
    out = evaluate(model, wine.x_test, wine.y_test, teacher_logits, temperature=2.0)
    acc = (logits.argmax(1) == wine.y_test).float().mean().item()
    nll = torch.nn.functional.cross_entropy(logits, wine.y_test).item()
    assert out["accuracy"] == pytest.approx(acc) and out["nll"] == pytest.approx(nll, rel=1e-5)
    assert out["kd_loss"] > 0 and not model.training


def test_teacher_outputs_are_computed_once_per_split(digits: DataSplits, cnn_teacher: Teacher,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(teachers, "_OUTPUT_CACHE", {})
    calls: list[str] = []
    real = Teacher._load_or_compute
    monkeypatch.setattr(Teacher, "_load_or_compute",
                        lambda self, d, split: calls.append(split) or real(self, d, split))
    distill(_student(digits, "cnn"), digits, cnn_teacher, KDConfig(), TrainConfig(epochs=2))
    assert sorted(calls) == ["test", "train", "val"]


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_clip_gradients_matches_torch(scale: float) -> None:
    torch.manual_seed(0)
    ours, ref = nn.Linear(6, 4), nn.Linear(6, 4)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(8, 6)
    for model in (ours, ref):
        (model(x) * scale).sum().backward()  # gradient norm ~ 20 * scale
    clip_gradients(list(ours.parameters()), 5.0)
    total = nn.utils.clip_grad_norm_(ref.parameters(), 5.0)
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ours.parameters()]))
    assert clipped.item() == pytest.approx(min(total.item(), 5.0), rel=1e-4)
    assert (total.item() > 5.0) == (scale == 1e3)  # both branches are exercised


def test_cached_teacher_features_match_running_the_teacher(digits: DataSplits,
                                                           cnn_teacher: Teacher,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    kd = KDConfig(hint_weight=1.0, hint_mapping="uniform", attention_weight=0.5)
    cfg = TrainConfig(epochs=2, seed=0)

    def run() -> list[float]:
        result = Trainer(_student(digits, "cnn"), digits, cfg, kd, cnn_teacher).fit()
        return [h["train_loss"] for h in result.history]

    cached = run()
    assert cnn_teacher.feature_outputs(digits, "train") is not None
    monkeypatch.setenv("AUTOKD_FEATURE_CACHE_MB", "0")  # too small: the teacher runs per batch
    monkeypatch.setattr("autokd.teachers._FEATURE_CACHE", {})
    assert cnn_teacher.feature_outputs(digits, "train") is None
    on_the_fly = run()
    assert on_the_fly == pytest.approx(cached, rel=1e-4)
