"""Quantisation-aware distillation: fake-quantised int8 training and the deployed INT8 model.

``prepare_qat`` makes a student train with int8 rounding (straight-through estimator),
``rounding_penalty`` is the article's ``||theta - Q(theta)||^2`` term, ``export_int8_onnx``
writes the deployable QDQ ONNX file with int8 weights, and ``OrtModel`` runs it.
"""

from __future__ import annotations

from autokd.quant.deploy import INT8_FILE, Int8Metrics, float_onnx_cost, int8_cost, int8_metrics
from autokd.quant.fake import (
    FREEZE_AT,
    QAT_FAMILIES,
    ActQuant,
    QuantizeError,
    freeze_observers,
    is_qat,
    prepare_qat,
    quant_layers,
    quantize_weight,
    rounding_penalty,
    weight_scale,
)
from autokd.quant.onnx_int8 import (
    OrtModel,
    export_float_onnx,
    export_int8_onnx,
    int8_weight_bytes,
    ort_optimized_ops,
)

__all__ = [
    "FREEZE_AT",
    "INT8_FILE",
    "QAT_FAMILIES",
    "ActQuant",
    "Int8Metrics",
    "OrtModel",
    "QuantizeError",
    "export_float_onnx",
    "export_int8_onnx",
    "float_onnx_cost",
    "freeze_observers",
    "int8_cost",
    "int8_metrics",
    "int8_weight_bytes",
    "is_qat",
    "ort_optimized_ops",
    "prepare_qat",
    "quant_layers",
    "quantize_weight",
    "rounding_penalty",
    "weight_scale",
]
