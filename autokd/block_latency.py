"""Per-block latency tables for families without a DARTS supernet (``mbv2``, ``resnet``).

Why blocks: ``autokd.latency_table`` times the layer groups a supernet declares; a family
such as ``resnet`` has no supernet, and an inverted-residual block's cost is not the sum of its
layers timed apart (the depthwise conv, the SE gate, hard-swish and the residual add share
memory traffic). So, as FBNet's lookup table does per block, every *unit* of a built student
(the stem, each block ``stages.i.j`` in its input shape, the optional head conv, and the pool +
classifier head) is keyed by what it is and the shape it sees, timed once, and a model's
latency is the sum of its units plus one overhead fitted on whole models. A key holds the
unit's class, input shape and a digest of its layer description (channels, kernel, stride,
groups, SE, activation), so a depthwise 5x5 stride-2 block with SE and hard-swish on 16x14x14
is one entry and the same block on 32x7x7 another.

As in ``autokd.latency_table``, units and whole models are timed at batch 1 and at the deploy
batch, and a fitted correction (``autokd.latency_model``) turns the sum of a model's units into
its prediction; the table's error is each calibration model's, predicted without it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autokd._io import cache_dir
from autokd.errors import ConfigError
from autokd.latency_model import MeasureFn, ProgressFn, calibrate_rows, time_entries, time_models
from autokd.latency_table import (
    LatencyTable,
    TableSettings,
    _default_measure,
    _host_name,
    _resolve_device,
    device_tag,
)
from autokd.models import build_student

__all__ = ["Unit", "block_table_path", "build_block_table", "predict_latency", "student_units"]

OVERHEAD_KEY = "model"


@dataclass(frozen=True)
class Unit:
    """One timed part of a student: its key, the module and one sample's input shape."""

    key: str
    module: nn.Module
    in_shape: tuple[int, ...]


class _Head(nn.Sequential):
    """Global pool -> flatten -> dropout -> classifier, as the students' forward runs them."""


def _key(module: nn.Module, in_shape: tuple[int, ...]) -> str:
    digest = hashlib.sha256(repr(module).encode()).hexdigest()[:10]
    return f"{type(module).__name__}:{'x'.join(map(str, in_shape))}:{digest}"


