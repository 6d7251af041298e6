"""Teacher-layer initialisation (``init: teacher``): the right teacher layers are copied exactly,
mismatches raise ``InitError`` with the reason, and a search records such a candidate
infeasible before training it."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from torch import nn

from autokd.config import CostConfig, SearchSettings, TrainConfig
from autokd.data.schema import TokenInfo
from autokd.distill import KDConfig
from autokd.distill.init import layer_map
from autokd.errors import ConfigError, InitError
from autokd.models import build_student
from autokd.objective import Objective
from autokd.pipeline import init_student, run_distillation
from autokd.record import TrialRecord
from autokd.space import SearchSpace
from autokd.teachers import Teacher, _Member, save_checkpoint
from tests._tokens import LENGTH, PAD, VOCAB, token_splits

K = 2
TOKENS = TokenInfo(vocab_size=VOCAB, pad_id=PAD, max_length=LENGTH, tokenizer="hand:40")
WIDE = {"hidden": 16, "heads": 2, "mlp_ratio": 2}


def _transformer(layers: int, shape: tuple[int, ...] = (LENGTH,), seed: int = 0,
                 classes: int = K, **spec: Any) -> nn.Module:
    """A transformer whose every weight (LayerNorms too) is moved off its initial value, as
    training would, so a copy that was skipped shows."""
    torch.manual_seed(seed)
    tokens = TOKENS if shape == (LENGTH,) else None
    model = build_student("transformer", {**WIDE, "layers": layers, **spec}, shape, classes,
                          tokens=tokens).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _teacher(module: nn.Module) -> Teacher:
    return Teacher([_Member("t", "autokd", "hash", module=module)])


@pytest.mark.parametrize(("mapping", "picks"), [
    ("uniform", [1, 3, 5]), ("learned", [1, 3, 5]), ("bottom_up", [0, 1, 2]),
    ("top_down", [3, 4, 5]),
])
def test_student_layers_are_exact_copies_of_the_mapped_teacher_layers(
        mapping: str, picks: list[int]) -> None:
    teacher, student = _transformer(6, seed=1), _transformer(3, seed=2)
    assert not _same(student.blocks[0], teacher.blocks[picks[0]])
    init_student(student, KDConfig(init="teacher", hint_mapping=mapping), _teacher(teacher))
    # uniform, 1-indexed: l_S -> floor(l_S * L_T / L_S) = 2, 4, 6 (every other layer)
    assert layer_map(3, 6, mapping) == picks
    for block, pick in zip(student.blocks, picks, strict=True):
        assert _same(block, teacher.blocks[pick])
    for name in ("embed", "norm", "head"):
        assert _same(getattr(student, name), getattr(teacher, name)), name


def test_a_student_as_deep_as_its_teacher_becomes_the_teacher() -> None:
    teacher, student = _transformer(2, (1, 40), seed=1, patch=5), _transformer(2, (1, 40),
                                                                             seed=2, patch=5)
    x = torch.randn(3, 1, 40)
    assert not torch.allclose(student(x), teacher(x))
    init_student(student, KDConfig(init="teacher"), _teacher(teacher))
    assert torch.equal(student(x), teacher(x))


def test_a_deeper_student_repeats_teacher_layers_and_other_classes_keep_their_head() -> None:
    teacher = _transformer(2, seed=1)
    torch.manual_seed(3)
    student = build_student("transformer", {**WIDE, "layers": 4}, (LENGTH,), 5, tokens=TOKENS)
    head = student.head.weight.clone()
    init_student(student, KDConfig(init="teacher"), _teacher(teacher))
    assert layer_map(4, 2, "uniform") == [0, 0, 0, 1]
    for block, pick in zip(student.blocks, [0, 0, 0, 1], strict=True):
        assert _same(block, teacher.blocks[pick])
    assert torch.equal(student.head.weight, head)  # 5 classes vs 2: left as initialised


def test_random_init_copies_nothing() -> None:
    teacher, student = _transformer(2, seed=1), _transformer(2, seed=2)
    init_student(student, KDConfig(), _teacher(teacher))
    assert not _same(student.embed, teacher.embed)


@pytest.mark.parametrize(("student_spec", "shape", "match"), [
    ({"hidden": 24}, (LENGTH,), r"hidden differs \(student 24, teacher 16\)"),
    ({"heads": 4}, (LENGTH,), "heads differs"),
    ({"mlp_ratio": 4}, (LENGTH,), "mlp_ratio differs"),
    ({}, (1, 40), r"input kind differs \(student signal, teacher tokens\)"),
])
def test_mismatched_students_raise_init_error(student_spec: dict[str, Any],
                                              shape: tuple[int, ...], match: str) -> None:
    student = _transformer(2, shape, **student_spec)
    with pytest.raises(InitError, match=match) as info:
        init_student(student, KDConfig(init="teacher"), _teacher(_transformer(4)))
    assert isinstance(info.value, ConfigError) and "\n" not in str(info.value)


def test_patch_vocabulary_and_family_mismatches_raise_init_error() -> None:
    kd = KDConfig(init="teacher")
    with pytest.raises(InitError, match=r"patch differs \(student 4, teacher 5\)"):
        init_student(_transformer(1, (1, 40), patch=4), kd, _teacher(_transformer(2, (1, 40),
                                                                                 patch=5)))
    other = TokenInfo(vocab_size=VOCAB + 1, pad_id=PAD, max_length=LENGTH, tokenizer="x")
    bigger = build_student("transformer", {**WIDE, "layers": 2}, (LENGTH,), K, tokens=other)
    with pytest.raises(InitError, match="vocab_size differs"):
        init_student(_transformer(1), kd, _teacher(bigger))
    cnn = build_student("cnn1d", {"depth": 2}, (1, 40), K)
    with pytest.raises(InitError, match="from a cnn1d teacher"):
        init_student(_transformer(1, (1, 40)), kd, _teacher(cnn))
    with warnings.catch_warnings():  # torch.jit is deprecated; users still bring such files
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(_transformer(2, (1, 40)), torch.randn(2, 1, 40))
    with pytest.raises(InitError, match="from a TopLevelTracedModule teacher"):
        init_student(_transformer(1, (1, 40)), kd, _teacher(traced))
    with pytest.raises(InitError, match="family cnn1d cannot be initialised from a teacher"):
        init_student(cnn, kd, _teacher(_transformer(2, (1, 40))))
    with pytest.raises(InitError, match="needs a teacher that is a network"):
        init_student(_transformer(1), kd, None)


def test_the_recipe_validates_and_labels_init() -> None:
    with pytest.raises(ConfigError, match="unknown init 'pretrained'; known: random, teacher"):
        KDConfig(init="pretrained").validate()
    assert "init=teacher" in KDConfig(init="teacher").summary()
    assert "init" not in KDConfig().summary()
    assert KDConfig(init="teacher").scratch().init == "random"


def test_run_distillation_initialises_the_student_it_builds() -> None:
    data = token_splits()
    teacher = _transformer(2, seed=1)
    kd = KDConfig(init="teacher", soft_loss="none", alpha=0.0)
    run = run_distillation(data, _teacher(teacher), "transformer", {**WIDE, "layers": 2}, kd,
                           TrainConfig(epochs=1, lr=1e-8, batch_size=32),
                           CostConfig(latency=False))
    # a vanishing learning rate: the trained student is still (almost) the teacher
    x = data.x_test
    assert torch.allclose(run.model(x), teacher(x), atol=1e-4)


# -- a search records an init-infeasible candidate without training it ------------------------
SPACE = {
    "family": "transformer",
    "architecture": {"layers": 1, "hidden": {"choice": [16, 24]}, "heads": 2},
    "distillation": {"soft_loss": "kl", "init": {"choice": ["random", "teacher"]}},
    "training": {"epochs": 1, "batch_size": 32},
}


def test_objective_records_a_failed_init_as_infeasible_before_training(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an init-infeasible candidate must not be trained")

    monkeypatch.setattr("autokd.objective.run_distillation", boom)
    data = token_splits()
    objective = Objective(SearchSpace.from_dict(SPACE), data, _teacher(_transformer(2)),
                          SearchSettings(cost=CostConfig(latency=False)))
    trial = optuna.trial.FixedTrial({"hidden": 24, "init": "teacher"})
    t0 = time.perf_counter()
    values = objective(trial)
    assert time.perf_counter() - t0 < 2.0
    record = TrialRecord.of(trial)
    assert record.get("infeasible") is True and values[0] == 0.0
    assert record.get("infeasible_reason") == ("cannot initialise from the teacher: hidden "
                                               "differs (student 24, teacher 16)")
    assert record.get("flops") > 0 and record.get("train_seconds") is None
    with pytest.raises(AssertionError, match="must not be trained"):  # a feasible one trains
        objective(optuna.trial.FixedTrial({"hidden": 16, "init": "teacher"}))


# -- the CLI ---------------------------------------------------------------------------------
def test_distill_cli_init_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from autokd.cli import main

    teacher = save_checkpoint(_transformer(2, (1, 40), classes=10, patch=5), tmp_path / "t.pt")
    common = ["distill", "--dataset", "mnist1d", "--num-samples", "200", "--teacher",
              str(teacher), "--epochs", "1", "--latency-batch", "2", "--init", "teacher"]
    assert main([*common, "--student", "transformer:layers=1,hidden=16,heads=2,patch=5",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recipe"]["init"] == "teacher"
    assert main([*common, "--student", "cnn1d:depth=1"]) == 2
    assert "family cnn1d cannot be initialised from a teacher" in capsys.readouterr().err
    assert main([*common, "--student", "transformer:layers=1,hidden=32,heads=2,patch=5"]) == 2
    assert "hidden differs (student 32, teacher 16)" in capsys.readouterr().err
