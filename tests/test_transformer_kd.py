"""Transformer KD end to end: the trainer hooks, enables and caches tap groups.

A tiny transformer (``tests/_toy_transformer.py``) plays student and teacher on padded token
data; the teacher is loaded the way a user's is (``module:function``, with ``--trust``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autokd.cli import build_parser, main
from autokd.cli._common import kd_config
from autokd.config import TrainConfig
from autokd.data import DataSplits, load_data
from autokd.distill import KDConfig
from autokd.distill.hooks import TapHooks, taps_enabled
from autokd.errors import ConfigError, SpaceError
from autokd.models import build_student
from autokd.teachers import Teacher, load_teacher, save_checkpoint
from autokd.train import Trainer
from tests._toy_transformer import PAD, ToyTransformer, token_data

GROUPS = {"hidden", "attention", "values", "embedding"}


def teacher() -> ToyTransformer:
    """Wider, deeper and with more heads than the student (12 wide, 3 heads, 3 layers)."""
    torch.manual_seed(1)
    return ToyTransformer(vocab=12, length=8, width=12, heads=3, depth=3, classes=2)


def features_only_teacher() -> ToyTransformer:
    """The same network exposing only its ``features`` taps (like a CNN teacher)."""
    model = teacher()
    model.tap_groups = {}
    return model


def _student() -> ToyTransformer:
    torch.manual_seed(0)
    return ToyTransformer(vocab=12, length=8, width=8, heads=2, depth=2, classes=2)


@pytest.fixture(scope="module")
def data() -> DataSplits:
    return token_data()


@pytest.fixture(scope="module")
def toy_teacher(data: DataSplits) -> Teacher:
    return load_teacher("tests.test_transformer_kd:teacher", trust=True, data=data)


CFG = TrainConfig(epochs=6, lr=1e-2, batch_size=16, seed=0)


@pytest.mark.parametrize("terms", [{"hidden_cos": 1.0}, {"tinybert_attn": 1.0},
                                   {"embed_mse": 1.0}, {"minilm": 1.0}, {"fitnet": 1.0}])
def test_training_on_a_term_decreases_it(data: DataSplits, toy_teacher: Teacher,
                                         terms: dict[str, float]) -> None:
    result = Trainer(_student(), data, CFG, KDConfig(terms=terms), toy_teacher).fit()
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("term", ["hidden_cos", "tinybert_attn"])
def test_learned_mapping_trains_its_weights(data: DataSplits, toy_teacher: Teacher,
                                            term: str) -> None:
    kd = KDConfig(terms={term: 1.0}, hint_mapping="learned")
    trainer = Trainer(_student(), data, TrainConfig(epochs=2, lr=1e-2, batch_size=16), kd,
                      toy_teacher)
    start = trainer.loss_fn.terms[term].logits.detach().clone()
    assert start.shape == (2, 3) and not start.any()
    trainer.fit()
    assert not torch.equal(trainer.loss_fn.terms[term].logits.detach(), start)


def test_enable_taps_is_on_while_training_and_off_after(data: DataSplits,
                                                        toy_teacher: Teacher) -> None:
    student = _student()
    kd = KDConfig(terms={"kl": 0.5, "tinybert_attn": 1.0, "minilm": 1.0})
    Trainer(student, data, TrainConfig(epochs=2, batch_size=32), kd, toy_teacher).fit()
    wanted = {"attention", "values"}
    # the shape probe, then each epoch: on, off
    assert student.enable_log == [wanted, set()] * 3
    assert toy_teacher.module.enable_log[-1] == set()
    assert not any(layer.probs for layer in student.layers)  # back on the fused path

    class Stop(Exception):
        pass

    def stop(*_: object) -> None:
        raise Stop

    student = _student()
    trainer = Trainer(student, data, TrainConfig(epochs=2, batch_size=32), kd, toy_teacher)
    trainer.add_callback("on_epoch_end", stop)
    with pytest.raises(Stop):
        trainer.fit()
    assert student.enable_log[-1] == set()  # switched off even when training is cut short


def test_batches_carry_the_padding_mask(data: DataSplits, toy_teacher: Teacher,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(_student(), data, TrainConfig(epochs=1, batch_size=32),
                      KDConfig(terms={"hidden_cos": 1.0}), toy_teacher)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = trainer.loss_fn.total

    def spy(*args: object, **kw: object) -> torch.Tensor:
        seen.append((kw["mask"], kw["student_taps"]["hidden"][0]))
        return real(*args, **kw)

    monkeypatch.setattr(trainer.loss_fn, "total", spy)
    trainer.fit()
    assert len(seen) == 3
    masks = torch.cat([m for m, _ in seen])
    assert masks.dtype == torch.bool and masks.shape == data.x_train.shape
    assert masks.sum() == (data.x_train != PAD).sum() and not masks.all()


def test_cached_teacher_taps_equal_the_live_teacher(data: DataSplits, toy_teacher: Teacher,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cached = toy_teacher.tap_outputs(data, "train", GROUPS)
    assert cached is not None and [len(cached[g]) for g in sorted(GROUPS)] == [3, 1, 3, 3]
    module = toy_teacher.module
    with TapHooks(module, toy_teacher.tap_groups, GROUPS) as hooks, \
            taps_enabled(module, GROUPS), torch.no_grad():
        module(data.x_train)
        live = hooks.taps
    for group in GROUPS:
        for c, t in zip(cached[group], live[group], strict=True):
            torch.testing.assert_close(c, t, rtol=1e-5, atol=1e-6)
    assert cached["attention"][0].shape == (len(data.x_train), 3, 8, 8)
    assert module.enable_log[-1] == set()

    kd = KDConfig(terms={"kl": 0.5, "hidden_cos": 1.0, "minilm": 1.0, "embed_mse": 1.0})

    def run() -> list[float]:
        result = Trainer(_student(), data, CFG, kd, toy_teacher).fit()
        return [h["train_loss"] for h in result.history]

    with_cache = run()
    monkeypatch.setenv("AUTOKD_FEATURE_CACHE_MB", "0")  # too small: the teacher runs per batch
    monkeypatch.setattr("autokd.teachers._FEATURE_CACHE", {})
    assert toy_teacher.tap_outputs(data, "train", {"hidden"}) is None
    assert run() == pytest.approx(with_cache, rel=1e-4)


def test_a_teacher_without_the_group_is_a_clear_error(data: DataSplits) -> None:
    flat = load_teacher("tests.test_transformer_kd:features_only_teacher", trust=True,
                        data=data)
    assert set(flat.tap_groups) == {"features"}
    with pytest.raises(ConfigError, match=r"teacher's 'hidden' taps.*tap groups: features"):
        Trainer(_student(), data, CFG, KDConfig(terms={"hidden_cos": 1.0}), flat)
    Trainer(_student(), data, CFG, KDConfig(terms={"fitnet": 1.0}), flat)  # features: fine


def test_cli_terms_reach_the_transformer_terms(tmp_path: Path, capsys) -> None:
    argv = ["distill", "--dataset", "digits", "--terms", "kl=0.9,ce=0.1,hidden_cos=1"]
    kd = kd_config(build_parser().parse_args(argv))
    assert kd.weights() == {"kl": 0.9, "ce": 0.1, "hidden_cos": 1.0}
    assert kd.tap_groups() == {"hidden"}
    digits = load_data("digits")
    cnn = build_student("cnn", {"depth": 1, "widths": [4]}, digits.input_shape, 10)
    path = save_checkpoint(cnn, tmp_path / "cnn.pt")
    code = main([*argv, "--teacher", str(path), "--student", "cnn:depth=1,widths=4",
                 "--epochs", "1", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'hidden' taps" in err[0], err


def test_a_space_searches_transformer_term_weights() -> None:
    import optuna

    from autokd.space import SearchSpace

    space = SearchSpace.from_dict({
        "family": "mlp", "architecture": {"depth": 1},
        "distillation": {"hint_mapping": {"choice": ["uniform", "learned"]},
                         "terms": {"kl": 0.9, "ce": 0.1, "hidden_cos": {"choice": [0.0, 1.0]},
                                   "minilm": {"float": [0.0, 2.0]}}},
    })
    cand = space.sample(optuna.trial.FixedTrial({"hint_mapping": "learned",
                                                 "terms.hidden_cos": 1.0, "terms.minilm": 0.0}))
    assert cand.kd.weights() == {"kl": 0.9, "ce": 0.1, "hidden_cos": 1.0}
    assert cand.kd.tap_groups() == {"hidden"}
    assert "hidden_cos=1.0:learned" in cand.kd.summary()
    with pytest.raises(SpaceError, match="did you mean 'minilm'"):
        SearchSpace.from_dict({"family": "mlp", "architecture": {"depth": 1},
                               "distillation": {"terms": {"minlm": 1.0}}})


def test_a_student_without_the_group_is_a_clear_error(data: DataSplits,
                                                      toy_teacher: Teacher) -> None:
    student = _student()
    del student.tap_groups["attention"]
    with pytest.raises(ConfigError, match=r"student's 'attention' taps.*tap groups: embedding"):
        Trainer(student, data, CFG, KDConfig(terms={"minilm": 1.0}), toy_teacher)
