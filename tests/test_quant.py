"""Fake-quantised training and the INT8 ONNX model (autokd.quant)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from autokd.errors import ConfigError
from autokd.models import build_student
from autokd.quant import (
    OrtModel,
    export_int8_onnx,
    freeze_observers,
    int8_weight_bytes,
    is_qat,
    prepare_qat,
    quantize_weight,
    rounding_penalty,
)
from autokd.teachers import load_checkpoint, save_checkpoint

CASES = [("cnn", {"depth": 2, "widths": 8}, (1, 8, 8)),
         ("cnn1d", {"depth": 2, "widths": 8, "pool": "stride"}, (1, 24)),
         ("mlp", {"depth": 2, "widths": 32}, (64,))]


def _qat(family: str, spec: dict, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = prepare_qat(build_student(family, spec, shape, 10))
    model.train()
    model(torch.randn(32, *shape))  # observe activation ranges
    return model.eval()


def test_rounding_penalty_matches_hand_computation() -> None:
    model = build_student("mlp", {"depth": 0}, (3,), 2)
    with torch.no_grad():  # the second row is on its grid exactly: it adds nothing
        model.head.weight.copy_(torch.tensor([[1.0, 0.3, -0.52], [2.0, -2.0, 0.0]]))
    prepare_qat(model)
    # scale = max|w| / 127 = 1/127: 0.3 -> 38.1 -> 38, -0.52 -> -66.04 -> -66, 1.0 exact
    expected = (0.1 / 127) ** 2 + (0.04 / 127) ** 2
    assert rounding_penalty(model).item() == pytest.approx(expected, rel=1e-4)
    rounding_penalty(model).backward()  # Q(W) is a fixed target: gradient 2 (W - Q(W))
    grad = model.head.weight.grad[0]
    assert grad[1].item() == pytest.approx(2 * 0.1 / 127, rel=1e-3)
    assert grad[0].item() == pytest.approx(0.0, abs=1e-7)


def test_weight_fake_quant_is_on_the_int8_grid_with_straight_through_gradient() -> None:
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    q = quantize_weight(w)
    scale = w.detach().abs().flatten(1).amax(1).reshape(-1, 1, 1, 1) / 127
    steps = q.detach() / scale
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.abs().max() <= 127 + 1e-4
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # STE: inside the range the gradient is 1


def test_prepare_qat_swaps_layers_in_place_and_refuses_other_families() -> None:
    model = build_student("cnn", {"depth": 2, "widths": 8}, (1, 8, 8), 10)
    params = [id(p) for p in model.parameters()]
    assert not is_qat(model)
    out = prepare_qat(model)
    assert out is model and is_qat(model) and model.family == "cnn" and model.spec["depth"] == 2
    assert [id(p) for p in model.parameters()] == params  # same Parameters: optimiser-safe
    assert prepare_qat(model) is model and len(list(model.parameters())) == len(params)
    other = build_student("resnet", {}, (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="not supported for family resnet"):
        prepare_qat(other)


def test_observers_track_while_training_and_stop_when_frozen() -> None:
    model = _qat("mlp", {"depth": 1, "widths": 8}, (4,))
    act = model.layers[0][0].act_quant
    model.train()
    model(torch.full((2, 4), 5.0))
    assert act.max_val.item() > 0.3  # moved towards 5
    freeze_observers(model)
    before = act.max_val.clone()
    model(torch.full((2, 4), 50.0))
    assert torch.equal(act.max_val, before)


@pytest.mark.parametrize(("family", "spec", "shape"), CASES)
def test_int8_onnx_matches_fake_quant_model(tmp_path: Path, family: str, spec: dict,
                                            shape: tuple[int, ...]) -> None:
    model = _qat(family, spec, shape)
    path = export_int8_onnx(model, torch.randn(2, *shape), tmp_path / "m.int8.onnx")
    proto = onnx.load(str(path))
    int8 = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    weights = [n for n, p in model.named_parameters() if n.endswith("weight") and p.dim() >= 2]
    assert sorted(i.name for i in int8 if i.name.endswith("_quantized")) == \
        sorted(f"{n}_quantized" for n in weights)
    assert not any(i.name in weights for i in proto.graph.initializer)  # no float copy left
    x = torch.randn(16, *shape)
    with torch.no_grad():
        ref, got = model(x), OrtModel(path)(x)
    assert got.shape == ref.shape  # dynamic batch
    assert (got - ref).abs().max().item() < 1e-2
    assert torch.equal(got.argmax(1), ref.argmax(1))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_int8_file_is_smaller_than_float_onnx(tmp_path: Path) -> None:
    model = _qat("mlp", {"depth": 2, "widths": 64}, (64,))
    path = export_int8_onnx(model, torch.randn(2, 64), tmp_path / "m.int8.onnx")
    float_path = tmp_path / "m.onnx"
    plain = build_student("mlp", {"depth": 2, "widths": 64}, (64,), 10).eval()
    torch.onnx.export(plain, (torch.randn(2, 64),), str(float_path), dynamo=False)
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    assert int8_weight_bytes(path) == weights
    assert path.stat().st_size < 0.4 * float_path.stat().st_size


def test_export_refuses_a_float_model(tmp_path: Path) -> None:
    model = build_student("mlp", {"depth": 1, "widths": 8}, (4,), 3)
    with pytest.raises(ConfigError, match="quantize: int8"):
        export_int8_onnx(model, torch.randn(2, 4), tmp_path / "m.onnx")


def test_checkpoint_round_trip_keeps_observed_scales(tmp_path: Path) -> None:
    model = _qat("cnn", {"depth": 1, "widths": 4}, (1, 8, 8))
    save_checkpoint(model, tmp_path / "s.pt")
    loaded, payload = load_checkpoint(tmp_path / "s.pt")
    assert payload["quantize"] == "int8" and is_qat(loaded)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
