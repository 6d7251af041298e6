"""The DARTS supernet and its cost model: mixed ops, exact expected cost, latency tables."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from autokd.cost import count_flops, count_params, measure_latency
from autokd.errors import ConfigError
from autokd.latency_table import (
    TableSettings,
    build_table,
    get_table,
    prediction_error,
    table_path,
)
from autokd.models import build_student
from autokd.models.supernet import Relaxation, Supernet
from autokd.nas.cost_model import CostModel

# family -> (decisions, fixed spec values, input shape): each covers its family's odd corners
CASES: dict[str, tuple[dict[str, list[Any]], dict[str, Any], tuple[int, ...]]] = {
    "cnn": ({"depth": [1, 2, 3], "widths_0": [4, 8, 16], "widths_1": [4, 12], "widths_2": [8, 24],
             "kernel": [3, 5], "pool": ["max", "avg", "stride"], "activation": ["relu", "silu"]},
            {"batch_norm": True}, (1, 8, 8)),
    # even kernel, odd length, no-pool option and a batch-norm choice
    "cnn1d": ({"depth": [1, 2, 3], "widths_0": [4, 8], "widths_1": [4, 16], "widths_2": [8],
               "kernel": [3, 4], "pool": ["max", "stride", "none"], "batch_norm": [True, False],
               "activation": ["relu", "gelu"]}, {}, (2, 13)),
    # depth 0 is logistic regression
    "mlp": ({"depth": [0, 1, 2], "widths_0": [8, 32], "widths_1": [16, 64],
             "activation": ["relu", "gelu"], "batch_norm": [False, True]},
            {"dropout": 0.1}, (1, 8, 8)),
}


def _net(family: str, relaxation: Relaxation | None = None, seed: int = 0) -> Supernet:
    decisions, fixed, shape = CASES[family]
    return Supernet(family, decisions, fixed, shape, 10, relaxation, seed=seed)


def _choices(net: Supernet, n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{name: rng.choice(opts) for name, opts in net.decisions.items()} for _ in range(n)]


def _one_hot(net: Supernet, choice: dict[str, Any]) -> None:
    """Set alpha so that softmax(alpha) is exactly one-hot on ``choice``."""
    with torch.no_grad():
        for name, alpha in net.alphas.items():
            alpha.fill_(-1e4)
            alpha[net.decisions[name].index(choice[name])] = 0.0


@pytest.mark.parametrize("family", sorted(CASES))
@pytest.mark.parametrize("mode", ["softmax", "gumbel"])
def test_forward_and_gradient_flow_to_every_alpha(family: str, mode: str) -> None:
    net = _net(family, Relaxation(mode, tau=2.0, seed=0))
    x = torch.randn(6, *net.input_shape)
    logits = net(x)
    assert logits.shape == (6, 10)
    F.cross_entropy(logits, torch.arange(6) % 10).backward()
    for name, alpha in net.alphas.items():
        if alpha.numel() > 1:  # softmax of one option is constant
            assert alpha.grad is not None and alpha.grad.abs().sum() > 0, name
    weights = [p for p in net.weight_parameters() if p.grad is not None]
    assert weights and all(id(p) not in {id(a) for a in net.arch_parameters()} for p in weights)


@pytest.mark.parametrize("family", sorted(CASES))
def test_one_hot_alpha_expected_cost_is_exact(family: str) -> None:
    """E[cost] under a one-hot alpha = count_flops / count_params of the derived student."""
    net = _net(family)
    model_cost = CostModel(net)
    for choice in _choices(net, 12):
        _one_hot(net, choice)
        expected = {k: v.detach() for k, v in model_cost.expected(net.probabilities()).items()}
        student = build_student(family, net.spec_for(net.export()), net.input_shape, 10)
        assert net.export() == net.active(choice)
        assert float(expected["flops"]) == count_flops(student, net.input_shape)
        assert float(expected["params"]) == count_params(student)
        assert model_cost.of_choice(choice) == {"flops": count_flops(student, net.input_shape),
                                                "params": count_params(student)}


def test_expected_cost_is_probability_weighted_sum() -> None:
    """Per decision: sum over candidates of softmax(alpha) x candidate cost."""
    net = _net("cnn")
    model_cost = CostModel(net)
    base = {"depth": 2, "widths_0": 8, "widths_1": 12, "widths_2": 8, "kernel": 3,
            "pool": "max", "activation": "relu"}
    _one_hot(net, base)
    with torch.no_grad():
        net.alphas["kernel"].copy_(torch.log(torch.tensor([0.3, 0.7])))
    expected = {k: v.detach() for k, v in model_cost.expected(net.probabilities()).items()}
    c3, c5 = (model_cost.of_choice({**base, "kernel": k}) for k in (3, 5))
    for metric in ("flops", "params"):
        assert float(expected[metric]) == pytest.approx(0.3 * c3[metric] + 0.7 * c5[metric])
    probs = net.probabilities()
    model_cost.expected(probs)["flops"].backward()
    assert net.alphas["kernel"].grad[1] > 0  # the 5x5 candidate costs more


def test_width_choices_share_one_weight_tensor() -> None:
    """FBNetV2 masks: more width options do not add weights."""
    decisions, fixed, shape = CASES["cnn"]
    few = Supernet("cnn", {**decisions, "widths_1": [4, 12]}, fixed, shape, 10)
    many = Supernet("cnn", {**decisions, "widths_1": [4, 6, 8, 10, 12]}, fixed, shape, 10)
    assert sum(p.numel() for p in few.weight_parameters()) == \
        sum(p.numel() for p in many.weight_parameters())


def test_gumbel_relaxation() -> None:
    alpha = torch.tensor([0.5, 0.0, -0.5], requires_grad=True)
    plain = alpha.detach()
    soft = Relaxation("gumbel", tau=1.0, seed=3)
    a, b = soft.weights(alpha, True), soft.weights(alpha, True)
    assert torch.allclose(a.sum(), torch.tensor(1.0)) and not torch.allclose(a, b)
    again = Relaxation("gumbel", tau=1.0, seed=3).weights(alpha, True)
    assert torch.equal(a, again)  # seeded
    hard = Relaxation("gumbel", tau=1.0, hard=True, seed=3).weights(alpha, True)
    assert sorted(hard.tolist()) == [0.0, 0.0, 1.0]
    (hard * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert alpha.grad.abs().sum() > 0  # straight-through
    assert torch.equal(soft.weights(alpha, False), alpha.softmax(-1))  # eval: softmax
    cold = Relaxation("gumbel", tau=0.05, seed=3).weights(plain, True)
    assert float(cold.max()) > float(a.detach().max())  # annealing sharpens


def test_hard_gumbel_runs_only_the_sampled_path() -> None:
    net = _net("cnn", Relaxation("gumbel", tau=1.0, hard=True, seed=0))
    calls = []
    for act in net.stages[0].acts:
        act.register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    net(torch.randn(4, 1, 8, 8))
    assert len(calls) == 1


def test_export_matches_sampler_params_and_space(tmp_path: Any) -> None:
    """export() is the {param: choice} dict an Optuna trial of the same space holds."""
    import optuna

    from autokd.nas import space_decisions
    from autokd.space import SearchSpace

    raw = {"family": "cnn",
           "architecture": {"depth": {"int": [1, 3]},
                            "widths": {"choice": [4, 8], "per_stage": "depth"},
                            "kernel": {"choice": [3, 5]}, "pool": {"choice": ["max", "stride"]},
                            "batch_norm": True},
           "distillation": {"alpha": {"float": [0.5, 1.0]}}}
    space = SearchSpace.from_dict(raw)
    decisions, fixed = space_decisions(space)
    net = Supernet("cnn", decisions, fixed, (1, 8, 8), 10)
    choice = {"depth": 2, "widths_0": 8, "widths_1": 4, "widths_2": 8, "kernel": 5,
              "pool": "stride"}
    _one_hot(net, choice)
    exported = net.export()
    trial = optuna.trial.FixedTrial({**exported, "alpha": 0.7})
    cand = space.sample(trial)
    assert set(exported) | {"alpha"} == set(trial.params)  # what Optuna would record
    assert space.from_params({**exported, "alpha": 0.7}).spec == cand.spec
    assert build_student("cnn", cand.spec, (1, 8, 8), 10).spec == \
        build_student("cnn", net.spec_for(exported), (1, 8, 8), 10).spec


def test_marginal_derivation_of_nested_decisions() -> None:
    """A bimodal width alpha derives its upper median, not an end (the argmax)."""
    net = _net("cnn")
    with torch.no_grad():
        net.alphas["widths_0"].copy_(torch.log(torch.tensor([0.4, 0.25, 0.35])))  # 4, 8, 16
        net.alphas["depth"].copy_(torch.log(torch.tensor([0.45, 0.1, 0.45])))
        net.alphas["kernel"].copy_(torch.log(torch.tensor([0.45, 0.55])))
    assert net.choice("argmax")["widths_0"] == 4 and net.choice("argmax")["depth"] == 1
    marginal = net.choice("marginal")
    assert marginal["widths_0"] == 8 and marginal["depth"] == 2  # P(>= 8) = .6, P(>= 2) = .55
    assert marginal["kernel"] == 5  # exclusive decisions keep the argmax
    with pytest.raises(ConfigError, match="derivation rule"):
        net.choice("mode")


def test_invalid_supernets_fail_clearly() -> None:
    with pytest.raises(ConfigError, match="cannot relax 'dropout'"):
        Supernet("mlp", {"dropout": [0.0, 0.1]}, {}, (4,), 3)
    with pytest.raises(ConfigError, match="no supernet"):
        Supernet("vit", {}, {}, (4,), 3)
    with pytest.raises(ConfigError, match="pool options"):
        Supernet("cnn", {"pool": ["max", "median"]}, {}, (1, 8, 8), 3)


# -- latency tables ----------------------------------------------------------------------------


def _fake_measure(calls: list[str]) -> Any:
    """Deterministic 'latency': 1 us per parameter plus 5 us per module."""

    def measure(module: torch.nn.Module, shape: tuple[int, ...]) -> float:
        calls.append(type(module).__name__)
        return 1e-3 * count_params(module) / 1000 + 0.005 * len(list(module.modules()))

    return measure


def test_latency_table_is_cached_per_device_and_space(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path))
    net = _net("cnn")
    calls: list[str] = []
    settings = TableSettings(passes=1, calibration=1)
    table = get_table(net, "tiny", settings=settings, measure=_fake_measure(calls))
    path = table_path(net, "tiny")
    assert path.exists() and str(path).startswith(str(tmp_path / "latency"))
    # every op and every calibration model (three passes) at batch 1 and the deploy batch
    assert table.path == str(path)
    assert len(calls) == 2 * len(table.entries) + 2 * 3 * len(table.calibration)

    def boom(*args: Any) -> float:
        raise AssertionError("a cached table must not be measured again")

    again = get_table(net, "tiny", settings=settings, measure=boom)
    assert again.entries == table.entries and again.overhead == table.overhead
    assert json.loads(path.read_text())["format"] == "autokd-latency-table"
    other = Supernet("cnn", {**CASES["cnn"][0], "widths_0": [4, 32]}, {"batch_norm": True},
                     (1, 8, 8), 10)
    assert table_path(other, "tiny") != path  # an edited space gets its own table


def test_one_hot_expected_latency_is_the_table_prediction() -> None:
    net = _net("mlp")
    table = build_table(net, "mlp", settings=TableSettings(passes=1, calibration=2),
                        measure=_fake_measure([]))
    model_cost = CostModel(net, table)
    for choice in _choices(net, 5, seed=1):
        _one_hot(net, choice)
        expected = float(model_cost.expected(net.probabilities())["latency_ms"].detach())
        parts = sum(table.latency(op) for op in net.ops_for(choice))
        assert expected == pytest.approx(parts, rel=1e-12)
        assert model_cost.of_choice(choice)["latency_ms"] == pytest.approx(parts, rel=1e-12)


def test_measured_table_predicts_whole_models() -> None:
    """Real timing on a tiny space: whole-model predictions within 2x (CPU is shared)."""
    decisions = {"depth": [1, 2], "widths_0": [4, 16], "widths_1": [8, 16]}
    net = Supernet("cnn", decisions, {"batch_norm": True}, (1, 8, 8), 10)
    table = build_table(net, "tiny", settings=TableSettings(warmup=1, min_block_s=0.002,
                                                            calibration=2))
    model_cost = CostModel(net, table)
    assert table.error()["n"] == len(table.calibration) >= 12  # at least MIN_CALIBRATION
    for choice in _choices(net, 3, seed=2):
        model = build_student("cnn", net.spec_for(choice), (1, 8, 8), 10)
        measured = min(measure_latency(model, (1, 8, 8), 1, warmup=1, repeats=3,
                                       min_block_s=0.002)[0] for _ in range(2))
        assert 0.5 < model_cost.of_choice(choice)["latency_ms"] / measured < 2.0


def test_prediction_error_over_trials() -> None:
    trials = [{"predicted_latency_ms": 1.1, "latency_ms": 1.0},
              {"predicted_latency_ms": 0.8, "latency_ms": 1.0}, {"latency_ms": 2.0}]
    err = prediction_error(trials)
    assert err["n"] == 2
    assert err["mean_abs_pct"] == pytest.approx(15.0)
    assert err["bias_pct"] == pytest.approx(-5.0)
    assert prediction_error([])["n"] == 0
