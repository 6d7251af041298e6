"""int8 candidates in a search and on the command line: deployed costs, infeasible families,
``--recipe`` and the quantisation flags."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from autokd.cli import main
from autokd.config import CostConfig, SearchSettings
from autokd.cost import measure_cost
from autokd.distill import KDConfig
from autokd.errors import ConfigError
from autokd.models import build_student
from autokd.objective import Objective
from autokd.quant import int8_cost
from autokd.record import TrialRecord
from autokd.runner import _space_yaml
from autokd.search import SearchConfig, prepare
from autokd.space import SearchSpace, with_recipe

QUICK = CostConfig(warmup=1, repeats=3, min_block_s=0.001)
MLP_SPACE = {"family": "mlp", "architecture": {"depth": 1, "widths": 32},
             "distillation": {"quantize": "int8", "qat_weight": 0.01},
             "training": {"lr": 0.01, "epochs": 6}}


def test_int8_trial_is_scored_as_the_deployed_model(digits, digits_teacher) -> None:
    objective = Objective(SearchSpace.from_dict(MLP_SPACE), digits, digits_teacher,
                          SearchSettings(cost=QUICK, objectives=["accuracy", "bytes"]))
    trial = optuna.trial.FixedTrial({})
    values = objective(trial)
    rec = TrialRecord.of(trial)
    assert rec.recipe["quantize"] == "int8"
    model = build_student("mlp", {"depth": 1, "widths": 32}, digits.input_shape, 10)
    float_cost = measure_cost(model, digits.input_shape, CostConfig(latency=False))
    deployed = int8_cost(model, digits.input_shape, float_cost, CostConfig(latency=False))
    assert rec.bytes == deployed.bytes == values[1] and rec.bytes != float_cost.bytes
    assert rec.flops == float_cost.flops and rec.latency_ms > 0
    # the INT8 model's own accuracy, within a couple of points of the fake-quantised model's
    assert rec.float_val_accuracy is not None and rec.val_accuracy > 0.8
    assert abs(rec.val_accuracy - rec.float_val_accuracy) <= 0.02
    assert abs(rec.test_accuracy - rec.float_test_accuracy) <= 0.02
    assert 0 <= rec.int8_max_abs_diff < 0.1


def test_int8_for_an_unsupported_family_is_infeasible_before_training(
        digits, digits_teacher, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an int8-infeasible candidate must not be trained")

    monkeypatch.setattr("autokd.objective.run_distillation", boom)
    space = {"family": "resnet", "architecture": {"stages": 1, "widths": 8},
             "distillation": {"quantize": {"choice": ["none", "int8"]}},
             "training": {"epochs": 1}}
    objective = Objective(SearchSpace.from_dict(space), digits, digits_teacher,
                          SearchSettings(cost=CostConfig(latency=False)))
    trial = optuna.trial.FixedTrial({"quantize": "int8"})
    t0 = time.perf_counter()
    values = objective(trial)
    assert time.perf_counter() - t0 < 3.0 and values[0] == 0.0
    rec = TrialRecord.of(trial)
    assert rec.infeasible is True
    assert rec.infeasible_reason.startswith("quantize: int8 is not supported for family resnet")


def test_with_recipe_fixes_or_chooses_and_leaves_the_input_alone() -> None:
    raw = {"family": "cnn", "architecture": {"depth": 1},
           "distillation": {"alpha": {"float": [0.5, 1.0]}}}
    out = with_recipe(raw, {"quantize": ["none", "int8"], "alpha": [0.7]})
    assert out["distillation"] == {"alpha": 0.7, "quantize": {"choice": ["none", "int8"]}}
    assert raw["distillation"] == {"alpha": {"float": [0.5, 1.0]}}  # pure
    space = SearchSpace.from_dict(out)
    assert space.sample(optuna.trial.FixedTrial({"quantize": "int8"})).kd.quantize == "int8"
    assert "int8" in KDConfig(quantize="int8", qat_weight=0.5).summary()


def test_search_records_the_space_with_the_recipe_applied(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(MLP_SPACE | {"distillation": {}}))
    cfg = SearchConfig(space=str(path), results=str(tmp_path / "r"),
                       recipe={"quantize": ["none", "int8"], "qat_weight": [0.0, 0.1]})
    _, space, _ = prepare(cfg)
    recorded = _space_yaml(space)
    assert recorded["distillation"]["quantize"] == {"choice": ["none", "int8"]}
    rebuilt = SearchSpace.from_dict(recorded)  # what a worker or a resumed search sees
    assert {p.name for p in rebuilt.group("distillation")} == {"quantize", "qat_weight"}
    assert yaml.safe_load(path.read_text())["distillation"] == {}  # the file is not touched


def test_recipe_values_are_validated() -> None:
    with pytest.raises(ConfigError, match="qat_weight must be >= 0"):
        KDConfig(quantize="int8", qat_weight=-1.0).validate()
    with pytest.raises(ConfigError, match="unknown quantize 'int4'"):
        KDConfig(quantize="int4").validate()


@pytest.mark.parametrize("argv, message", [
    (["search", "--recipe", "quantise=int8"], "unknown recipe key 'quantise'"),
    (["search", "--recipe", "quantize"], "expected KEY=V1,V2"),
    (["search", "--recipe", "quantize=none,int4", "--budget", "1"], "int4"),
    # a bad fixed value is blamed on its own key, not on the first choice validated
    (["search", "--recipe", "quantize=int4", "--budget", "1"], "distillation: unknown quantize"),
    (["distill", "--quantize", "int8", "--qat-weight", "-1"], "qat_weight must be >= 0"),
])
def test_cli_refuses_bad_quantisation_flags_in_one_line(
        argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main([*argv, "--results", str(tmp_path)] if argv[0] == "search" else argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_float_members_of_a_mixed_search_are_costed_as_onnx_files(digits, digits_teacher,
                                                                    monkeypatch,
                                                                    tmp_path: Path) -> None:
    """With int8 beside float in the space, a float candidate's bytes and latency are its
    float ONNX file's under ONNX Runtime (one runtime for the whole front), not PyTorch's."""
    from autokd.quant import export_float_onnx
    from autokd.quant.deploy import _example

    mixed = with_recipe(MLP_SPACE, {"quantize": ["none", "int8"]})
    assert SearchSpace.from_dict(mixed).offers_int8()
    assert not SearchSpace.from_dict(MLP_SPACE).offers_int8()  # int8 only: nothing to match
    monkeypatch.setattr("autokd.objective.run_distillation", lambda *a, **k: 1 / 0)
    objective = Objective(SearchSpace.from_dict(mixed), digits, digits_teacher,
                          SearchSettings(cost=QUICK, objectives=["accuracy", "bytes"]))
    trial = optuna.trial.FixedTrial({"quantize": "none"})
    with pytest.raises(ZeroDivisionError):  # costed before training; training not needed here
        objective(trial)
    rec = TrialRecord.of(trial)
    model = build_student("mlp", {"depth": 1, "widths": 32}, digits.input_shape, 10)
    onnx_file = export_float_onnx(model, _example(model, digits.input_shape),
                                  tmp_path / "student.onnx")
    assert rec.recipe["quantize"] == "none" and rec.bytes == onnx_file.stat().st_size
    assert rec.bytes != measure_cost(model, digits.input_shape, CostConfig(latency=False)).bytes


def test_int8_without_onnx_runtime_is_one_line(monkeypatch, capsys) -> None:
    """The INT8 model is scored in ONNX Runtime: without the export extra, say so up front."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    code = main(["distill", "--quantize", "int8", "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "autokd[export]" in err[0]
