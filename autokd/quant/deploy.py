"""What a candidate costs as deployed: latency in the runtime it ships in, and for an int8
candidate its INT8 ONNX file under ONNX Runtime.

Why a module of its own: a search ranks students by the model that ships, not by the eager
PyTorch module that trained (a tiny student's eager latency is mostly Python dispatch; an int8
student's fake-quantised model differs from its file by summation order and by what the
runtime fuses). Latency and bytes depend only on the architecture, so a search measures them
before training (constraints see them); an int8 student's accuracy is measured after training
on the exported file itself. Every runtime is timed by ``measure_latency`` (same warm-up,
median and spread rules) through a module that puts the exported graph behind the call.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import logging
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autokd.config import RUNTIMES, CostConfig
from autokd.cost import CostReport, measure_cost, measure_latency
from autokd.cost._model import example_input
from autokd.data import DataSplits
from autokd.device import resolve_device
from autokd.errors import ConfigError
from autokd.evaluation import evaluate
from autokd.quant.fake import prepare_qat
from autokd.quant.onnx_int8 import OrtModel, export_float_onnx, export_int8_onnx

__all__ = ["INT8_FILE", "Int8Metrics", "default_runtime", "float_onnx_cost", "int8_cost",
           "int8_metrics", "onnxruntime_available", "resolve_runtime", "runtime_cost",
           "runtime_module"]

INT8_FILE = "student.int8.onnx"
logger = logging.getLogger(__name__)


def onnxruntime_available() -> bool:
    """Whether ``onnx`` and ``onnxruntime`` can be imported (the exporter needs both)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def default_runtime(device: str = "cpu") -> str:
    """ONNX Runtime where it can time the model (installed, CPU), else eager PyTorch."""
    return "onnxruntime" if device == "cpu" and onnxruntime_available() else "torch"


def resolve_runtime(cfg: CostConfig) -> CostConfig:
    """``cfg`` with ``runtime: auto`` made concrete, validated; onnxruntime asked for but not
    installed is refused (one line) rather than silently timed elsewhere."""
    if cfg.runtime == "auto":
        cfg = dataclasses.replace(cfg, runtime=default_runtime(cfg.device))
    cfg.validate()
    if cfg.runtime == "onnxruntime" and not onnxruntime_available():
        raise ConfigError("--latency-runtime onnxruntime needs the onnx and onnxruntime "
                          "packages (pip install onnx onnxruntime); or use torch or torchscript")
    return cfg


class _Traced(nn.Module):
    """A frozen TorchScript graph behind the ``nn.Module`` call; it keeps the eager model's
    ``vocab_size`` so the timing input is token ids where it should be. The graph is held
    outside the module tree: a frozen module has no ``training`` flag to toggle."""

    def __init__(self, graph: torch.jit.ScriptModule, vocab_size: Any) -> None:
        super().__init__()
        self._graph = [graph]
        if isinstance(vocab_size, int) and not isinstance(vocab_size, bool):
            self.vocab_size = vocab_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._graph[0](x)


@contextlib.contextmanager
def runtime_module(model: nn.Module, input_shape: tuple[int, ...], runtime: str,
                   threads: int = 1, device: str = "cpu") -> Iterator[nn.Module]:
    """``model``'s exported graph in ``runtime`` as a callable module, for the block.

    ``torch`` yields the model itself; ``torchscript`` a frozen trace of an eval copy on
    ``device``; ``onnxruntime`` the float ONNX file (``export_float_onnx``, the file ``autokd
    export`` writes) in an ONNX Runtime CPU session. Export errors propagate: the caller
    decides whether to fall back.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown latency runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    if runtime == "torch":
        yield model
        return
    if runtime == "torchscript":
        dev = resolve_device(device, "cost device")
        twin = copy.deepcopy(model).eval().to(dev)
        example = example_input(twin, input_shape, 2, dev)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings about shapes taken as constants
            graph = torch.jit.freeze(torch.jit.trace(twin, (example,), check_trace=False))
        yield _Traced(graph, getattr(model, "vocab_size", None))
        return
    with _float_onnx(model, input_shape) as path:  # exports an eval copy of its own
        yield OrtModel(path, threads=threads or 1)


@contextlib.contextmanager
def _float_onnx(model: nn.Module, input_shape: tuple[int, ...]) -> Iterator[Path]:
    """The float ONNX file of an eval copy of ``model``, in a folder removed afterwards."""
    twin = copy.deepcopy(model).cpu().eval()
    with tempfile.TemporaryDirectory() as tmp:
        yield export_float_onnx(twin, _example(twin, input_shape), Path(tmp) / "student.onnx")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def runtime_cost(model: nn.Module, input_shape: tuple[int, ...],
                 cfg: CostConfig | None = None) -> CostReport:
    """Every cost of ``model``, latency timed in ``cfg.trial_runtime``.

    A model that cannot be exported to that runtime (an op without an ONNX form, control
    flow a trace cannot hold) is timed in eager PyTorch instead and says why in
    ``latency_fallback``: a search should rank it by something rather than lose it, and the
    reason tells the reader the number is not the runtime's.
    """
    cfg = resolve_runtime(cfg or CostConfig())
    runtime = cfg.trial_runtime
    if runtime == "torch" or not cfg.latency:
        return measure_cost(model, input_shape, cfg)
    base = measure_cost(model, input_shape, cfg, latency=False)
    device = "cpu" if runtime == "onnxruntime" else cfg.device
    try:
        with runtime_module(model, input_shape, runtime, cfg.threads, device) as runner:
            return _timed(base, runner, input_shape, cfg, device, runtime)
    except Exception as exc:  # noqa: BLE001 - an export that fails must not lose the candidate
        reason = f"{runtime} export failed: {_reason(exc)}"
        logger.warning("latency timed in torch instead: %s", reason)
        out = measure_cost(model, input_shape, dataclasses.replace(cfg, runtime="torch"))
        out.latency_fallback = reason
        return out


def _timed(base: CostReport, runner: nn.Module, input_shape: tuple[int, ...], cfg: CostConfig,
           device: str, runtime: str) -> CostReport:
    """``base`` with latency at batch 1 and at ``cfg.batch_size`` timed on ``runner``."""
    out = dataclasses.replace(base, latency_ms=None, latency_ms_batch=None, latency_cv=None,
                              latency_runtime=None)
    if not cfg.latency:
        return out

    def timed(batch: int) -> tuple[float, float]:
        return measure_latency(runner, input_shape, batch, warmup=cfg.warmup,
                               repeats=cfg.repeats, threads=cfg.threads, device=device,
                               min_block_s=cfg.min_block_s)

    out.latency_ms, out.latency_cv = timed(1)
    out.latency_ms_batch = out.latency_ms if cfg.batch_size == 1 else timed(cfg.batch_size)[0]
    out.latency_runtime = runtime
    return out


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
    with _float_onnx(model, input_shape) as path:
        return _file_cost(path, input_shape, float_cost, cfg or CostConfig())


def _file_cost(path: Path, input_shape: tuple[int, ...], base: CostReport,
               cfg: CostConfig) -> CostReport:
    """``base`` with the file's bytes and its ONNX Runtime latency."""
    base = dataclasses.replace(base, bytes=path.stat().st_size)
    runner = OrtModel(path, threads=cfg.threads or 1) if cfg.latency else nn.Identity()
    return _timed(base, runner, input_shape, cfg, "cpu", "onnxruntime")


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
