"""What a student costs: parameters, FLOPs, serialized size, latency and peak memory.

Why one package: every controller scores candidates by the same numbers, and a ratio such as
``FLOPs_S / FLOPs_T`` (DESIGN.md §2) is only meaningful when teacher and student were measured
by the same code under the same conventions (``flops`` and ``latency`` state them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from autokd.config import CostConfig
from autokd.cost._model import check_shape
from autokd.cost.flops import (
    UNCOUNTED_OPS,
    FlopBreakdown,
    count_flops,
    elementwise_flops,
    flop_breakdown,
    torch_flop_count,
)
from autokd.cost.latency import fix_allocator, measure_latency
from autokd.cost.memory import measure_peak_memory
from autokd.cost.size import count_params, serialized_bytes

__all__ = [
    "UNCOUNTED_OPS",
    "CostReport",
    "FlopBreakdown",
    "count_flops",
    "count_params",
    "elementwise_flops",
    "fix_allocator",
    "flop_breakdown",
    "measure_cost",
    "measure_latency",
    "measure_peak_memory",
    "serialized_bytes",
    "torch_flop_count",
]


@dataclass
class CostReport:
    """Every cost of one model, as stored on a trial and compared across candidates.

    Attributes:
        params: Number of parameters (buffers excluded), see ``count_params``.
        flops: Multiply-adds of one forward at batch 1, see the module docstring.
        bytes: Size of the serialized ``state_dict`` (what a checkpoint weighs).
        latency_ms: Median milliseconds per forward at batch 1, or None when not measured.
        latency_ms_batch: Median milliseconds per forward at ``latency_batch_size``.
        latency_batch_size: The batch size of ``latency_ms_batch``.
        latency_cv: Coefficient of variation across the timed blocks at batch 1.
        peak_memory_bytes: Peak memory of one forward at batch 1, see ``measure_peak_memory``.
        latency_runtime: Where the latency was timed (``torch``, ``torchscript``,
            ``onnxruntime``; ``CostConfig.runtime``), None when not measured.
        latency_fallback: Why latency was timed in eager PyTorch instead of the runtime asked
            for (the model could not be exported to it), else None.
    """

    params: int
    flops: int
    bytes: int
    latency_ms: float | None
    latency_ms_batch: float | None
    latency_batch_size: int
    latency_cv: float | None
    peak_memory_bytes: int | None
    latency_runtime: str | None = None
    latency_fallback: str | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        """Flat dict, ready for Optuna user attributes or a CSV row."""
        return asdict(self)


def _add_latency(
    report: CostReport, model: nn.Module, input_shape: tuple[int, ...], cfg: CostConfig
) -> None:
    def timed(batch_size: int) -> tuple[float, float]:
        return measure_latency(
            model,
            input_shape,
            batch_size,
            warmup=cfg.warmup,
            repeats=cfg.repeats,
            threads=cfg.threads,
            device=cfg.device,
            min_block_s=cfg.min_block_s,
        )

    report.latency_ms, report.latency_cv = timed(1)
    report.latency_runtime = "torch"
    # batch 1 is already measured; timing it twice would only add noise and time
    report.latency_ms_batch = (
        report.latency_ms if cfg.batch_size == 1 else timed(cfg.batch_size)[0]
    )


def measure_cost(
    model: nn.Module,
    input_shape: tuple[int, ...],
    cfg: CostConfig | None = None,
    *,
    latency: bool | None = None,
) -> CostReport:
    """Every cost of ``model`` in one report.

    Args:
        model: The network (its train/eval modes are left as they were).
        input_shape: One sample's shape, without the batch dimension.
        cfg: Measurement settings; defaults to ``CostConfig()``.
        latency: Overrides ``cfg.latency``; when false the latency fields stay None, which
            keeps tests and FLOP-only searches fast.

    Returns:
        The filled ``CostReport``.
    """
    cfg = cfg or CostConfig()
    shape = check_shape(input_shape)
    report = CostReport(
        params=count_params(model),
        flops=count_flops(model, shape),
        bytes=serialized_bytes(model),
        latency_ms=None,
        latency_ms_batch=None,
        latency_batch_size=cfg.batch_size,
        latency_cv=None,
        peak_memory_bytes=measure_peak_memory(model, shape, cfg.device),
    )
    if cfg.latency if latency is None else latency:
        _add_latency(report, model, shape, cfg)
    return report
