"""Student families: every registered family builds, runs, exposes feature taps, and rejects
bad specs and inputs with a ``ConfigError`` (timm-style: parametrised over the registry)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from autokd.distill.hooks import FeatureHooks, taps_enabled
from autokd.errors import ConfigError
from autokd.models import FAMILIES, build_student, default_family, get_family, parse_student_arg

# the families autokd ships (tests may register stand-ins of their own); hf students are
# built from a Hugging Face teacher's config, so tests/test_hf.py covers them
SHIPPED = [n for n in FAMILIES.names()
           if getattr(FAMILIES.get(n).build, "__module__", "").startswith("autokd.")
           and n != "hf"]

# one matching input shape per family, and one of the wrong rank where a rank is required
INPUTS: dict[str, tuple[int, ...]] = {"cnn": (3, 9, 7), "cnn1d": (2, 20), "mlp": (13,),
                                      "mbv2": (3, 9, 7), "resnet": (2, 20),
                                      "transformer": (3, 9, 7)}
WRONG_RANK: dict[str, tuple[int, ...]] = {"cnn": (1, 40), "cnn1d": (1, 8, 8), "mbv2": (13,),
                                          "resnet": (1, 2, 8, 8), "transformer": (13,)}
SMALL: dict[str, dict[str, Any]] = {
    "cnn": {"depth": 3, "widths": [4, 8, 8]},
    "cnn1d": {"depth": 2, "widths": [4, 6], "kernel": 5},
    "mlp": {"depth": 2, "widths": [16, 8]},
    "mbv2": {"stages": 2, "depths": [1, 2], "widths": [8, 16], "se": [False, True]},
    "resnet": {"stages": 3, "depths": 1, "widths": [8, 16, 16]},
    "transformer": {"layers": 3, "hidden": 12, "heads": 3, "patch": 4},
}
# the key that counts stages (one feature tap and one width per stage)
COUNT: dict[str, str] = {"mbv2": "stages", "resnet": "stages", "transformer": "layers"}
# a spec key every family has, for the unknown-key message
KEY: dict[str, str] = {"transformer": "hidden"}


def _tap_widths(family: str) -> list[int]:
    """Channels of each feature tap: the per-stage widths, or a transformer's width per layer."""
    spec = SMALL[family]
    return spec["widths"] if "widths" in spec else [spec["hidden"]] * spec["layers"]
B, K = 5, 4


def test_every_family_has_test_inputs() -> None:
    assert set(SHIPPED) == set(INPUTS), "add an input shape for the new family"


@pytest.mark.parametrize("family", SHIPPED)
def test_family_builds_runs_and_backpropagates(family: str) -> None:
    torch.manual_seed(0)
    model = build_student(family, SMALL[family], INPUTS[family], K)
    assert model.family == family and model.num_classes == K
    assert model.input_shape == INPUTS[family]
    out = model(torch.randn(B, *INPUTS[family]))
    assert out.shape == (B, K) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("family", SHIPPED)
def test_feature_taps_are_captured(family: str) -> None:
    model = build_student(family, SMALL[family], INPUTS[family], K).eval()
    assert len(model.feature_taps) == SMALL[family][COUNT.get(family, "depth")]
    # a family that computes taps on demand (transformer) is asked to, as the trainer does
    with FeatureHooks(model, model.feature_taps) as hooks, taps_enabled(model, {"features"}):
        model(torch.randn(B, *INPUTS[family]))
        feats = hooks.features
    assert [f.shape[:2] for f in feats] == [(B, w) for w in _tap_widths(family)]


@pytest.mark.parametrize("family", SHIPPED)
def test_spec_is_normalised_and_rebuildable(family: str) -> None:
    model = build_student(family, SMALL[family], INPUTS[family], K)
    spec = model.spec
    if "widths" in spec:
        assert isinstance(spec["widths"], list)
        assert len(spec["widths"]) == spec[COUNT.get(family, "depth")]
    again = build_student(family, spec, INPUTS[family], K)
    assert again.spec == spec
    count = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in again.parameters()) == count


@pytest.mark.parametrize("family", SHIPPED)
def test_unknown_spec_key_lists_the_known_ones(family: str) -> None:
    with pytest.raises(ConfigError, match=rf"unknown .*bogus.*known: .*{KEY.get(family, 'widths')}"):
        build_student(family, {"bogus": 1}, INPUTS[family], K)


@pytest.mark.parametrize("family", sorted(WRONG_RANK))
def test_wrong_input_rank_is_rejected(family: str) -> None:
    with pytest.raises(ConfigError, match=r"need .*input.*shape"):
        build_student(family, {}, WRONG_RANK[family], K)


