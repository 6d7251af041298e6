"""The deployed INT8 model: a QDQ ONNX file with int8 weights, and an ONNX Runtime runner.

How the file is made: a copy of the QAT student is put in *export form* (each BatchNorm folded
into its conv/linear, each folded weight replaced by its exact grid value ``Q(W)``, each bias by
its int32 grid value, each activation quantiser's frozen scale a constant), traced by the
TorchScript-based ONNX exporter (as ``autokd.export`` does for float students), then every
quantised weight initialiser becomes ``DequantizeLinear(W_int8, scale_c, 0, axis=0)`` and every
bias ``DequantizeLinear(b_int32, s_in * s_w)``. The values are exact grid points, so the file
holds 1 byte per weight and ONNX Runtime computes what the fake-quantised model computed.

Why this form: it is the QDQ pattern ``DQ -> Conv/Gemm -> (Relu) -> Q`` that ONNX Runtime's
QDQ transformer fuses into integer kernels (QLinearConv, QGemm, QLinearGlobalAveragePool);
``ort_optimized_ops`` shows what it made of a file. Redundant ``Q -> DQ -> Q -> DQ`` pairs with
equal parameters are dropped and intermediate names shortened, since for a student of a few
thousand weights the graph's structure is a large share of the file.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autokd.errors import ConfigError
from autokd.quant.fake import (
    ACT_QRANGE,
    INT32_RANGE,
    ActQuant,
    is_qat,
    quant_layers,
    weight_scale,
)

__all__ = ["ONNX_OPSET", "PAD_ID_KEY", "OrtModel", "export_float_onnx", "export_int8_onnx",
           "int8_weight_bytes", "ort_optimized_ops"]

ONNX_OPSET = 17
PAD_ID_KEY = "autokd.pad_id"  # ONNX metadata: the id whose positions the attention mask hides


class _FrozenAct(nn.Module):
    """An ``ActQuant`` with its scale and zero point as Python numbers (ONNX constants)."""

    def __init__(self, act: ActQuant) -> None:
        super().__init__()
        scale, zero = act.qparams()
        self.scale, self.zero = float(scale), int(zero)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero, *ACT_QRANGE)


def _plain_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer as deployed: its weight and bias already on their grids, no BatchNorm."""
    y = layer._op(layer.act_quant(x), layer.weight, layer.bias)
    return layer.out(y) if layer.out is not None else y


def _export_form(model: nn.Module) -> tuple[nn.Module, dict[str, np.ndarray]]:
    """A copy whose weights are ``Q(W_folded)``, biases on the int32 grid, activation scales
    constants; returns it and ``{initialiser name: per-channel scale}`` (weights and biases)."""
    twin = copy.deepcopy(model).cpu().eval()
    scales = {}
    for name, layer in quant_layers(twin):
        with torch.no_grad():
            w, b = layer.folded()
            scale = weight_scale(w)  # (C_out,)
            shape = (-1,) + (1,) * (w.dim() - 1)
            grid = torch.clamp(torch.round(w / scale.reshape(shape)), -127, 127)
            layer.weight = nn.Parameter(grid * scale.reshape(shape))
            if b is not None:
                b_scale = layer.bias_scale(scale).reshape(-1)  # (C_out,)
                layer.bias = nn.Parameter(torch.round(b / b_scale) * b_scale)
                scales[f"{name}.bias"] = b_scale.numpy().astype(np.float32)
        object.__setattr__(layer, "bn", None)
        scales[f"{name}.weight"] = scale.numpy().astype(np.float32)
    for m in list(twin.modules()):  # constants after every bias used the live scales
        if hasattr(m, "act_quant") and isinstance(m.act_quant, ActQuant):
            m.act_quant = _FrozenAct(m.act_quant)
    for _, layer in quant_layers(twin):
        layer.forward = _plain_forward.__get__(layer)  # type: ignore[method-assign]
    return twin, scales


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning, UserWarning, torch.jit.TracerWarning):
            warnings.simplefilter("ignore", category)
        yield


def _drop_initializer_inputs(graph: object) -> None:
    """Initialisers listed as graph inputs could be overridden at run time, so ONNX Runtime
    would not fold or fuse them: keep only the real input."""
    inits = {init.name for init in graph.initializer}
    keep = [v for v in graph.input if v.name not in inits]
    del graph.input[:]
    graph.input.extend(keep)


def _to_int8_weights(graph: object, scales: dict[str, np.ndarray]) -> None:
    """Replace each float initialiser named in ``scales`` by its integer grid + DequantizeLinear:
    weights as int8 (zero point 0), biases as int32 (scale ``s_in * s_w``, what QLinearConv
    and QGemm take)."""
    from onnx import helper, numpy_helper

    inits = {init.name: init for init in graph.initializer}
    missing = [n for n in scales if n not in inits]
    if missing:
        raise ConfigError(f"int8 export: weight(s) {', '.join(missing)} not found in the graph")
    new_nodes = []
    for name, scale in scales.items():
        w = numpy_helper.to_array(inits[name])
        shape = (-1,) + (1,) * (w.ndim - 1)
        steps = np.round(w / scale.reshape(shape))
        graph.initializer.remove(inits[name])
        graph.initializer.extend([numpy_helper.from_array(scale, f"{name}_scale")])
        if name.endswith(".bias"):
            q = numpy_helper.from_array(np.clip(steps, *INT32_RANGE).astype(np.int32),
                                        f"{name}_quantized")
            inputs = [q.name, f"{name}_scale"]
        else:
            q = numpy_helper.from_array(np.clip(steps, -127, 127).astype(np.int8),
                                        f"{name}_quantized")
            graph.initializer.append(numpy_helper.from_array(np.zeros(scale.shape, np.int8),
                                                             f"{name}_zero_point"))
            inputs = [q.name, f"{name}_scale", f"{name}_zero_point"]
        graph.initializer.append(q)
        out = f"{name}_dequantized"
        new_nodes.append(helper.make_node("DequantizeLinear", inputs, [out],
                                          name=f"{name}_DequantizeLinear", axis=0))
        for node in graph.node:
            for i, inp in enumerate(node.input):
                if inp == name:
                    node.input[i] = out
    nodes = new_nodes + list(graph.node)  # DQ nodes read only initialisers: first is topological
    del graph.node[:]
    graph.node.extend(nodes)


