"""``--strategy nni``: space translation, pinned parameters, reward, and a real NNI search."""

from __future__ import annotations

import importlib.util
import math

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from autokd.config import CostConfig, SearchSettings
from autokd.controllers.nni_search import PinnedSampler, nni_space, scalar_reward, to_pins
from autokd.errors import ConfigError
from autokd.pareto import FrontScale
from autokd.record import SearchRecord, TrialRecord, count_done
from autokd.search import SearchConfig, run_search
from autokd.space import SearchSpace, load_space

HAS_NNI = importlib.util.find_spec("nni") is not None
needs_nni = pytest.mark.skipif(not HAS_NNI, reason="the nni extra is not installed "
                                                   "(pip install 'autokd[nni]')")
SPACE = {
    "family": "cnn",
    "architecture": {"depth": {"int": [1, 3]},
                     "widths": {"choice": [4, 8], "per_stage": "depth"},
                     "kernel": {"choice": [3]}},
    "distillation": {"soft_loss": {"choice": ["kl", "mse"]},
                     "temperature": {"float": [1.0, 8.0], "log": True,
                                     "when": {"soft_loss": "kl"}},
                     "alpha": {"float": [0.3, 1.0], "step": 0.1}},
    "training": {"lr": {"float": [1.0e-3, 1.0e-2], "log": True},
                 "batch_size": {"int": [16, 64], "step": 16}, "epochs": 3},
}


def test_space_translates_to_nni_types() -> None:
    out = nni_space(SearchSpace.from_dict(SPACE))
    assert out["depth"] == {"_type": "randint", "_value": [1, 4]}  # NNI's high is exclusive
    assert [k for k in out if k.startswith("widths")] == ["widths_0", "widths_1", "widths_2"]
    assert out["widths_2"] == {"_type": "choice", "_value": [4, 8]}
    assert out["temperature"] == {"_type": "loguniform", "_value": [1.0, 8.0]}  # conditional too
    assert out["alpha"] == {"_type": "uniform", "_value": [0.3, 1.0]}  # step applied by snapping
    assert out["batch_size"] == {"_type": "choice", "_value": [16, 32, 48, 64]}
    assert "kernel" not in out and "epochs" not in out  # single values need no tuner


@pytest.mark.parametrize("name", ["cnn", "mlp", "cnn1d"])
def test_bundled_spaces_translate(name: str) -> None:
    space = load_space(name)
    out = nni_space(space)
    assert out and all(v["_type"] in ("choice", "randint", "uniform", "loguniform")
                       for v in out.values())


def test_pins_snap_to_what_optuna_distributions_accept() -> None:
    space = SearchSpace.from_dict(SPACE)
    pins = to_pins(space, {"depth": 2, "alpha": 0.4499999, "temperature": 8.0000001,
                           "lr": 0.0009999, "batch_size": 32, "widths_0": 8, "unknown": 1})
    assert pins["alpha"] == pytest.approx(0.4) and pins["temperature"] == 8.0
    assert pins["lr"] == 1.0e-3 and "unknown" not in pins
    assert FloatDistribution(0.3, 1.0, step=0.1)._contains(pins["alpha"])


def test_pinned_trial_records_optuna_names_and_distributions() -> None:
    space = SearchSpace.from_dict(SPACE)
    sampler = PinnedSampler(seed=0)
    study = optuna.create_study(sampler=sampler)
    sampler.pins = to_pins(space, {"depth": 2, "widths_0": 4, "widths_1": 8, "widths_2": 4,
                                   "soft_loss": "mse", "temperature": 3.0, "alpha": 0.7,
                                   "lr": 0.002, "batch_size": 48})
    trial = study.ask()
    cand = space.sample(trial)
    assert cand.spec["widths"] == [4, 8] and cand.kd.soft_loss == "mse"
    assert "temperature" not in trial.params and "widths_2" not in trial.params  # inactive
    reference = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    ref = reference.ask()
    ref_cand = space.sample(ref)
    for name, dist in trial.distributions.items():  # same names, same distributions as Optuna
        if name in ref.distributions:
            assert ref.distributions[name] == dist
    assert trial.distributions["depth"] == IntDistribution(1, 3)
    assert trial.distributions["soft_loss"] == CategoricalDistribution(["kl", "mse"])
    assert ref_cand.family == cand.family


