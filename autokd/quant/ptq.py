"""Post-training quantisation (PTQ): the INT8 baseline that quantisation-aware KD must beat.

Why ONNX Runtime's static QDQ quantiser: it is what a user would reach for to shrink a float
ONNX model without training again, so it is the honest baseline. Weights become symmetric
per-output-channel int8 (as in QAT); activation scales come from MinMax calibration on batches
of the *training* split, never validation or test, so the INT8 model's measured accuracy is
not fitted to the data it is scored on. Calibration happens only here: a QAT student carries
the activation scales it learned (``autokd.quant.export_int8_onnx``).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from autokd.errors import ExportError

__all__ = ["CALIBRATION_BATCH", "CALIBRATION_SAMPLES", "int8_initializers", "onnx_weight_bytes",
           "quantize_onnx_static"]

CALIBRATION_SAMPLES = 512  # enough for stable MinMax ranges of small students
CALIBRATION_BATCH = 64


class _Batches:
    """``CalibrationDataReader`` over a tensor: ``{input_name: batch}`` until exhausted.

    Duck-typed (``get_next``/``rewind``) so this module imports onnxruntime only when called.
    """

    def __init__(self, name: str, x: np.ndarray, batch: int) -> None:
        self.name, self.x, self.batch = name, x, batch
        self._it: Iterator[dict[str, np.ndarray]] = iter(())
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter([{self.name: self.x[i:i + self.batch]}
                         for i in range(0, len(self.x), self.batch)])


def quantize_onnx_static(float_onnx: str | Path, out: str | Path, calibration: torch.Tensor, *,
                         batch: int = CALIBRATION_BATCH) -> Path:
    """Quantise a float ONNX model to INT8 QDQ with activation ranges from ``calibration``.

    Args:
        float_onnx: A float model with one input (``input``) and output ``logits``.
        out: Where the INT8 model is written.
        calibration: (N, *input_shape) training-split samples (normalised like the model's
            inputs); their MinMax ranges become the activation scales.
        batch: Calibration batch size.

    Raises:
        ExportError: No calibration samples, or the quantiser failed (its first line).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    if len(calibration) == 0:
        raise ExportError("post-training quantisation needs calibration samples; the train "
                          "split is empty")
    x = calibration.detach().cpu().numpy()
    x = x.astype(np.float32, copy=False) if x.dtype.kind == "f" else x.astype(np.int64)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="autokd-ptq-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            # shape inference + graph optimisation (BN folded, Conv+Relu seen as one op) first,
            # as ORT advises, so the quantiser places Q/DQ where the kernels will fuse them
            quant_pre_process(str(float_onnx), str(pre), skip_symbolic_shape=True)
            with _quiet_quantizer():
                quantize_static(
                    str(pre), str(out), _Batches(_input_name(pre), x, batch),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        except Exception as exc:  # noqa: BLE001 - the quantiser's failure: one line
            raise ExportError("post-training quantisation failed: "
                              f"{str(exc).splitlines()[0][:200]}") from None
    return out


def _input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ORT's quantiser logs advice about pre-processing at WARNING on the root logger on every
    call; silence that for the call only (the user's logging is left as it was)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def int8_initializers(path: str | Path) -> dict[str, np.ndarray]:
    """The 8-bit initialisers of an ONNX model (quantised weights and zero points), by name."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    out = {}
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype in (np.int8, np.uint8):
            out[init.name] = arr
    return out


def onnx_weight_bytes(path: str | Path) -> int:
    """Bytes of an ONNX model's initialisers (weights, scales, zero points), as stored.

    Why beside the file size: for a student of a few thousand parameters the graph's
    structure (node names, shapes, Q/DQ nodes) is a large share of the file, so the whole file
    shrinks much less than 4x while the weights do.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return int(sum(numpy_helper.to_array(i).nbytes for i in graph.initializer))
