"""DARTS over the ``mbv2`` schema: the inverted-residual supernet, its costs and derivation.

Every check runs against the test-only ``mbv2_stub`` family (``tests/_mbv2_stub.py``); the
cost and derivation checks also run against the real ``mbv2`` family, skipped only when no
family of that name is registered.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from autokd.config import CostConfig, DataConfig, SearchSettings
from autokd.cost import count_flops, count_params
from autokd.errors import ConfigError
from autokd.latency_table import TableSettings, build_table
from autokd.models import FAMILIES, build_student, get_family
from autokd.models.supernet import IRSupernet, Relaxation, build_supernet
from autokd.nas import derive
from autokd.nas.cost_model import CostModel
from autokd.record import TrialRecord
from autokd.search import SearchConfig, run_search
from autokd.space import SearchSpace
from tests import _mbv2_stub

DECISIONS = {"depths_0": [1, 2], "depths_1": [1, 2, 3], "widths_0": [8, 16],
             "widths_1": [16, 24], "kernel_0": [3, 5], "kernel_1": [3, 7],
             "expansion_0": [1, 4], "expansion_1": [3, 6]}
FIXED = {"stages": 2, "se": [False, True], "activation": ["relu", "hardswish"]}
SHAPES = [(1, 8, 8), (2, 32), (3, 64, 66)]
FAMILY_NAMES = [_mbv2_stub.NAME, pytest.param("mbv2", marks=pytest.mark.skipif(
    "mbv2" not in FAMILIES, reason="the mbv2 family is not registered"))]


def _net(family: str = _mbv2_stub.NAME, shape: tuple[int, ...] = (1, 8, 8),
         mode: str = "softmax", fixed: dict[str, Any] | None = None, seed: int = 0) -> IRSupernet:
    return build_supernet(family, DECISIONS, fixed or FIXED, shape, 10,
                          Relaxation(mode, tau=5.0, seed=seed), seed=seed)


def _one_hot(net: IRSupernet, choice: dict[str, Any]) -> dict[str, torch.Tensor]:
    full = net.full_choice(choice)
    return {n: torch.nn.functional.one_hot(torch.tensor(opts.index(full[n])), len(opts)).double()
            for n, opts in net.decisions.items()}


@pytest.mark.parametrize("shape", SHAPES[:2])
@pytest.mark.parametrize("mode", ["softmax", "gumbel"])
def test_forward_and_gradient_reach_every_alpha(shape: tuple[int, ...], mode: str) -> None:
    net = _net(shape=shape, mode=mode, fixed={**FIXED, "head_width": 16})
    out = net(torch.randn(4, *shape))
    assert out.shape == (4, 10)
    out.logsumexp(1).sum().backward()
    for name, alpha in net.alphas.items():
        assert alpha.grad is not None and float(alpha.grad.abs().sum()) > 0, name
    assert all(p.grad is not None for p in net.classifier.parameters())


def test_decisions_are_blocks_and_widths() -> None:
    net = _net()
    assert net.decisions["block_0_0"] == ["k5e4", "k5e1", "k3e4", "k3e1"]  # no skip: depth >= 1
    assert net.decisions["block_0_1"][-1] == "skip" and "block_0_2" not in net.decisions
    assert net.decisions["block_1_2"] == ["k7e6", "k7e3", "k3e6", "k3e3", "skip"]
    assert net.decisions["widths_1"] == [16, 24]
    assert net.strides == [[2, 1], [1, 1, 1]]  # 8x8: stage 0 halves to 4, then maps stay at 4


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("shape", SHAPES)
def test_one_hot_expected_cost_is_the_derived_students(family: str, shape: tuple[int, ...]) -> None:
    """Expected FLOPs/params under a one-hot alpha == ``autokd.cost`` on the built student."""
    net = _net(family, shape, fixed={**FIXED, "head_width": 24})
    cost, rng = CostModel(net), random.Random(1)
    for _ in range(3):
        choice = {n: rng.choice(opts) for n, opts in net.decisions.items()}
        spec = net.spec_for(choice)
        model = build_student(family, spec, shape, 10)
        assert model.spec == get_family(family).normalise(spec)
        want = {"flops": count_flops(model, shape), "params": count_params(model)}
        expected = cost.expected(_one_hot(net, choice))
        assert {m: round(float(v)) for m, v in expected.items()} == want
        assert cost.of_choice(choice) == want


def test_expected_cost_weighs_candidates_by_probability() -> None:
    net = _net()
    cost = CostModel(net)
    probs = _one_hot(net, net.choice())
    mixed = dict(probs)
    a, b = (dict(net.choice(), block_1_1=v) for v in ("k7e6", "skip"))
    mixed["block_1_1"] = 0.25 * _one_hot(net, a)["block_1_1"] + 0.75 * _one_hot(net, b)["block_1_1"]
    want = 0.25 * cost.of_choice(a)["flops"] + 0.75 * cost.of_choice(b)["flops"]
    assert cost.of_choice(a)["flops"] > cost.of_choice(b)["flops"]
    assert float(cost.expected(mixed)["flops"]) == pytest.approx(want)


def _set(net: IRSupernet, name: str, probs: dict[str, float]) -> None:
    """Set ``alpha[name]`` so that softmax gives ``probs`` (unnamed options share the rest)."""
    opts = net.decisions[name]
    rest = (1.0 - sum(probs.values())) / max(1, len(opts) - len(probs))
    p = torch.tensor([probs.get(o, rest) for o in opts]).clamp_min(1e-6)
    with torch.no_grad():
        net.alphas[name].copy_(p.log())


def test_derivation_counts_kept_blocks_and_sums_weights_over_them() -> None:
    net = _net()
    _set(net, "block_1_0", {"k7e6": 0.4, "k3e3": 0.3})
    _set(net, "block_1_1", {"k3e3": 0.9})
    _set(net, "block_1_2", {"k7e6": 0.3, "skip": 0.7})  # dropped: its weights do not count
    spec = net.spec_for(net.choice("argmax"))
    # kernel 3: 0.3+0.05+0.9+0.0167 over kept blocks beats 7; expansion 3 likewise
    assert spec["depths"][1] == 2 and spec["kernel"][1] == 3 and spec["expansion"][1] == 3
    _set(net, "block_1_2", {"k7e6": 0.35, "skip": 0.45})  # skip is the argmax, P(keep) > 1/2
    assert net.spec_for(net.choice("argmax"))["depths"][1] == 2
    assert net.spec_for(net.choice("marginal"))["depths"][1] == 3
    _set(net, "block_1_2", {"k7e6": 0.45, "skip": 0.55})
    assert net.spec_for(net.choice("marginal"))["depths"][1] == 2
    _set(net, "block_1_1", {"skip": 0.9})
    _set(net, "block_1_2", {"skip": 0.9})
    assert net.spec_for(net.choice("argmax"))["depths"][1] == 1  # the first block always runs
    with pytest.raises(ConfigError, match="derivation rule"):
        net.choice("best")


def test_block_choices_are_made_stage_consistent() -> None:
    net = _net()
    choice = {**net.choice(), "block_1_0": "k3e6", "block_1_1": "skip", "block_1_2": "k7e3"}
    full = net.full_choice(choice)
    assert [full[f"block_1_{j}"] for j in range(3)] == ["k3e6", "k3e6", "skip"]
    spec = net.spec_for(choice)
    assert (spec["depths"][1], spec["kernel"][1], spec["expansion"][1]) == (2, 3, 6)
    assert net.active(choice)["depths_1"] == 2 and net.active(choice)["se_1"] is True
    assert CostModel(net).of_choice(choice) == CostModel(net).of_choice(full)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_derived_specs_are_valid_for_random_alphas(family: str) -> None:
    for seed in range(4):
        net = _net(family, seed=seed)
        with torch.no_grad():
            for alpha in net.alphas.values():
                alpha.normal_(0.0, 2.0, generator=torch.Generator().manual_seed(seed))
        for rule in ("argmax", "marginal"):
            spec = net.spec_for(net.choice(rule))
            normal = get_family(family).normalise(spec)  # raises on an invalid spec
            assert normal["depths"] == spec["depths"] and spec["stages"] == 2
            for i in range(2):
                assert 1 <= spec["depths"][i] <= max(DECISIONS[f"depths_{i}"])
                for key in ("widths", "kernel", "expansion"):
                    assert spec[key][i] in DECISIONS[f"{key}_{i}"]
            for name, value in net.active(net.choice(rule)).items():
                key, _, i = name.rpartition("_")
                assert spec[key][int(i)] == value


def test_repair_meets_a_tight_flops_limit() -> None:
    net = _net()
    cost = CostModel(net)
    with torch.no_grad():  # a supernet that wants the largest network
        for name, opts in net.decisions.items():
            net.alphas[name].copy_(torch.linspace(2.0, 0.0, len(opts)))
    largest = cost.of_choice(net.choice())["flops"]
    choice, changes = derive(net, cost, {"flops": 0.4 * largest}, rule="argmax")
    assert changes and cost.of_choice(choice)["flops"] <= 0.4 * largest
    spec = net.spec_for(choice)
    model = build_student(_mbv2_stub.NAME, spec, (1, 8, 8), 10)
    assert count_flops(model, (1, 8, 8)) == cost.of_choice(choice)["flops"]


def test_invalid_supernets_fail_clearly() -> None:
    with pytest.raises(ConfigError, match="cannot relax 'se_0'"):
        build_supernet(_mbv2_stub.NAME, {"se_0": [False, True]}, FIXED, (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="must be odd"):
        build_supernet(_mbv2_stub.NAME, {"kernel_0": [3, 4]}, FIXED, (1, 8, 8), 10)
    with pytest.raises(ConfigError, match=r"\(C, H, W\) or \(C, L\)"):
        build_supernet(_mbv2_stub.NAME, DECISIONS, FIXED, (64,), 10)
    with pytest.raises(ConfigError, match="positive integers"):
        build_supernet(_mbv2_stub.NAME, {"widths_0": [0, 8]}, FIXED, (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="unknown mbv2_stub spec key"):
        build_supernet(_mbv2_stub.NAME, DECISIONS, {**FIXED, "depth": 2}, (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="no inverted-residual supernet for student family"):
        IRSupernet("cnn", {}, {}, (1, 8, 8), 10)


def test_latency_table_calibrates_one_overhead_group() -> None:
    net = _net()
    table = build_table(net, "mbv2_stub", settings=TableSettings(calibration=2, passes=1),
                        measure=lambda module, shape: 0.5)
    # one group, so the MIN_CALIBRATION models all calibrate it
    assert set(table.overhead) == {"0"} and len(table.calibration) == 12
    ops = [op for op in net.ops_for(net.choice()) if op.kind != "model"]
    assert {op.key() for op in ops} <= set(table.entries)


# -- end to end --------------------------------------------------------------------------------

STUB_SPACE = {
    "family": _mbv2_stub.NAME,
    "architecture": {"stem_width": 8, "stages": {"int": [1, 2]},
                     "depths": {"int": [1, 2], "per_stage": "stages"},
                     "widths": {"choice": [8, 16], "per_stage": "stages"},
                     "kernel": {"choice": [3, 5], "per_stage": "stages"},
                     "expansion": {"choice": [1, 4], "per_stage": "stages"},
                     "se": {"choice": [False, True], "per_stage": "stages"}},
    "distillation": {"alpha": {"float": [0.5, 1.0]}},
    "training": {"lr": 0.005, "epochs": 1},
}


def _search(tmp_path: Path, space: str) -> Any:
    settings = SearchSettings(epochs=1, cost=CostConfig(warmup=1, repeats=3, min_block_s=0.002),
                              pareto_pruning=False)
    cfg = SearchConfig(data=DataConfig("digits"), space=space, budget=1, strategy="darts",
                       settings=settings, results=str(tmp_path), name="mb",
                       strategy_options={"epochs": 2, "targets": [0.25], "batch_size": 256})
    return run_search(cfg)


def _check_trial(outcome: Any, space: SearchSpace) -> None:
    [trial] = outcome.study.get_trials()
    a = TrialRecord.of(trial).fields()
    assert a["strategy"] == "darts" and a.get("fail_reason") is None, a.get("fail_reason")
    assert space.from_params(trial.params).spec == a["spec"]
    assert a["predicted_flops"] == a["flops"] and a["predicted_params"] == a["params"]
    assert a["flops"] <= a["darts_limits"]["flops"]  # the 25 % target, repaired if needed
    assert {n for n in a["darts_alpha"] if n.startswith("block_")} and a["val_accuracy"] > 0.1


def test_darts_search_on_digits_with_the_stub_space(tmp_path: Path, digits_teacher: Any) -> None:
    path = tmp_path / "mbv2_stub.yaml"
    path.write_text(yaml.safe_dump(STUB_SPACE, sort_keys=False))
    _check_trial(_search(tmp_path, str(path)), SearchSpace.from_dict(STUB_SPACE))


@pytest.mark.slow
@pytest.mark.skipif("mbv2" not in FAMILIES, reason="the mbv2 family is not registered")
def test_darts_search_on_digits_with_the_mbv2_space(tmp_path: Path, digits_teacher: Any) -> None:
    from autokd.space import load_space

    _check_trial(_search(tmp_path, "mbv2"), load_space("mbv2"))


def test_decisions_shared_by_all_stages_derive_one_value() -> None:
    shared = {"depths": [1, 2, 3], "widths": [8, 16], "kernel": [3, 5], "expansion": [1, 6]}
    net = build_supernet(_mbv2_stub.NAME, shared, FIXED, (1, 8, 8), 10, seed=3)
    rng, cost = random.Random(0), CostModel(net)
    for _ in range(4):
        choice = {n: rng.choice(opts) for n, opts in net.decisions.items()}
        spec, pins = net.spec_for(choice), net.active(choice)
        for key in shared:
            assert len(set(spec[key])) == 1 and pins[key] == spec[key][0]
        model = build_student(_mbv2_stub.NAME, spec, (1, 8, 8), 10)
        assert cost.of_choice(choice)["flops"] == count_flops(model, (1, 8, 8))
    with torch.no_grad():  # stage 0 wants two blocks of k5, stage 1 three of k3: more weight
        _set(net, "block_0_1", {"k5e6": 0.9})
        _set(net, "block_0_2", {"skip": 0.9})
        for j in range(3):
            _set(net, f"block_1_{j}", {"k3e6": 0.9})
    spec = net.spec_for(net.choice())
    assert spec["kernel"] == [3, 3] and spec["expansion"] == [6, 6]
    assert spec["depths"] == [3, 3]  # (2 + 3) / 2 kept blocks, rounded half up