def _unit_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The stem, every block of every stage, and the optional head conv, in forward order."""
    units = [("stem", model.stem)]
    for i, stage in enumerate(model.stages):
        units += [(f"stages.{i}.{j}", block) for j, block in enumerate(stage)]
    if getattr(model, "head_conv", None) is not None:
        units.append(("head_conv", model.head_conv))
    return units


def student_units(model: nn.Module, input_shape: tuple[int, ...]) -> list[Unit]:
    """Every unit of a stem/stages/classifier student with the input shape it sees."""
    if not all(hasattr(model, a) for a in ("stem", "stages", "pool", "classifier")):
        raise ConfigError(f"{getattr(model, 'family', type(model).__name__)} students have no "
                          "stem/stages/classifier layout; per-block latency tables need one")
    parts = _unit_modules(model)
    shapes: dict[str, tuple[int, ...]] = {}

    def recorder(name: str) -> Any:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            shapes.setdefault(name, tuple(args[0].shape[1:]))  # one sample: (C, *S)
        return hook

    handles = [m.register_forward_pre_hook(recorder(name))
               for name, m in [*parts, ("pool", model.pool)]]
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            model(torch.zeros(1, *input_shape))
            model.train(was)
    finally:
        for h in handles:
            h.remove()
    head = _Head(model.pool, nn.Flatten(1), model.dropout, model.classifier)
    units = [Unit(_key(m, shapes[name]), m, shapes[name]) for name, m in parts]
    return [*units, Unit(_key(head, shapes["pool"]), head, shapes["pool"])]


def predict_latency(table: LatencyTable, model: nn.Module, input_shape: tuple[int, ...],
                    batch: str = "1") -> float:
    """Milliseconds the table predicts for ``model`` at ``batch`` (``"1"`` or ``"deploy"``):
    the corrected sum of its units.

    A model is never faster than its slowest unit, which bounds the prediction from below (a
    fitted intercept can be negative, and a tiny model's sum small).
    """
    units = [table.raw(unit.key, batch) for unit in student_units(model, input_shape)]
    fix = table.fix(batch)
    return max(fix.predict(sum(units), len(units)), max(units, default=0.0))


def block_table_path(family: str, space: str, input_shape: tuple[int, ...], num_classes: int,
                     specs: Iterable[dict[str, Any]], device: str = "cpu",
                     threads: int = 1, runtime: str = "torch") -> Path:
    """``cache_dir()/latency/<device[-runtime]>/<space>-<shape>-k<classes>-blocks-<digest>.json``."""
    digest = hashlib.sha256(f"{family}\n{sorted(map(repr, specs))}".encode()).hexdigest()[:10]
    shape = "x".join(map(str, input_shape))
    name = f"{Path(space).stem}-{shape}-k{num_classes}-blocks-{digest}.json"
    return cache_dir() / "latency" / device_tag(device, threads, runtime) / name


def build_block_table(family: str, specs: list[dict[str, Any]], input_shape: tuple[int, ...],
                      num_classes: int, space: str | None = None, device: str = "cpu",
                      threads: int = 1, settings: TableSettings | None = None,
                      measure: MeasureFn | None = None,
                      progress: ProgressFn | None = None, batch_size: int = 64,
                      cover: list[dict[str, Any]] | None = None) -> LatencyTable:
    """Time every unit of the students ``specs`` describe, then fit the whole-model correction.

    Args:
        family: The student family (its models need a stem/stages/classifier layout).
        specs: Architectures whose units the table must cover (e.g. samples of a space); the
            whole models are also timed to fit and check the overhead.
        input_shape: One sample's shape; it fixes every unit's context.
        num_classes: Classes of the head.
        space: Name recorded in the table (default: the family).
        device: ``cpu``, ``cuda`` or ``auto``.
        threads: torch intra-op threads while timing.
        settings: Timing settings (passes, repeats; ``calibration`` is unused: ``specs`` are
            the calibration models).
        measure: ``fn(module, input_shape) -> ms``; default ``autokd.cost.measure_latency``.
        progress: ``fn(done, total)`` after each unit timing.
        batch_size: The deploy batch (``CostConfig.batch_size``).
        cover: More architectures whose units are timed but which are not calibration models
            (students the table must predict without having fitted on them).
    """
    if not specs:
        raise ConfigError("a per-block latency table needs at least one architecture")
    settings = settings or TableSettings()
    device = _resolve_device(device)
    measure = measure or _default_measure(settings, device, threads)
    t0 = time.perf_counter()
    models = [build_student(family, spec, input_shape, num_classes).eval() for spec in specs]
    units: dict[str, Unit] = {}
    per_model = []
    for k, model in enumerate(models + [build_student(family, spec, input_shape, num_classes)
                                        .eval() for spec in cover or []]):
        found = student_units(model, input_shape)
        if k < len(models):
            per_model.append([u.key for u in found])
        for unit in found:
            units.setdefault(unit.key, unit)
    entries, batched = time_entries([(key, u.module, u.in_shape) for key, u in units.items()],
                                    measure, batch_size, settings.passes, progress)
    table = LatencyTable(device, _host_name(device), threads, space or family,
                         tuple(input_shape), num_classes, entries, settings=asdict(settings),
                         batch_size=batch_size, entries_batch=batched)
    rows = [{"spec": model.spec, "n_ops": len(keys),
             "parts_ms": sum(entries[k] for k in keys),
             "parts_ms_batch": sum(batched[k] for k in keys)}
            for model, keys in zip(models, per_model)]
    time_models(rows, models, measure, tuple(input_shape), batch_size, settings.passes)
    fits = calibrate_rows(rows)
    table.correction = {batch: fit.to_dict() for batch, fit in fits.items()}
    table.overhead = {OVERHEAD_KEY: fits["1"].intercept}
    table.calibration = rows
    table.build_seconds = time.perf_counter() - t0
    return table