@pytest.mark.parametrize("spec", [
    {"depth": 0}, {"depth": 13}, {"depth": True}, {"depth": 2, "widths": [8]},
    {"widths": [8, -1]}, {"widths": 2.5}, {"pool": "median"}, {"activation": "swishy"},
    {"dropout": 1.0}, {"kernel": [3, 0]},
])
def test_bad_cnn_specs(spec: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        build_student("cnn", spec, (1, 8, 8), K)


@pytest.mark.parametrize("spec", [{"depth": -1}, {"depth": 2, "widths": [8]},
                                  {"dropout": -0.1}, {"activation": "nope"}])
def test_bad_mlp_specs(spec: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        build_student("mlp", spec, (13,), K)


def test_other_build_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown student family 'cnn2d'.*known: cnn, cnn1d"):
        build_student("cnn2d", {}, (1, 8, 8), K)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_student("mlp", {}, (13,), 1)


def test_width_shorthand_and_depth_zero_mlp() -> None:
    model = build_student("cnn", {"width": 6, "depth": 3}, (1, 8, 8), K)
    assert model.spec["widths"] == [6, 6, 6]
    linear = build_student("mlp", {"depth": 0}, (13,), K)
    assert linear.feature_taps == [] and sum(p.numel() for p in linear.parameters()) == 13 * K + K


def test_mlp_flattens_images_and_signals() -> None:
    for shape in ((1, 8, 8), (2, 20)):
        model = build_student("mlp", {"depth": 1, "widths": 8}, shape, K)
        assert model(torch.randn(B, *shape)).shape == (B, K)


def test_small_maps_stop_shrinking() -> None:
    """Deep CNNs on 8x8 inputs must not pool below 1x1 (pooling stops at size 1)."""
    model = build_student("cnn", {"depth": 6, "widths": 4}, (1, 8, 8), K).eval()
    with FeatureHooks(model, model.feature_taps) as hooks:
        model(torch.randn(2, 1, 8, 8))
        sizes = [f.shape[-1] for f in hooks.features]
    assert sizes == [4, 2, 1, 1, 1, 1]


@pytest.mark.parametrize("pool", ["max", "avg", "stride", "none"])
@pytest.mark.parametrize(("family", "shape"), [("cnn", (3, 9, 7)), ("cnn1d", (1, 40))])
def test_deep_nets_on_odd_sizes_run(family: str, shape: tuple[int, ...], pool: str) -> None:
    """Odd sizes round differently under pooling (down) and strided convs (up): 40 -> 5 -> 2."""
    model = build_student(family, {"depth": 7, "widths": 2, "pool": pool}, shape, K)
    assert model(torch.randn(2, *shape)).shape == (2, K)


def test_parse_student_arg() -> None:
    family, spec = parse_student_arg("cnn:depth=2,widths=8/16,pool=avg")
    assert (family, spec) == ("cnn", {"depth": 2, "widths": [8, 16], "pool": "avg"})
    model = build_student(family, spec, (1, 8, 8), 10)
    assert model.spec["widths"] == [8, 16] and model.spec["pool"] == "avg"
    assert parse_student_arg("mlp") == ("mlp", {})
    assert parse_student_arg("mlp:dropout=0.25,batch_norm=true,,") == (
        "mlp", {"dropout": 0.25, "batch_norm": True})


@pytest.mark.parametrize("text", ["vgg:depth=2", "cnn:depth", "cnn:=3", "", ":depth=2",
                                  "cnn:depth=2,width"])
def test_parse_student_arg_rejects_bad_strings(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_student_arg(text)
    assert "\n" not in str(info.value)


def test_parsed_but_invalid_values_fail_at_build() -> None:
    family, spec = parse_student_arg("cnn:depth=two")
    with pytest.raises(ConfigError, match="depth"):
        build_student(family, spec, (1, 8, 8), 10)


@pytest.mark.parametrize(("shape", "family"), [((1, 8, 8), "cnn"), ((1, 40), "cnn1d"),
                                               ((30,), "mlp")])
def test_default_family(shape: tuple[int, ...], family: str) -> None:
    assert default_family(shape) == family
    model = build_student(family, {}, shape, 3)
    assert math.prod(model(torch.randn(2, *shape)).shape) == 6


# -- the Family record: every registered family's facts agree with what it builds ------------
@pytest.mark.parametrize("family", SHIPPED)
def test_family_record_taps_and_defaults_match_the_model(family: str) -> None:
    record = get_family(family)
    model = build_student(family, SMALL[family], INPUTS[family], K)
    assert record.feature_taps(model.spec) == model.feature_taps
    assert set(record.normalise({})) == set(record.defaults)  # every key has a default
    assert record.normalise(dict(model.spec)) == model.spec  # normalising is idempotent


@pytest.mark.parametrize("family", SHIPPED)
def test_family_record_space_teacher_and_supernet_are_usable(family: str) -> None:
    from autokd.space import load_space

    record = get_family(family)
    assert load_space(record.space_name).family == family  # a bundled YAML space exists
    if record.teacher is not None:  # the default teacher builds on this family's inputs
        build_student(family, record.teacher.spec, INPUTS[family], K)
    if record.supernet is not None:
        assert set(record.supernet.relaxable) <= set(record.defaults)


@pytest.mark.parametrize("kind", ["image", "signal", "tabular", "tokens"])
def test_every_input_kind_has_a_default_family(kind: str) -> None:
    from autokd.models import family_for

    assert kind in family_for(kind).default_for
