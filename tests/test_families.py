"""The ``mbv2`` and ``resnet`` families: structure per the spec schema, 2-D and 1-D builds,
strides, residuals, SE, bad specs, and exact costs (contractions and elementwise work)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from autokd.cost import count_flops, elementwise_flops, measure_cost, torch_flop_count
from autokd.distill.hooks import FeatureHooks
from autokd.errors import ConfigError
from autokd.models import FAMILIES, build_student
from autokd.models.mbv2 import InvertedResidual, SqueezeExcite
from autokd.models.resnet import BasicBlock

K = 10


def _ceil_half(side: int) -> int:
    return (side + 1) // 2


# -- structure ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("shape", "sides"), [
    ((1, 28, 28), [14, 7, 7]),  # MNIST: stem stride 1, stage strides 2, 2, then 7 < 8 stays
    ((1, 40), [20, 10, 5]),  # MNIST-1D
    ((3, 64, 64), [16, 8, 4]),  # the stem strides on inputs >= 64
    ((1, 8, 8), [4, 4, 4]),  # digits: maps never go below 4
])
def test_mbv2_strides_follow_the_input(shape: tuple[int, ...], sides: list[int]) -> None:
    model = build_student("mbv2", {}, shape, K).eval()
    with FeatureHooks(model, model.feature_taps) as hooks:
        model(torch.randn(2, *shape))
        feats = hooks.features
    assert [f.shape[-1] for f in feats] == sides
    assert [f.dim() for f in feats] == [len(shape) + 1] * 3
    assert [f.shape[1] for f in feats] == [16, 24, 32]


def test_mbv2_rank_picks_the_layers() -> None:
    image = build_student("mbv2", {"se": True}, (1, 28, 28), K)
    signal = build_student("mbv2", {"se": True}, (1, 40), K)
    kinds = {type(m) for m in image.modules()}
    assert nn.Conv2d in kinds and nn.Conv1d not in kinds and nn.AdaptiveAvgPool2d in kinds
    kinds = {type(m) for m in signal.modules()}
    assert nn.Conv1d in kinds and nn.Conv2d not in kinds and nn.AdaptiveAvgPool1d in kinds


def test_inverted_residual_layers_and_residual() -> None:
    block = InvertedResidual(2, 16, 16, expansion=6, kernel=5, stride=1, se=True,
                             activation="hardswish")
    assert list(dict(block.body.named_children())) == ["expand", "depthwise", "se", "project"]
    dw = block.body.depthwise[0]
    assert (dw.groups, dw.in_channels, dw.kernel_size, dw.padding) == (96, 96, (5, 5), (2, 2))
    assert isinstance(block.body.depthwise[2], nn.Hardswish)
    assert len(block.body.project) == 2  # linear bottleneck: conv -> BN, no activation
    assert block.residual
    x = torch.randn(2, 16, 6, 6)
    block.eval()
    assert torch.allclose(block(x), x + block.body(x))
    no_expand = InvertedResidual(1, 8, 16, expansion=1, kernel=3, stride=2, se=False,
                                 activation="relu")
    assert "expand" not in dict(no_expand.body.named_children()) and not no_expand.residual
    assert no_expand(torch.randn(2, 8, 9)).shape == (2, 16, 5)


def test_squeeze_excite_width_and_gate() -> None:
    se = SqueezeExcite(2, 96)
    assert se.reduce.out_channels == 24 and isinstance(se.gate, nn.Hardsigmoid)
    assert SqueezeExcite(1, 16).reduce.out_channels == 8  # make_divisible(4, 8) == 8
    x = torch.randn(2, 96, 4, 4)
    gate = se.gate(se.expand(se.act(se.reduce(x.mean((2, 3), keepdim=True)))))
    assert torch.allclose(se(x), x * gate, atol=1e-6)


def test_mbv2_head_conv_and_module_paths() -> None:
    model = build_student("mbv2", {"head_width": 64, "dropout": 0.2}, (1, 28, 28), K)
    names = dict(model.named_children())
    assert list(names) == ["stem", "stages", "head_conv", "pool", "dropout", "classifier"]
    assert model.classifier.in_features == 64 and model.dropout.p == 0.2
    assert "head_conv" not in dict(build_student("mbv2", {}, (1, 28, 28), K).named_children())


@pytest.mark.parametrize(("stem", "shape", "side"), [
    ("conv3", (1, 28, 28), 28), ("conv3x3", (1, 28, 28), 28), ("conv7", (1, 28, 28), 28),
    ("conv7", (3, 64, 64), 16), ("conv3", (1, 40), 40), ("conv7", (1, 80), 20),
])
def test_resnet_stems_and_strides(stem: str, shape: tuple[int, ...], side: int) -> None:
    model = build_student("resnet", {"stem": stem, "depths": [1, 2, 1]}, shape, K).eval()
    with FeatureHooks(model, model.feature_taps) as hooks:
        model(torch.randn(2, *shape))
        sides = [f.shape[-1] for f in hooks.features]
    expected = [side]
    for _ in range(2):  # stages after the first halve the map while it is >= 8
        expected.append(_ceil_half(expected[-1]) if expected[-1] >= 8 else expected[-1])
    assert sides == expected
    pools = [m for m in model.stem.modules() if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d))]
    assert len(pools) == (1 if stem == "conv7" and side < min(shape[1:]) else 0)


def test_resnet_projection_shortcut_only_when_shape_changes() -> None:
    same, wider = BasicBlock(2, 16, 16, 1), BasicBlock(2, 16, 32, 1)
    strided = BasicBlock(1, 16, 16, 2)
    assert isinstance(same.shortcut, nn.Identity)
    assert isinstance(wider.shortcut[0], nn.Conv2d) and wider.shortcut[0].kernel_size == (1, 1)
    assert isinstance(strided.shortcut[0], nn.Conv1d) and strided.shortcut[0].stride == (2,)
    x = torch.randn(2, 16, 8, 8)
    same.eval()
    assert torch.allclose(same(x), torch.relu(same.conv2(same.conv1(x)) + x))


@pytest.mark.parametrize(("family", "spec"), [
    ("mbv2", {"stem_width": 12}), ("mbv2", {"stem_width": 0}), ("mbv2", {"stages": 7}),
    ("mbv2", {"stages": 2, "depths": [1]}), ("mbv2", {"depths": 0}), ("mbv2", {"widths": 20}),
    ("mbv2", {"expansion": 2}), ("mbv2", {"kernel": 4}), ("mbv2", {"se": "yes"}),
    ("mbv2", {"activation": "gelu"}), ("mbv2", {"head_width": 10}), ("mbv2", {"dropout": 1.0}),
    ("mbv2", {"expansion": True}), ("resnet", {"stem": "conv5"}), ("resnet", {"stages": 0}),
    ("resnet", {"depths": [1, 0, 1]}), ("resnet", {"widths": [8, 16]}),
    ("resnet", {"dropout": -0.1}), ("resnet", {"stem_width": 2.5}),
])
def test_bad_specs_are_config_errors(family: str, spec: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        build_student(family, spec, (1, 28, 28), K)
    assert "\n" not in str(info.value)


def test_per_stage_keys_broadcast_and_normalise() -> None:
    model = build_student("mbv2", {"stages": 2, "widths": 24, "se": True,
                                   "activation": ["relu", "hardswish", "relu"]}, (1, 40), K)
    s = model.spec
    assert s["widths"] == [24, 24] and s["se"] == [True, True]
    assert s["activation"] == ["relu", "hardswish"] and s["depths"] == [2, 2]
    assert build_student("mbv2", s, (1, 40), K).spec == s


# -- costs ---------------------------------------------------------------------------------------
def _make_div8(value: float) -> int:
    rounded = max(8, int(value + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * value else rounded


def _mbv2_elementwise(spec: dict[str, Any], shape: tuple[int, ...]) -> int:
    """Hand count from the spec (rules: autokd.cost.flops docstring); square inputs."""
    dim, side = len(shape) - 1, shape[1]
    side = _ceil_half(side) if side >= 64 else side
    c, total = spec["stem_width"], 0
    total += 3 * c * side**dim  # stem BN (2) + activation (1)
    for i in range(spec["stages"]):
        for j in range(spec["depths"][i]):
            c_out, e = spec["widths"][i], spec["expansion"][i]
            c_exp, area_in = c * e, side**dim
            stride = 2 if j == 0 and side >= 8 else 1
            side = _ceil_half(side) if stride == 2 else side
            area = side**dim
            total += 3 * c_exp * area_in if e != 1 else 0  # expand BN + act
            total += 3 * c_exp * area  # depthwise BN + act
            if spec["se"][i]:  # pool, ReLU on the squeeze, hard-sigmoid, scale multiply
                total += c_exp * area + _make_div8(c_exp / 4) + c_exp + c_exp * area
            total += 2 * c_out * area  # project BN
            total += c_out * area if stride == 1 and c == c_out else 0  # residual add
            c = c_out
    if spec["head_width"]:
        c = spec["head_width"]
        total += 3 * c * side**dim
    return total + c * side**dim  # global pool


def _resnet_elementwise(spec: dict[str, Any], shape: tuple[int, ...]) -> int:
    dim, side = len(shape) - 1, shape[1]
    w, total = spec["stem_width"], 0
    if spec["stem"] == "conv3x3":
        mid = max(8, w // 2)
        total += 2 * 3 * mid * side**dim + 3 * w * side**dim
    elif spec["stem"] == "conv7" and side >= 64:
        side = _ceil_half(side)
        total += 3 * w * side**dim
        side = _ceil_half(side)
        total += w * side**dim * 3**dim  # 3x3 max pool: window x outputs
    else:
        total += 3 * w * side**dim
    c = w
    for i in range(spec["stages"]):
        for j in range(spec["depths"][i]):
            c_out = spec["widths"][i]
            stride = 2 if i > 0 and j == 0 and side >= 8 else 1
            side = _ceil_half(side) if stride == 2 else side
            area = c_out * side**dim
            total += 3 * area + 2 * area  # conv1 BN + ReLU, conv2 BN
            total += 2 * area if stride != 1 or c != c_out else 0  # projection BN
            total += 2 * area  # residual add, ReLU
            c = c_out
    return total + c * side**dim


MBV2_CASES = [
    ({}, (1, 28, 28)),
    ({"se": True, "activation": "hardswish", "expansion": [1, 4, 6], "kernel": [3, 5, 7]},
     (1, 28, 28)),
    ({"stages": 2, "depths": [1, 3], "widths": [16, 16], "se": [False, True],
      "head_width": 32}, (1, 40)),
    ({"stem_width": 8, "stages": 3, "expansion": 1, "widths": [8, 8, 16], "se": True},
     (3, 64, 64)),
]
RESNET_CASES = [
    ({}, (1, 28, 28)), ({"stem": "conv3x3", "depths": 2}, (1, 40)),
    ({"stem": "conv7", "widths": [8, 16, 16]}, (3, 64, 64)), ({"stem": "conv7"}, (1, 80)),
]


@pytest.mark.parametrize(("family", "spec", "shape"), [
    *[("mbv2", s, x) for s, x in MBV2_CASES], *[("resnet", s, x) for s, x in RESNET_CASES]])
def test_flops_are_exact(family: str, spec: dict[str, Any], shape: tuple[int, ...]) -> None:
    model = build_student(family, spec, shape, K)
    assert count_flops(model, shape) == torch_flop_count(model, shape)  # conv + linear MACs
    hand = (_mbv2_elementwise if family == "mbv2" else _resnet_elementwise)(model.spec, shape)
    assert elementwise_flops(model, shape) == hand
    assert measure_cost(model, shape, latency=False).params == sum(
        p.numel() for p in model.parameters())


def test_elementwise_counts_single_ops_by_hand() -> None:
    net = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False), nn.BatchNorm2d(1), nn.Hardswish(),
                        nn.MaxPool2d(3, 2, 1))
    # conv 3x3 on 5x5 -> 9 outputs: BN 18, hard-swish 9, max pool 2x2 outputs x 9 reads
    assert count_flops(net, (1, 5, 5)) == 81 and elementwise_flops(net, (1, 5, 5)) == 63
    gate = nn.Sequential(nn.Conv1d(2, 2, 1), nn.Hardsigmoid(), nn.AdaptiveAvgPool1d(1))
    assert elementwise_flops(gate, (2, 7)) == 14 + 14  # hard-sigmoid + global pool, no bias
    bad = _mbv2_elementwise(build_student("mbv2", {"se": True}, (1, 28, 28), K).spec,
                            (1, 28, 28))
    model = build_student("mbv2", {"se": False}, (1, 28, 28), K)
    assert elementwise_flops(model, (1, 28, 28)) != bad  # SE work is seen


@pytest.mark.parametrize("family", [n for n in FAMILIES.names() if n != "hf"])  # test_hf.py
def test_cost_report_for_every_family(family: str) -> None:
    shape = {"mlp": (13,), "cnn1d": (1, 40)}.get(family, (1, 12, 12))
    model = build_student(family, {}, shape, K)
    report = measure_cost(model, shape, latency=False)
    assert report.flops == torch_flop_count(model, shape) > 0
    assert report.params == sum(p.numel() for p in model.parameters())
    assert report.bytes > 4 * report.params