def _const_values(graph: object) -> dict[str, bytes]:
    """Constant and initialiser tensors by value name, as comparable bytes (dtype + data)."""
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return {k: v.dtype.str.encode() + v.tobytes() for k, v in out.items()}


def _drop_double_qdq(graph: object) -> None:
    """Remove ``Q -> DQ -> Q' -> DQ'`` where Q' re-quantises with the same scale and zero point
    (a layer's input quantiser following the previous output with nothing in between)."""
    values = _const_values(graph)
    producer = {o: n for n in graph.node for o in n.output}
    rename: dict[str, str] = {}
    dead = set()
    for q in graph.node:
        dq = producer.get(q.input[0]) if q.op_type == "QuantizeLinear" else None
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        first = producer.get(dq.input[0])
        same = [values.get(a) for a in q.input[1:3]] == [values.get(b) for b in dq.input[1:3]]
        if first is None or first.op_type != "QuantizeLinear" or not same:
            continue
        for dq2 in (n for n in graph.node if n.op_type == "DequantizeLinear" and
                    n.input[0] == q.output[0]):
            rename[dq2.output[0]] = dq.output[0]
            dead.add(id(dq2))
        dead.add(id(q))
    nodes = [n for n in graph.node if id(n) not in dead]
    for node in nodes:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    used = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    nodes = [n for n in nodes if n.op_type != "Constant" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(nodes)


def _short_names(graph: object) -> None:
    """Short intermediate value names, no node names or doc strings: for a student of a few
    thousand weights, the exporter's long scoped names are a large share of the file."""
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | \
        {i.name for i in graph.initializer}
    names: dict[str, str] = {}
    for node in graph.node:
        node.name, node.doc_string = "", ""
        for i, name in enumerate(node.output):
            if name not in keep:
                names[name] = node.output[i] = f"t{len(names)}"
        for i, name in enumerate(node.input):
            node.input[i] = names.get(name, name)
    del graph.value_info[:]


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
        # keep_initializers_as_inputs: the exporter would otherwise merge initialisers of
        # equal value (two layers' biases both on 0 after BN folding) into one, and each needs
        # its own int8/int32 grid and scale; the extra graph inputs are removed below
        torch.onnx.export(twin, (example.cpu(),), str(path), dynamo=False,
                          input_names=["input"], output_names=["logits"], dynamic_axes=axes,
                          opset_version=ONNX_OPSET, training=torch.onnx.TrainingMode.PRESERVE,
                          keep_initializers_as_inputs=True)
    proto = onnx.load(str(path))
    _drop_initializer_inputs(proto.graph)
    _to_int8_weights(proto.graph, scales)
    _drop_double_qdq(proto.graph)
    _short_names(proto.graph)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def export_float_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Write a float student as ONNX with the same names, opset and dynamic batch as the INT8
    file, so the two are costed in the same runtime (``autokd.quant.deploy``)."""
    path = Path(path)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}}
    with _quiet(), torch.no_grad():
        torch.onnx.export(model, (example.cpu(),), str(path), dynamo=False,
                          input_names=["input"], output_names=["logits"], dynamic_axes=axes,
                          opset_version=ONNX_OPSET)
    return path


def int8_weight_bytes(path: str | Path) -> int:
    """Bytes of the int8 weight initialisers in an exported file (the ~4x smaller part)."""
    import onnx

    proto = onnx.load(str(path))
    return sum(len(i.raw_data) for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8
               and i.name.endswith("_quantized"))


def ort_optimized_ops(path: str | Path) -> Counter[str]:
    """Operator counts of the graph ONNX Runtime runs after its optimisations (CPU provider):
    whether the QDQ pattern became integer kernels (QLinearConv, QGemm) or stayed float."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3  # the "hardware specific optimizations" notice
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)


class OrtModel(nn.Module):
    """An ONNX Runtime CPU session behind the ``nn.Module`` call, so an ONNX file (float or
    INT8) is evaluated and timed by the same code as PyTorch (``autokd.cost.measure_latency``).

    Token-id models take int64 ids; a two-input model (``input_ids``, ``attention_mask``, as
    Hugging Face tooling deploys it) gets ``mask = ids != pad_id``, the id its metadata names.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        self.dtype = np.int64 if "int" in inputs[0].type else np.float32
        self.mask_name = inputs[1].name if len(inputs) > 1 else None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.pad_id = int(meta.get(PAD_ID_KEY, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().numpy().astype(self.dtype, copy=False)  # (B, *input_shape)
        feed = {self.input_name: arr}
        if self.mask_name is not None:
            feed[self.mask_name] = (arr != self.pad_id).astype(np.int64)  # (B, L)
        return torch.from_numpy(self.session.run(None, feed)[0])  # (B, K)
