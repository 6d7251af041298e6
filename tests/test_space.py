"""Search-space parsing, validation and sampling."""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autokd.errors import SpaceError
from autokd.space import SearchSpace, load_space, space_names

BASE = {
    "family": "cnn",
    "architecture": {
        "depth": {"int": [1, 3]},
        "widths": {"choice": [4, 8], "per_stage": "depth"},
        "pool": {"choice": ["max", "avg"]},
    },
    "distillation": {
        "soft_loss": {"choice": ["kl", "mse"]},
        "temperature": {"float": [1.0, 8.0], "log": True, "when": {"soft_loss": "kl"}},
        "alpha": {"float": [0.3, 1.0]},
    },
    "training": {"lr": {"float": [1e-3, 1e-2], "log": True}, "epochs": 5},
}


def _space(raw: dict) -> SearchSpace:
    return SearchSpace.from_dict(raw, "test.yaml")


def test_bundled_spaces_load_and_sample() -> None:
    assert {"cnn", "mlp"} <= set(space_names())
    for name in space_names():
        space = load_space(name)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(5):
            cand = space.sample(study.ask())
            assert cand.family == space.family
            cand.kd.validate()


def test_per_stage_and_conditions() -> None:
    space = _space(BASE)
    trial = optuna.trial.FixedTrial({"depth": 2, "widths_0": 8, "widths_1": 4, "pool": "avg",
                                     "soft_loss": "mse", "alpha": 0.5, "lr": 0.005})
    cand = space.sample(trial)
    assert cand.spec == {"depth": 2, "widths": [8, 4], "pool": "avg"}
    assert cand.kd.soft_loss == "mse" and cand.kd.alpha == 0.5
    assert "temperature" not in cand.params  # condition false: parameter does not exist
    assert cand.train == {"lr": 0.005, "epochs": 5}


def test_condition_true_samples_the_parameter() -> None:
    space = _space(BASE)
    trial = optuna.trial.FixedTrial({"depth": 1, "widths_0": 4, "pool": "max", "soft_loss": "kl",
                                     "temperature": 3.0, "alpha": 0.9, "lr": 0.002})
    cand = space.sample(trial)
    assert cand.kd.temperature == 3.0


def test_from_params_round_trip_and_rejects_outside_values() -> None:
    space = load_space("cnn")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    cand = space.sample(trial)
    again = space.from_params(trial.params)
    assert again.spec == cand.spec and again.kd == cand.kd
    bad = dict(trial.params, kernel=7)
    with pytest.raises(SpaceError, match="outside the space"):
        space.from_params(bad)


def test_architecture_choices_expand_per_stage() -> None:
    choices = _space(BASE).architecture_choices()
    assert choices["depth"] == [1, 2, 3]
    assert choices["widths_0"] == choices["widths_2"] == [4, 8]


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(famly="cnn"), "did you mean 'family'"),
    (lambda r: r.update(family="vgg"), "unknown student family"),
    (lambda r: r["architecture"].update(depht={"int": [1, 2]}), "architecture.depht: unknown key"),
    (lambda r: r["architecture"].update(depth={"int": [4, 2]}), "low 4 > high 2"),
    (lambda r: r["architecture"].update(pool={"choice": []}), "non-empty list"),
    (lambda r: r["architecture"].update(depth={"int": [1.5, 2]}), "integers"),
    (lambda r: r["training"].update(lr={"float": [0.0, 1.0], "log": True}), "log range needs low > 0"),
    (lambda r: r["training"].update(lr={"float": [1e-3], "log": True}), r"\[low, high\]"),
    (lambda r: r["distillation"].update(alpha={"floot": [0, 1]}), "unknown key"),
    (lambda r: r["distillation"].update(alpha={"choice": [0.5], "float": [0, 1]}), "exactly one"),
    (lambda r: r["distillation"].update(soft_loss={"choice": ["kl", "fancy"]}), "soft_loss"),
    (lambda r: r["distillation"]["temperature"].update(when={"nothing": 1}), "not a parameter"),
    (lambda r: r["architecture"]["widths"].update(per_stage="pool"), "integer parameter"),
    (lambda r: r.update(training=[1, 2]), "expected a mapping"),
])
def test_validation_errors_name_file_and_key(mutate, message) -> None:
    raw = copy.deepcopy(BASE)
    mutate(raw)
    with pytest.raises(SpaceError, match=message) as info:
        _space(raw)
    assert str(info.value).startswith("test.yaml")


def test_load_space_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="unknown search space 'cnnn'.*did you mean 'cnn'"):
        load_space("cnnn")
    with pytest.raises(SpaceError, match="not found"):
        load_space(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: cnn\narchitecture: {depth: [1, 2\n")
    with pytest.raises(SpaceError, match="invalid YAML at line"):
        load_space(bad)
    good = tmp_path / "mine.yaml"
    good.write_text(yaml.safe_dump(BASE))
    assert load_space(good).name == "mine"


def test_yaml_with_python_tags_is_rejected(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("family: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(SpaceError, match="invalid YAML"):
        load_space(evil)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 50), st.floats(allow_nan=True),
                     st.text(max_size=6))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(
        ["choice", "int", "float", "fixed", "log", "step", "when", "per_stage", "x"]), inner,
        max_size=3)), max_leaves=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(group=st.sampled_from(["architecture", "distillation", "training"]),
       key=st.sampled_from(["depth", "widths", "pool", "alpha", "temperature", "lr", "epochs",
                            "soft_loss", "bogus"]),
       value=_values)
def test_malformed_specs_raise_only_space_error(group: str, key: str, value: object) -> None:
    raw = copy.deepcopy(BASE)
    raw[group][key] = value
    try:
        space = _space(raw)
    except SpaceError:
        return
    # whatever parsed must also sample without crashing in anything but our own error type
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    try:
        space.sample(study.ask())
    except (SpaceError, Exception) as exc:  # noqa: BLE001 - classify below
        assert isinstance(exc, SpaceError) or _is_config_error(exc), repr(exc)


def _is_config_error(exc: BaseException) -> bool:
    from autokd.errors import AutokdError

    return isinstance(exc, AutokdError)


@settings(max_examples=100, deadline=None)
@given(raw=st.one_of(_values, st.dictionaries(st.text(max_size=8), _values, max_size=4)))
def test_arbitrary_top_level_never_crashes(raw: object) -> None:
    try:
        _space(raw)  # type: ignore[arg-type]
    except SpaceError:
        pass
