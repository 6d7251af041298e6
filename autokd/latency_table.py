"""Latency lookup tables, and the expected cost of a supernet under its architecture weights.

Why measured latency and not FLOPs: across 12 CNNs measured here, Spearman rho(FLOPs, batch-1
CPU latency) was 0.74 (0.95 at batch 64); FLOPs spanned 6100x while latency spanned 6.4x, and
every conv-BN-ReLU block cost about 0.035 ms whatever its width. So a latency penalty built
from FLOPs would chase the wrong networks. Instead every exported layer group of a space
(``OpSpec``: a stage's convolution, its norm/activation/pool tail, the head) is timed once on
the target device in its context (input shape, position), plus a per-depth overhead calibrated
on whole models; the table is cached on disk per device + space under
``cache_dir()/latency/`` and re-used (FBNet's lookup table, Wu et al. 2019).

Ops and calibration models are timed at batch 1 (what a search ranks by) and at the deploy
batch (``CostConfig.batch_size``, 64 by default). Summed op timings are then corrected by a
linear model fitted on whole models (``autokd.latency_model``); the table stores the
correction, its leave-one-out error at both batches and the calibration models' own
run-to-run variation, the noise floor that error is to be read against.

FLOPs and params per op are exact: params are counted on the built op, FLOPs follow
``autokd.cost``'s convention (multiply-adds of convolutions and linear layers at batch 1), so
the expected cost of a one-hot alpha equals ``count_flops`` / ``count_params`` of the derived
student, which the tests check.

Expected cost per decision = sum over candidates of softmax(alpha) x candidate cost; a part
that depends on several decisions (a convolution on its input and output widths) takes the
product of their probabilities, which is exact because the decisions are independent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autokd._io import cache_dir
from autokd.config import CostConfig
from autokd.cost import measure_latency
from autokd.device import resolve_device
from autokd.errors import ConfigError
from autokd.latency_model import (
    AtBatch,
    Correction,
    MeasureFn,
    ProgressFn,
    calibrate_rows,
    summarise_errors,
    time_entries,
    time_models,
)
from autokd.models import build_student
from autokd.models.supernet import OpSpec, Supernet, build_op
from autokd.quant.deploy import runtime_module

__all__ = [
    "METRICS",
    "LatencyTable",
    "TableSettings",
    "build_table",
    "device_tag",
    "get_table",
    "load_table",
    "prediction_error",
    "table_path",
]

logger = logging.getLogger(__name__)
FORMAT = "autokd-latency-table"
VERSION = 2  # 2: deploy-batch entries, fitted correction, held-out error at both batches
BATCH_KEYS = ("1", "deploy")  # batch 1, and the deploy batch (``LatencyTable.batch_size``)
MIN_CALIBRATION = 12  # whole models a table is calibrated on, at least
METRICS = ("flops", "params", "latency_ms")


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


@dataclass
class TableSettings:
    """How ops are timed (like a search's per-trial measurement, but in passes).

    Why passes and a minimum: on a shared machine other processes only ever add time, and
    they do so in bursts; timing every op once per pass, passes apart, and keeping each op's
    fastest pass keeps one burst from inflating a whole stretch of the table.
    """

    warmup: int = 3
    repeats: int = 3  # timed blocks per pass; the median is taken
    min_block_s: float = 0.005
    passes: int = 2  # interleaved passes over all ops; the minimum is kept
    calibration: int = 5  # whole models per depth used to fit and check the overhead
    seed: int = 0
    #: where ops are timed (``CostConfig.runtime``): each op exported alone to TorchScript or
    #: ONNX Runtime; part of the table's path, so a table is never read for another runtime
    runtime: str = "torch"

    @classmethod
    def from_cost(cls, cfg: CostConfig) -> TableSettings:
        runtime = getattr(cfg, "trial_runtime", "torch")
        return cls(warmup=cfg.warmup, min_block_s=getattr(cfg, "min_block_s", cls.min_block_s),
                   runtime="torch" if runtime == "auto" else runtime)


@dataclass
class LatencyTable:
    """Measured milliseconds per op key at batch 1 and at the deploy batch, the whole-model
    correction per batch, and how well the corrected sums predict models the fit never saw."""

    device: str
    host: str
    threads: int
    space: str
    input_shape: tuple[int, ...]
    num_classes: int
    entries: dict[str, float]
    overhead: dict[str, float] = field(default_factory=dict)  # str(depth) -> ms (batch 1)
    calibration: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    build_seconds: float = 0.0
    batch_size: int = 64  # the deploy batch of ``entries_batch``
    entries_batch: dict[str, float] = field(default_factory=dict)
    correction: dict[str, dict[str, float]] = field(default_factory=dict)  # BATCH_KEYS ->
    path: str | None = None

    def fix(self, batch: str = "1") -> Correction:
        """The whole-model correction at ``batch`` (``"1"`` or ``"deploy"``)."""
        raw = self.correction.get(batch)
        return Correction.from_dict(raw) if raw else Correction()

    def raw(self, key: str, batch: str = "1") -> float:
        """The op's own timing (uncorrected) at ``batch``."""
        entries = self.entries if batch == "1" else self.entries_batch
        try:
            return entries[key]
        except KeyError:
            raise ConfigError(f"latency table {self.path or ''} has no entry for {key}"
                              f"{'' if batch == '1' else f' at batch {self.batch_size}'}; "
                              "rebuild it with `autokd latency-table ... --force`") from None

    def latency(self, op: OpSpec, batch: str = "1") -> float:
        """Milliseconds one op adds to a whole-model prediction at ``batch``.

        A timed op adds its corrected share (``Correction.op_ms``); a ``model`` op adds the
        overhead of its depth group, so the sum over a model's ops is its prediction.
        """
        if op.kind == "model":
            if batch == "1":
                return self.overhead.get(str(op.out), 0.0)
            return self.fix(batch).intercept
        return self.fix(batch).op_ms(self.raw(op.key(), batch))

    def error(self) -> dict[str, Any]:
        """Held-out (leave-one-out) error of whole-model predictions (%), per batch, beside
        the calibration models' run-to-run variation.

        The top-level ``n`` / ``mean_abs_pct`` / ``max_abs_pct`` are batch 1's.
        """
        out: dict[str, Any] = {"batch_size": self.batch_size}
        for batch, suffix in (("1", ""), ("deploy", "_batch")):
            summary = summarise_errors([c.get(f"loo_error_pct{suffix}")
                                        for c in self.calibration])
            cvs = [c[f"cv{suffix}"] for c in self.calibration if c.get(f"cv{suffix}") is not None]
            summary["run_to_run_cv_pct"] = 100 * statistics.median(cvs) if cvs else None
            out[batch] = summary
        out.update({k: out["1"][k] for k in ("n", "mean_abs_pct", "max_abs_pct")})
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("path")
        return {"format": FORMAT, "version": VERSION, **out,
                "input_shape": list(self.input_shape), "error": self.error()}

    def save(self, path: Path) -> Path:
        """Write atomically (temp file + rename): concurrent builders never see half a table."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(self.to_dict(), indent=1, sort_keys=True))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.path = str(path)
        return path


_FIELDS = ("device", "host", "threads", "space", "num_classes", "entries", "overhead",
           "calibration", "settings", "build_seconds", "batch_size", "entries_batch",
           "correction")


def load_table(path: str | Path) -> LatencyTable:
    """Read a table written by ``LatencyTable.save``; one from another version is refused.

    Why refuse version 1: it holds neither deploy-batch timings nor a correction, so its
    predictions would silently be the old, less accurate ones; ``get_table`` rebuilds it.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read latency table {path}: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ConfigError(f"{path} is not an autokd latency table")
    if raw.get("version") != VERSION:
        raise ConfigError(f"latency table {path} is version {raw.get('version')}, this autokd "
                          f"reads version {VERSION}; rebuild it with `autokd latency-table "
                          "... --force`")
    try:
        keep = {k: raw[k] for k in _FIELDS}
        table = LatencyTable(input_shape=tuple(raw["input_shape"]), path=str(path), **keep)
        for batch in BATCH_KEYS:
            table.fix(batch)
        if not (isinstance(table.entries, dict) and all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in table.entries.values())):
            raise TypeError("entries must map op keys to finite milliseconds")
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"latency table {path} is damaged ({type(exc).__name__}: {exc}); "
                          "rebuild it with `autokd latency-table ... --force`") from None
    return table