def test_reward_is_the_score_or_a_documented_scalarisation() -> None:
    assert scalar_reward(0.25, ["score"], {}) == 0.25
    teacher = {"flops": 1e6}
    # accuracy 0.9 -> loss 0.1; 1000x fewer FLOPs than the teacher -> loss 0
    assert scalar_reward([0.9, 1e3], ["accuracy", "flops"], teacher) == pytest.approx(0.05)
    assert scalar_reward([0.9, 1e6], ["accuracy", "flops"], teacher) == pytest.approx(0.55)
    smaller_better = scalar_reward([0.9, 1e4], ["accuracy", "flops"], teacher)
    assert 0.05 < smaller_better < 0.55 and math.isfinite(smaller_better)
    # with the study's scale: its hypervolume losses, clipped to [0, 1]
    scale = FrontScale((0.1, 0.9), {"flops": (1e3, 1e5)})
    assert scalar_reward([0.9, 1e3], ["accuracy", "flops"], teacher, scale) == pytest.approx(0.0)
    assert scalar_reward([0.5, 1e4], ["accuracy", "flops"], teacher, scale) == pytest.approx(0.5)
    assert scalar_reward([0.05, 1e6], ["accuracy", "flops"], teacher, scale) == pytest.approx(1.0)


def test_tuner_flag_needs_the_nni_strategy(capsys) -> None:
    from autokd.cli import main

    assert main(["search", "--tuner", "anneal"]) == 2
    assert "--tuner applies to --strategy nni only" in capsys.readouterr().err


def test_missing_extra_names_it(monkeypatch) -> None:
    import sys

    from autokd.controllers import nni_search

    monkeypatch.setitem(sys.modules, "nni", None)  # as if NNI were not installed
    cfg = SearchConfig(strategy="nni")
    with pytest.raises(ConfigError, match=r"pip install 'autokd\[nni\]'"):
        nni_search.open_for_search("x", "sqlite:///:memory:", cfg, SearchSettings())


def _tiny(tmp_path) -> str:
    raw = {**SPACE, "architecture": {"depth": {"int": [1, 2]},
                                     "widths": {"choice": [4, 8], "per_stage": "depth"}},
           "training": {"lr": 0.005, "epochs": 2}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _nni_search(tmp_path, tuner: str, budget: int, name: str):
    settings = SearchSettings(cost=CostConfig.for_search(latency=False), pareto_pruning=False)
    cfg = SearchConfig(space=_tiny(tmp_path), budget=budget, name=name, strategy="nni",
                       tuner=tuner, results=str(tmp_path / "r"), device="cpu",
                       settings=settings)
    return run_search(cfg).study


@needs_nni
@pytest.mark.parametrize("tuner", ["tpe", "anneal", "evolution", "random"])
def test_nni_search_records_ordinary_trials(tmp_path, digits_teacher, tuner: str) -> None:
    study = _nni_search(tmp_path, tuner, 3, f"n-{tuner}")
    trials = study.get_trials()
    assert count_done(study) == 3 and len(trials) == 3
    for t in trials:
        assert t.state == TrialState.COMPLETE
        a = TrialRecord.of(t).fields()
        assert a["strategy"] == "nni" and a["tuner"] == tuner and "nni_params" in a
        scale = FrontScale.from_dict(SearchRecord.of(study).scale)
        assert a["nni_reward"] == pytest.approx(scalar_reward(t.values, ["accuracy", "flops"],
                                                              SearchRecord.of(study).teacher, scale))
        assert {"val_accuracy", "flops", "spec", "recipe", "checkpoint"} <= set(a)
        assert set(t.params) <= set(a["nni_params"])  # active subset of the full proposal
        assert t.distributions["alpha"] == FloatDistribution(0.3, 1.0, step=0.1)


@needs_nni
def test_nni_resume_feeds_the_tuner_the_recorded_trials(tmp_path, digits_teacher) -> None:
    _nni_search(tmp_path, "tpe", 2, "resume")
    study = _nni_search(tmp_path, "tpe", 3, "resume")
    assert count_done(study) == 3
    params = [tuple(sorted(t.params.items())) for t in study.get_trials()]
    assert len(set(params)) == 3
