"""``--strategy darts``: the bilevel search, its constraints and guard, and the trial record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml

from autokd.cli import main
from autokd.config import CostConfig, DataConfig, SearchSettings, TrainConfig
from autokd.cost import count_flops
from autokd.distill import KDConfig
from autokd.errors import ConfigError
from autokd.latency_table import MIN_CALIBRATION
from autokd.models import build_student
from autokd.models.supernet import Relaxation, Supernet
from autokd.nas import DartsOptions, DartsSearch, derive, space_decisions
from autokd.nas.cost_model import CostModel
from autokd.record import SearchRecord, TrialRecord
from autokd.search import SearchConfig, run_search
from autokd.space import SearchSpace

TINY = {
    "family": "cnn",
    "architecture": {"depth": {"int": [1, 2]},
                     "widths": {"choice": [4, 8, 16], "per_stage": "depth"},
                     "kernel": {"choice": [3, 5]}, "batch_norm": True},
    "distillation": {"temperature": {"float": [2.0, 6.0]}, "alpha": {"float": [0.5, 1.0]}},
    "training": {"lr": 0.005, "epochs": 2},
}
FAST_COST = CostConfig(warmup=1, repeats=3, min_block_s=0.002)


def _net(decisions: dict[str, list[Any]], mode: str = "gumbel", seed: int = 0) -> Supernet:
    return Supernet("cnn", decisions, {"batch_norm": True}, (1, 8, 8), 10,
                    Relaxation(mode, tau=5.0, seed=seed), seed=seed)


def _search(digits: Any, net: Supernet, limits: dict[str, float], seed: int = 0,
            **options: Any) -> Any:
    opts = DartsOptions.from_dict({"epochs": 4, "warmup": 0.25, "entropy_stop": None, **options})
    train = TrainConfig(lr=0.005, batch_size=128, seed=seed)
    return DartsSearch(net, CostModel(net), digits, None, KDConfig(), train, limits, opts).run()


def test_options_are_validated() -> None:
    assert DartsOptions.from_dict({"targets": "0.05,0.1"}).targets == [0.05, 0.1]
    assert DartsOptions.from_dict({"relaxation": None}).relaxation == "gumbel"  # None: default
    for bad, match in (({"target": [0.1]}, "unknown darts option"),
                       ({"targets": "a,b"}, "bad --targets"), ({"targets": [-1]}, "positive"),
                       ({"relaxation": "sparsemax"}, "unknown relaxation"),
                       ({"epochs": 0}, "darts-epochs"), ({"skip_cap": 2.0}, "skip_cap")):
        with pytest.raises(ConfigError, match=match):
            DartsOptions.from_dict(bad)
    fill = DartsOptions(targets=[0.1, 0.4, 0.025])
    assert [fill.target_for(i) for i in range(3)] == [0.1, 0.4, 0.025]
    assert [fill.target_for(i) for i in (3, 4)] == pytest.approx([0.05, 0.2])  # gaps filled
    assert DartsOptions(targets=[0.3]).target_for(2) == 0.3


def test_tight_flops_target_is_met_after_a_short_search(digits: Any) -> None:
    """The multiplier rises while E[FLOPs] is over the target and pulls it under."""
    decisions = {"depth": [1, 2], "widths_0": [4, 8, 16, 32], "widths_1": [4, 8, 16, 32],
                 "kernel": [3, 5]}
    net = _net(decisions)
    cost = CostModel(net)
    largest = cost.of_choice({"depth": 2, "widths_0": 32, "widths_1": 32, "kernel": 5})["flops"]
    limit = 0.04 * largest
    start = float(cost.expected(net.probabilities())["flops"].detach())
    assert start > 2 * limit  # the uniform supernet is far over the target
    result = _search(digits, net, {"flops": limit}, epochs=6)
    assert max(h["multipliers"]["flops"] for h in result.history) > 0
    assert result.expected["flops"] <= 1.1 * limit
    choice, _repairs = derive(net, cost, {"flops": limit})
    student = build_student("cnn", net.spec_for(choice), (1, 8, 8), 10)
    assert count_flops(student, (1, 8, 8)) <= limit  # measured, not predicted
    assert cost.of_choice(choice)["flops"] == count_flops(student, (1, 8, 8))


class _Noise:
    """Forward hook: a block that only adds noise (an untrained parametric op)."""

    def __call__(self, module: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return 3.0 * torch.randn_like(output)


@pytest.mark.parametrize("guard", [False, True])
def test_collapse_guard_caps_skips(digits: Any, guard: bool) -> None:
    """With useless deep blocks the task loss collapses depth onto the skips; the cap holds."""
    torch.manual_seed(0)
    net = _net({"depth": [1, 2, 3], "widths_0": [8], "widths_1": [8], "widths_2": [8]},
               mode="softmax")
    for stage in net.stages[1:]:
        stage.register_forward_hook(_Noise())
    result = _search(digits, net, {}, skip_cap=0.5 if guard else None, alpha_lr=0.3, epochs=6)
    p_shallow = result.probabilities["depth"][0]
    if guard:
        assert result.skip_cap_hits > 0
        assert p_shallow <= 0.5 + 1e-4
        assert net.choice("marginal")["depth"] > 1  # the collapsed net is not the derived one
    else:
        assert result.skip_cap_hits == 0
        assert p_shallow > 0.8 and net.choice("marginal")["depth"] == 1


@pytest.mark.parametrize("mode", ["softmax", "gumbel"])
def test_derivation_is_deterministic_under_a_seed(digits: Any, mode: str) -> None:
    decisions = {"depth": [1, 2], "widths_0": [4, 16], "widths_1": [4, 16], "kernel": [3, 5]}
    runs = [_search(digits, _net(decisions, mode, seed=3), {}, seed=3, epochs=3)
            for _ in range(2)]
    assert runs[0].probabilities == runs[1].probabilities
    assert runs[0].argmax == runs[1].argmax
    assert runs[0].history[-1]["derived"] == runs[1].history[-1]["derived"]


def test_hard_gumbel_search_runs(digits: Any) -> None:
    decisions = {"depth": [1, 2], "widths_0": [4, 16], "widths_1": [4, 16]}
    result = _search(digits, _net(decisions), {}, epochs=2, gumbel_hard=True)
    assert result.epochs_run == 2 and 0.0 <= result.history[-1]["entropy"] <= 1.0


# -- the search command ------------------------------------------------------------------------


def _tiny_yaml(tmp_path: Path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return str(path)


def _config(tmp_path: Path, budget: Any, strategy: str = "darts", **options: Any) -> SearchConfig:
    settings = SearchSettings(epochs=2, cost=FAST_COST, pareto_pruning=False)
    return SearchConfig(data=DataConfig("digits"), space=_tiny_yaml(tmp_path), budget=budget,
                        strategy=strategy, settings=settings, results=str(tmp_path),
                        name="mixed", strategy_options=options)


@pytest.mark.slow
def test_darts_trials_are_ordinary_trials(tmp_path: Path, digits_teacher: Any) -> None:
    """Same params, same attributes as Optuna trials, plus the darts_* / predicted_* ones."""
    outcome = run_search(_config(tmp_path, 2, targets=[0.05, 0.5], epochs=2))
    study = outcome.study
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 2 and [TrialRecord.of(t).get("darts_target") for t in trials] == [0.05, 0.5]
    space = SearchSpace.from_dict(TINY)
    teacher_flops = SearchRecord.of(study).teacher["flops"]
    for t in trials:
        a = TrialRecord.of(t).fields()
        assert a["strategy"] == "darts" and a["darts_search_seconds"] > 0
        assert space.from_params(t.params).spec == a["spec"]
        assert a["predicted_flops"] == a["flops"] and a["predicted_params"] == a["params"]
        assert a["predicted_latency_ms"] > 0 and a["latency_ms"] > 0
        assert a["flops"] <= a["darts_target"] * teacher_flops
        assert set(a["darts_alpha"]) == {"depth", "widths_0", "widths_1", "kernel"}
        assert all(abs(sum(p) - 1) < 1e-3 for p in a["darts_alpha"].values())
    run_search(_config(tmp_path, 3, strategy="optuna"))  # one Optuna trial into the same study
    optuna_trial = next(t for t in study.get_trials() if TrialRecord.of(t).get("strategy") == "optuna")
    assert set(TrialRecord.of(optuna_trial).fields()) <= set(TrialRecord.of(trials[0]).fields())
    names = {"depth", "kernel", "temperature", "alpha"} | {f"widths_{i}" for i in range(2)}
    assert set(optuna_trial.params) <= names and set(trials[0].params) <= names
    # a run interrupted while retraining is re-queued with its params: retrained, not re-searched
    study.enqueue_trial(trials[0].params, user_attrs={"retry_of": trials[0].number})
    run_search(_config(tmp_path, 4, targets=[0.05, 0.5], epochs=2))
    retry = TrialRecord.of(study.get_trials()[-1]).fields()
    assert retry["retry_of"] == trials[0].number and retry["spec"] == TrialRecord.of(trials[0]).get("spec")
    assert retry["darts_alpha"] == TrialRecord.of(trials[0]).get("darts_alpha")


@pytest.mark.slow
def test_time_budget_stops_the_supernet_search(tmp_path: Path, digits_teacher: Any) -> None:
    outcome = run_search(_config(tmp_path, "1s", epochs=50))
    trials = outcome.study.get_trials()
    assert len(trials) == 1
    assert TrialRecord.of(trials[0]).get("darts_stop_reason") == "time budget spent"
    assert TrialRecord.of(trials[0]).get("darts_epochs_run") < 50


@pytest.mark.slow
def test_latency_target_is_checked_by_measurement(tmp_path: Path, digits_teacher: Any) -> None:
    outcome = run_search(_config(tmp_path, 1, targets=[0.5], target_metric="latency",
                                 epochs=2))
    a = TrialRecord.of(outcome.study.get_trials()[0]).fields()
    assert a["darts_target_metric"] == "latency_ms" and "latency_ms" in a["darts_limits"]
    checks = a["darts_latency_checks"]
    assert checks and all(c["measured_ms"] > 0 and c["predicted_ms"] > 0 for c in checks)


def test_cli(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "cache"))
    space = _tiny_yaml(tmp_path)
    assert main(["latency-table", "--space", space, "--calibration", "1", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    # --calibration 1 per depth is topped up to the correction's minimum of whole models
    assert first["cached"] is False and first["ops"] > 0
    assert first["error"]["n"] == MIN_CALIBRATION
    assert Path(first["path"]).is_relative_to(tmp_path / "cache" / "latency")
    assert main(["latency-table", "--space", space, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cached"] is True
    assert main(["search", "--targets", "0.1", "--results", str(tmp_path)]) == 2
    assert "--strategy darts only" in capsys.readouterr().err


def test_space_decisions() -> None:
    decisions, fixed = space_decisions(SearchSpace.from_dict(TINY))
    assert decisions == {"depth": [1, 2], "widths_0": [4, 8, 16], "widths_1": [4, 8, 16],
                         "kernel": [3, 5]}
    assert fixed == {"batch_norm": True}
    bad = {**TINY, "architecture": {**TINY["architecture"],
                                    "kernel": {"choice": [3, 5], "when": {"depth": 2}}}}
    with pytest.raises(Exception, match="conditional architecture"):
        space_decisions(SearchSpace.from_dict(bad))