# ---------------------------------------------------------------------------------------------
# Where a table lives
# ---------------------------------------------------------------------------------------------


def _resolve_device(device: str) -> str:
    return str(resolve_device(device, "latency device"))


def _host_name(device: str) -> str:
    """What the device is: the CPU model, or the GPU's name."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_tag(device: str, threads: int, runtime: str = "torch") -> str:
    """A directory name per device and runtime: ``cpu-<model hash>-t1`` for eager PyTorch,
    ``cpu-<model hash>-t1-onnxruntime`` for another (tables never mix machines or runtimes)."""
    device = _resolve_device(device)
    digest = hashlib.sha256(_host_name(device).encode()).hexdigest()[:8]
    suffix = "" if runtime == "torch" else f"-{runtime}"
    return f"{device.replace(':', '')}-{digest}-t{threads}{suffix}"


def _timed_ops(net: Supernet) -> list[OpSpec]:
    """One op per distinct latency key (``model`` ops are fitted, not timed)."""
    ops: dict[str, OpSpec] = {}
    for term in net.cost_terms_cached():
        for _, found in term.entries:
            for op in found:
                if op.kind != "model":
                    ops.setdefault(op.key(), op)
    return [ops[k] for k in sorted(ops)]


def table_path(net: Supernet, space: str, device: str = "cpu", threads: int = 1,
               runtime: str = "torch") -> Path:
    """``cache_dir()/latency/<device tag>/<space>-<shape>-k<classes>-<ops digest>.json``."""
    keys = "\n".join(op.key() for op in _timed_ops(net))
    digest = hashlib.sha256(f"{net.family}\n{keys}".encode()).hexdigest()[:10]
    shape = "x".join(map(str, net.input_shape))
    name = f"{Path(space).stem}-{shape}-k{net.num_classes}-{digest}.json"
    return cache_dir() / "latency" / device_tag(device, threads, runtime) / name


# ---------------------------------------------------------------------------------------------
# Building one
# ---------------------------------------------------------------------------------------------


def _default_measure(settings: TableSettings, device: str, threads: int) -> MeasureFn:
    """Time a module in ``settings.runtime`` (exported alone first unless eager)."""
    where = "cpu" if settings.runtime == "onnxruntime" else device

    def measure(module: nn.Module, in_shape: tuple[int, ...]) -> float:
        batch = 1
        if isinstance(module, AtBatch):  # export the network, not its fixed batch: a runtime
            module, batch = module.module, len(module.batch)  # would fold a constant input
        with runtime_module(module, in_shape, settings.runtime, threads, where) as runner:
            ms, _cv = measure_latency(runner, in_shape, batch, warmup=settings.warmup,
                                      repeats=settings.repeats, threads=threads, device=where,
                                      min_block_s=settings.min_block_s)
        return ms

    return measure


def _calibration_choices(net: Supernet, settings: TableSettings) -> list[dict[str, Any]]:
    """``settings.calibration`` random architectures per depth (seeded), and at least
    ``MIN_CALIBRATION`` in all: the correction has up to three coefficients to fit."""
    rng = random.Random(settings.seed)
    per_depth = max(settings.calibration, math.ceil(MIN_CALIBRATION / len(net.depths)))
    out = []
    for depth in net.depths:
        for _ in range(per_depth):
            choice = {n: rng.choice(opts) for n, opts in net.decisions.items()}
            if "depth" in net.decisions:
                choice["depth"] = depth
            out.append(choice)
    return out


def _calibrate(net: Supernet, table: LatencyTable, measure: MeasureFn,
               settings: TableSettings) -> None:
    """Fit the whole-model correction per batch (``autokd.latency_model``) and its LOO error."""
    rows, models = [], []
    for choice in _calibration_choices(net, settings):
        spec = net.spec_for(choice)
        models.append(build_student(net.family, spec, net.input_shape, net.num_classes).eval())
        ops = net.ops_for(choice)
        timed = [op.key() for op in ops if op.kind != "model"]
        # the overhead group is the ``model`` op's ``out``: the depth of a stack, 0 for a
        # supernet with one group (the inverted-residual one)
        group = next((op.out for op in ops if op.kind == "model"), 0)
        rows.append({"spec": spec, "depth": group, "n_ops": len(timed),
                     "parts_ms": sum(table.raw(k) for k in timed),
                     "parts_ms_batch": sum(table.raw(k, "deploy") for k in timed)})
    time_models(rows, models, measure, net.input_shape, table.batch_size, settings.passes)
    fits = calibrate_rows(rows)
    table.correction = {batch: fit.to_dict() for batch, fit in fits.items()}
    table.overhead = {str(depth): fits["1"].intercept for depth in net.depths}
    table.calibration = rows


def build_table(net: Supernet, space: str, device: str = "cpu", threads: int = 1,
                settings: TableSettings | None = None, measure: MeasureFn | None = None,
                progress: ProgressFn | None = None, batch_size: int = 64) -> LatencyTable:
    """Time every op of ``net`` on ``device`` at batch 1 and ``batch_size``, then calibrate.

    Args:
        net: The supernet whose ops are timed (its decisions define the space).
        space: Space name, recorded and used in the file name.
        device: ``cpu``, ``cuda`` or ``auto``.
        threads: torch intra-op threads while timing (as ``CostConfig.threads``).
        settings: Timing settings (default: those of a search's per-trial measurement).
        measure: ``fn(module, input_shape) -> ms``; default ``autokd.cost.measure_latency``.
        progress: ``fn(done, total)`` after each op.
        batch_size: The deploy batch (``CostConfig.batch_size``).
    """
    settings = settings or TableSettings()
    device = _resolve_device(device)
    measure = measure or _default_measure(settings, device, threads)
    ops = _timed_ops(net)
    t0 = time.perf_counter()
    entries, batched = time_entries([(op.key(), build_op(op), op.in_shape) for op in ops],
                                    measure, batch_size, settings.passes, progress)
    table = LatencyTable(device, _host_name(device), threads, space, net.input_shape,
                         net.num_classes, entries, settings=asdict(settings),
                         batch_size=batch_size, entries_batch=batched)
    _calibrate(net, table, measure, settings)
    table.build_seconds = time.perf_counter() - t0
    logger.info("latency table: %d ops on %s in %.1f s, error %s", len(ops), device,
                table.build_seconds, table.error())
    return table


def get_table(net: Supernet, space: str, device: str = "cpu", threads: int = 1,
              settings: TableSettings | None = None, rebuild: bool = False,
              progress: ProgressFn | None = None,
              measure: MeasureFn | None = None, batch_size: int = 64) -> LatencyTable:
    """The cached table for this device + space + runtime, built (and saved) on first use; one
    for another deploy batch, from an older version or damaged is measured again."""
    path = table_path(net, space, device, threads, (settings or TableSettings()).runtime)
    if path.exists() and not rebuild:
        try:
            cached = load_table(path)
            if cached.batch_size == batch_size:
                return _checked(cached)
            logger.warning("latency table %s was built for batch %d, not %d; measuring it "
                           "again", path, cached.batch_size, batch_size)
        except ConfigError as exc:
            logger.warning("%s; measuring it again", exc)
    logger.info("building the latency table %s (once per device and space)", path)
    table = build_table(net, space, device, threads, settings, measure, progress, batch_size)
    table.save(path)
    return _checked(table)


def _checked(table: LatencyTable, tolerance_pct: float = 50.0) -> LatencyTable:
    """Warn when the table mispredicts whole models badly (built while the machine was busy)."""
    error = table.error()["mean_abs_pct"]
    if error is not None and error > tolerance_pct:
        logger.warning("latency table %s mispredicts whole models by %.0f %% on average; "
                       "rebuild it on an idle machine: autokd latency-table --space %s --force",
                       table.path, error, table.space)
    return table


# ---------------------------------------------------------------------------------------------
# How good were the predictions
# ---------------------------------------------------------------------------------------------


def prediction_error(trials: Iterable[dict[str, Any]]) -> dict[str, float | int | None]:
    """Error of ``predicted_latency_ms`` against the measured ``latency_ms`` over trials (%).

    Takes each trial's recorded fields (``autokd.record.TrialRecord.fields()``).
    """
    errors = []
    for attrs in trials:
        predicted, measured = attrs.get("predicted_latency_ms"), attrs.get("latency_ms")
        if predicted is not None and measured:
            errors.append(100.0 * (float(predicted) - float(measured)) / float(measured))
    return summarise_errors(errors)
