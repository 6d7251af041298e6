"""Fake-quantised training and the INT8 ONNX model (autokd.quant)."""

from __future__ import annotations

import copy
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
    ort_optimized_ops,
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
    # a layer fed through max-pooling alone reuses the previous output's grid; the head, fed
    # by the global pool, reuses the pool's; the logits stay float
    assert model.stages[1][0].act_quant.leader is model.stages[0][0].out.act_quant
    assert model.head.act_quant.leader is model.pool.act_quant and model.head.out is None
    avg = prepare_qat(build_student("cnn", {"depth": 2, "widths": 8, "pool": "avg"}, (1, 8, 8), 3))
    assert avg.stages[1][0].act_quant.leader is None  # an average is off the grid: own range
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
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}  # folded
    x = torch.randn(16, *shape)
    with torch.no_grad():
        ref, got = model(x), OrtModel(path)(x)
    assert got.shape == ref.shape  # dynamic batch
    assert (got - ref).abs().max().item() < 1e-2
    assert torch.equal(got.argmax(1), ref.argmax(1))
    # ONNX Runtime runs integer kernels: nothing is dequantised back to float to run
    ops = ort_optimized_ops(path)
    kernel = "QGemm" if family == "mlp" else "QLinearConv"
    assert ops[kernel] == (3 if family == "mlp" else 2) and ops["QuantizeLinear"] == 1
    assert not ops["DequantizeLinear"] and not ops["Conv"] and not ops["Gemm"]


def test_layers_with_equal_biases_keep_their_own_grids(tmp_path: Path) -> None:
    """Two stages whose folded biases are equal (BN at beta 0, mean 0: both 0) must not be
    merged into one initialiser by the exporter: each has its own int32 scale."""
    model = _qat("cnn", {"depth": 2, "widths": 8}, (1, 8, 8))
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
            bn.bias.zero_()
    path = export_int8_onnx(model, torch.randn(2, 1, 8, 8), tmp_path / "m.int8.onnx")
    graph = onnx.load(str(path)).graph
    assert [v.name for v in graph.input] == ["input"]  # initialisers are constants, not inputs
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(OrtModel(path)(x).argmax(1), model(x).argmax(1))
    assert ort_optimized_ops(path)["QLinearConv"] == 2


def test_batchnorm_is_folded_into_the_quantised_conv(tmp_path: Path) -> None:
    torch.manual_seed(0)
    plain = build_student("cnn", {"depth": 1, "widths": 4}, (1, 6, 6), 3).eval()
    bn = plain.stages[0][1]
    with torch.no_grad():  # statistics far from the identity, so folding must do something
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.2, 4)
        bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
    model = prepare_qat(copy.deepcopy(plain)).eval()
    assert {k for k in model.state_dict() if ".act_quant." not in k} == set(plain.state_dict())
    x = torch.randn(32, 1, 6, 6)
    with torch.no_grad():
        ref, got = plain(x), model(x)  # the first eval call observes the ranges
    assert (got - ref).abs().max().item() < 0.05 * ref.abs().max().item()  # rounding only
    path = export_int8_onnx(model, x[:2], tmp_path / "m.int8.onnx")
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    factor = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    folded = plain.stages[0][0].weight.detach() * factor.reshape(-1, 1, 1, 1)
    scale = inits["stages.0.0.weight_scale"]
    np.testing.assert_allclose(inits["stages.0.0.weight_quantized"] * scale.reshape(-1, 1, 1, 1),
                               folded.numpy(), atol=float(scale.max()) / 2 + 1e-7)
    bias = (bn.bias - bn.running_mean * factor).detach().numpy()  # the conv had none
    assert inits["stages.0.0.bias_quantized"].dtype == np.int32
    np.testing.assert_allclose(inits["stages.0.0.bias_quantized"] * inits["stages.0.0.bias_scale"],
                               bias, atol=float(inits["stages.0.0.bias_scale"].max()))
    with torch.no_grad():  # up to a rounding tie now and then (integer vs float requantising)
        ort_out = OrtModel(path)(x)
    assert (ort_out - got).abs().max().item() < 1e-2
    assert torch.equal(ort_out.argmax(1), got.argmax(1))


def test_folded_batchnorm_trains_on_batch_statistics_until_frozen() -> None:
    model = _qat("cnn", {"depth": 1, "widths": 4}, (1, 6, 6))
    bn = model.stages[0][1]
    model.train()
    x = torch.randn(16, 1, 6, 6) * 3 + 1
    before = bn.running_mean.clone()
    model(x)
    assert not torch.equal(bn.running_mean, before)  # BN statistics still learn
    freeze_observers(model)
    before, tracked = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    with torch.no_grad():
        train_out = model(x)
    assert torch.equal(bn.running_mean, before) and torch.equal(bn.num_batches_tracked, tracked)
    with torch.no_grad():  # frozen: training runs exactly the deployed (folded) model
        assert torch.equal(train_out, model.eval()(x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_int8_file_is_smaller_than_float_onnx(tmp_path: Path) -> None:
    model = _qat("mlp", {"depth": 2, "widths": 64}, (64,))
    path = export_int8_onnx(model, torch.randn(2, 64), tmp_path / "m.int8.onnx")
    float_path = tmp_path / "m.onnx"
    plain = build_student("mlp", {"depth": 2, "widths": 64}, (64,), 10).eval()
    torch.onnx.export(plain, (torch.randn(2, 64),), str(float_path), dynamo=False)
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    assert int8_weight_bytes(path) == weights
    assert path.stat().st_size < 0.35 * float_path.stat().st_size


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
