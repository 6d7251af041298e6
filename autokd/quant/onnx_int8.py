"""The deployed INT8 model: a QDQ ONNX file with int8 weights, and an ONNX Runtime runner.

How the file is made: a copy of the QAT student is put in *export form* (each weight replaced
by its exact grid value ``Q(W)``, each activation quantiser with its frozen scale as a
constant), traced by the TorchScript-based ONNX exporter (as ``autokd.export`` does for float
students), then every quantised weight initialiser ``W`` (float32) is replaced by
``DequantizeLinear(W_int8, scale_c, 0, axis=0)``. ``Q(W) / scale_c`` is an integer, so the
int8 values are exact and the file holds 1 byte per weight. Activation Q/DQ pairs carry the
QAT scales, so ONNX Runtime computes what the fake-quantised model computed, up to float
summation order. BatchNorm stays a float node (the exporter's Conv+BN folding is switched off:
it would move the weights off their int8 grid).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autokd.errors import ConfigError
from autokd.quant.fake import ACT_QRANGE, ActQuant, is_qat, quant_layers, weight_scale

__all__ = ["ONNX_OPSET", "OrtModel", "export_int8_onnx", "int8_weight_bytes"]

ONNX_OPSET = 17


class _FrozenAct(nn.Module):
    """An ``ActQuant`` with its scale and zero point as Python numbers (ONNX constants)."""

    def __init__(self, act: ActQuant) -> None:
        super().__init__()
        scale, zero = act.qparams()
        self.scale, self.zero = float(scale), int(zero)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero, *ACT_QRANGE)


def _plain_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer with its (already grid-valued) weight used as is."""
    x = layer.act_quant(x)
    if isinstance(layer, nn.Linear):
        return F.linear(x, layer.weight, layer.bias)
    return layer._conv_forward(x, layer.weight, layer.bias)


def _export_form(model: nn.Module) -> tuple[nn.Module, dict[str, np.ndarray]]:
    """A copy whose weights are ``Q(W)`` and whose activation scales are constants; returns it
    and ``{weight initialiser name: per-channel scale}``."""
    twin = copy.deepcopy(model).cpu().eval()
    scales = {}
    for name, layer in quant_layers(twin):
        with torch.no_grad():
            scale = weight_scale(layer.weight)  # (C_out,)
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            grid = torch.clamp(torch.round(layer.weight / scale.reshape(shape)), -127, 127)
            layer.weight.copy_(grid * scale.reshape(shape))
        layer.act_quant = _FrozenAct(layer.act_quant)
        layer.forward = _plain_forward.__get__(layer)  # type: ignore[method-assign]
        scales[f"{name}.weight"] = scale.numpy().astype(np.float32)
    return twin, scales


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning, UserWarning, torch.jit.TracerWarning):
            warnings.simplefilter("ignore", category)
        yield


def _to_int8_weights(graph: object, scales: dict[str, np.ndarray]) -> None:
    """Replace each float weight initialiser named in ``scales`` by int8 + DequantizeLinear."""
    from onnx import helper, numpy_helper

    inits = {init.name: init for init in graph.initializer}
    missing = [n for n in scales if n not in inits]
    if missing:
        raise ConfigError(f"int8 export: weight(s) {', '.join(missing)} not found in the graph")
    new_nodes = []
    for name, scale in scales.items():
        w = numpy_helper.to_array(inits[name])
        shape = (-1,) + (1,) * (w.ndim - 1)
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        graph.initializer.remove(inits[name])
        graph.initializer.extend([
            numpy_helper.from_array(q, f"{name}_quantized"),
            numpy_helper.from_array(scale, f"{name}_scale"),
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_zero_point"),
        ])
        out = f"{name}_dequantized"
        new_nodes.append(helper.make_node(
            "DequantizeLinear", [f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"],
            [out], name=f"{name}_DequantizeLinear", axis=0))
        for node in graph.node:
            for i, inp in enumerate(node.input):
                if inp == name:
                    node.input[i] = out
    nodes = new_nodes + list(graph.node)  # DQ nodes read only initialisers: first is topological
    del graph.node[:]
    graph.node.extend(nodes)


def export_int8_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Write the QAT student ``model`` as a QDQ ONNX model with int8 weight initialisers.

    Input ``input`` and output ``logits``, dynamic batch; ``example`` is a batch for tracing.
    The model is not changed (a copy is exported).

    Raises:
        ConfigError: ``model`` was not prepared with ``prepare_qat``.
    """
    import onnx

    if not is_qat(model):
        raise ConfigError("int8 export needs a quantisation-aware student (quantize: int8)")
    twin, scales = _export_form(model)
    path = Path(path)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}}
    with _quiet(), torch.no_grad():
        torch.onnx.export(twin, (example.cpu(),), str(path), dynamo=False,
                          input_names=["input"], output_names=["logits"], dynamic_axes=axes,
                          opset_version=ONNX_OPSET, training=torch.onnx.TrainingMode.PRESERVE)
    proto = onnx.load(str(path))
    _to_int8_weights(proto.graph, scales)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def int8_weight_bytes(path: str | Path) -> int:
    """Bytes of the int8 weight initialisers in an exported file (the ~4x smaller part)."""
    import onnx

    proto = onnx.load(str(path))
    return sum(len(i.raw_data) for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8
               and i.name.endswith("_quantized"))


class OrtModel(nn.Module):
    """An ONNX Runtime CPU session behind the ``nn.Module`` call (float32 in, logits out), so
    the INT8 model is evaluated and timed by the same code as a PyTorch student."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().numpy().astype(np.float32, copy=False)  # (B, *input_shape)
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0])  # (B, K)
