"""The INT8 artifact (``student.int8.onnx``) and how it is proved right.

Which INT8 model: a student trained with ``quantize: int8`` (QAT) ships the model it was
trained as, with the activation scales it learned (``autokd.quant.export_int8_onnx``); a float
student gets ONNX Runtime's post-training quantisation (``autokd.quant.ptq``, calibrated on
training samples): the baseline QAT-KD must beat. INT8 is written by default only for a QAT
student; ``--formats int8`` asks for the baseline.

Why a reference model: INT8 logits legitimately differ from the float student's, so the 1e-4
parity check cannot apply. Instead the INT8 model is built once more, privately, before the
artifact is written; the card states *that* model's accuracy, and the published file must
reproduce its logits (to ``PARITY_TOL``) and its test accuracy exactly. A file whose weights
were changed on the way to disk is refused by this check, not only by the card's hash later.
The deviation from the float student is measured and reported, never used to refuse.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autokd.data import DataSplits
from autokd.errors import ExportError
from autokd.export.formats import FORMATS, ArtifactFormat, OnnxModule
from autokd.models import build_student
from autokd.quant import export_int8_onnx, int8_weight_bytes, is_qat
from autokd.quant.ptq import CALIBRATION_SAMPLES, onnx_weight_bytes, quantize_onnx_static

__all__ = ["INT8", "INT8_FILE", "calibration_samples", "float_student", "int8_method",
           "int8_reference", "int8_sizes"]

INT8, INT8_FILE = "int8", "student.int8.onnx"


def int8_method(model: nn.Module) -> str:
    """``qat`` for a student trained with fake quantisation, else ``ptq`` (the baseline)."""
    return "qat" if is_qat(model) else "ptq"


def float_student(model: nn.Module) -> nn.Module:
    """The student without fake quantisation: for a QAT student, its learned float weights in
    a plain model of the same family and spec (the float artifacts hold this); else itself."""
    if not is_qat(model):
        return model
    twin = build_student(model.family, model.spec, tuple(model.input_shape), model.num_classes)
    wanted = twin.state_dict().keys()  # quantised layers keep the float layers' names
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if k in wanted})
    return twin.eval()


def calibration_samples(data: DataSplits, n: int = CALIBRATION_SAMPLES) -> torch.Tensor:
    """The first ``n`` training samples (the split is already shuffled): PTQ's calibration."""
    return data.head("train", n)


def _write_int8(model: nn.Module, path: Path, meta: dict[str, Any], example: torch.Tensor,
                calibration: torch.Tensor | None = None) -> None:
    if is_qat(model):
        export_int8_onnx(model, example, path)
        return
    if calibration is None:
        raise ExportError("post-training quantisation of a float student needs calibration "
                          "samples from the train split")
    with tempfile.TemporaryDirectory(prefix="autokd-int8-") as tmp:
        float_onnx = Path(tmp) / "float.onnx"
        FORMATS.get("onnx").write(model, float_onnx, meta, example)
        quantize_onnx_static(float_onnx, path, calibration)


def int8_reference(model: nn.Module, example: torch.Tensor,
                   calibration: torch.Tensor | None, threads: int = 1) -> nn.Module:
    """The INT8 model built privately (a temp file, loaded into an ONNX Runtime session): what
    the card's INT8 accuracy is measured on and the published file is checked against."""
    with tempfile.TemporaryDirectory(prefix="autokd-int8-ref-") as tmp:
        path = Path(tmp) / INT8_FILE
        _write_int8(model, path, {}, example, calibration)
        return OnnxModule(path, threads)  # the session holds the model; the file may go


def int8_sizes(int8_path: Path, float_onnx: Path | None = None) -> dict[str, Any]:
    """File and initialiser bytes of the INT8 model (and of the float ONNX beside it).

    Why both: weights shrink about 4x, but for a student of a few thousand parameters the
    graph itself (names, shapes, the Q/DQ nodes) is much of the file, which shrinks less or
    even grows.
    """
    out: dict[str, Any] = {"file_bytes": int8_path.stat().st_size,
                           "initializer_bytes": onnx_weight_bytes(int8_path),
                           "int8_weight_bytes": int8_weight_bytes(int8_path)}
    if float_onnx is not None and float_onnx.exists():
        out.update(float_file_bytes=float_onnx.stat().st_size,
                   float_initializer_bytes=onnx_weight_bytes(float_onnx))
    return out


def _fits(model: nn.Module) -> bool:
    """Any student whose float ONNX Runtime quantises (Hugging Face students deploy through
    their own formats)."""
    return getattr(model, "family", None) != "hf"


FORMATS.register(INT8, ArtifactFormat(INT8_FILE, _write_int8, OnnxModule, _fits,
                                      default=is_qat, calibrated=True))
