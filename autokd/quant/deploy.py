"""What an int8 candidate costs and scores as deployed: its INT8 ONNX file under ONNX Runtime.

Why a module of its own: a search ranks int8 students by the model that ships, not by the
fake-quantised float model that trained (the two differ by float summation order and by what
the runtime fuses). The file's bytes and latency depend only on the architecture, so a search
measures them before training (constraints see them); accuracy is measured after training on
the exported file itself.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autokd.config import CostConfig
from autokd.cost import CostReport, measure_latency
from autokd.cost._model import example_input
from autokd.data import DataSplits
from autokd.evaluation import evaluate
from autokd.quant.fake import prepare_qat
from autokd.quant.onnx_int8 import OrtModel, export_float_onnx, export_int8_onnx

__all__ = ["INT8_FILE", "Int8Metrics", "float_onnx_cost", "int8_cost", "int8_metrics"]

INT8_FILE = "student.int8.onnx"


def _example(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    return example_input(model, input_shape, 2, torch.device("cpu"))


def int8_cost(model: nn.Module, input_shape: tuple[int, ...], float_cost: CostReport,
              cfg: CostConfig | None = None) -> CostReport:
    """``float_cost`` with ``bytes`` and latency replaced by the INT8 ONNX model's.

    ``model`` may be a float student (a copy is prepared for QAT) or a QAT student; FLOPs,
    params and peak memory stay the architecture's. Latency is ONNX Runtime's on the CPU with
    ``cfg.threads`` threads, measured by ``measure_latency`` (same warm-up and median rules).
    """
    qat = prepare_qat(copy.deepcopy(model).cpu().eval())
    example = _example(qat, input_shape)
    with torch.no_grad():
        qat(example)  # an untrained copy: give unobserved quantisers a range (not all zero)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_int8_onnx(qat, example, Path(tmp) / INT8_FILE)
        return _file_cost(path, input_shape, float_cost, cfg or CostConfig())


def float_onnx_cost(model: nn.Module, input_shape: tuple[int, ...], float_cost: CostReport,
                    cfg: CostConfig | None = None) -> CostReport:
    """``float_cost`` with ``bytes`` and latency of the float ONNX model under ONNX Runtime.

    Why: when a search offers int8 and float students side by side, both must be costed as
    the files that ship in the same runtime; PyTorch eager latency of a tiny float student is
    mostly Python dispatch and would flatter every INT8 member against it.
    """
    twin = copy.deepcopy(model).cpu().eval()
    example = _example(twin, input_shape)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_float_onnx(twin, example, Path(tmp) / "student.onnx")
        return _file_cost(path, input_shape, float_cost, cfg or CostConfig())


def _file_cost(path: Path, input_shape: tuple[int, ...], base: CostReport,
               cfg: CostConfig) -> CostReport:
    out = dataclasses.replace(base, bytes=path.stat().st_size, latency_ms=None,
                              latency_ms_batch=None, latency_cv=None)
    if cfg.latency:
        runner = OrtModel(path, threads=cfg.threads or 1)

        def timed(batch: int) -> tuple[float, float]:
            return measure_latency(runner, input_shape, batch, warmup=cfg.warmup,
                                   repeats=cfg.repeats, threads=cfg.threads, device="cpu",
                                   min_block_s=cfg.min_block_s)

        out.latency_ms, out.latency_cv = timed(1)
        out.latency_ms_batch = out.latency_ms if cfg.batch_size == 1 else \
            timed(cfg.batch_size)[0]
    return out


@dataclass
class Int8Metrics:
    """The INT8 model's own scores (``val``/``test`` as ``autokd.evaluation.evaluate`` gives
    them), its file size, and how far its test logits are from the fake-quantised model's."""

    val: dict[str, Any]
    test: dict[str, Any]
    bytes: int
    max_abs_diff: float


def int8_metrics(model: nn.Module, data: DataSplits, teacher_logits: dict[str, Any] | None = None,
                 temperature: float = 1.0, path: str | Path | None = None) -> Int8Metrics:
    """Export the trained QAT ``model`` (to ``path``, else a temporary file) and score the file
    with ONNX Runtime on val and test. ``teacher_logits``: ``{split: (M, N, K)}`` for the KD
    loss, as the trainer reports it."""
    t = teacher_logits or {}
    model = model.cpu().eval()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(path) if path is not None else Path(tmp) / INT8_FILE
        export_int8_onnx(model, _example(model, data.input_shape), out)
        runner = OrtModel(out)
        val = evaluate(runner, data.x_val, data.y_val, t.get("val"), temperature)
        test = evaluate(runner, data.x_test, data.y_test, t.get("test"), temperature)
        x = data.head("test", 256)
        with torch.no_grad():
            diff = (runner(x) - model(x)).abs().max().item()
        return Int8Metrics(val, test, out.stat().st_size, diff)
