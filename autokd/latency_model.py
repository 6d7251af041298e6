"""The whole-model correction a latency table applies to its summed per-op timings.

Why a correction: ops timed alone do not add up to the model. Each timed op pays a call's
fixed cost and sees a cold output buffer that a whole model shares, so on CPU the raw sum of a
table's ops overshot whole models by 20-45 % here (more at batch 64 and for inverted-residual
blocks, whose depthwise conv, SE gate and residual add share memory traffic), and a constant
overhead per depth cannot remove an error that grows with the model. The correction is a
linear model over features that are themselves sums over ops,

    predicted = scale * sum(op ms) + per_op * number of ops + intercept,

fitted by least squares on *relative* residuals (every calibration model counts the same,
whatever its size) over whole models timed on the device. Because every feature is a sum over
ops, a corrected op cost ``scale * ms + per_op`` keeps a model's prediction a sum over its ops,
which DARTS needs for its expected latency under the architecture weights.

Why leave-one-out: the error a table reports must be that of models the fit never saw, so each
calibration model is predicted by the correction refitted without it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["AtBatch", "Correction", "MeasureFn", "ProgressFn", "calibrate_rows",
           "fit_correction", "held_out_errors", "summarise_errors", "time_entries",
           "time_models"]

MeasureFn = Callable[[nn.Module, tuple[int, ...]], float]  # ms of one forward of one sample
ProgressFn = Callable[[int, int], None]

# fewer models than this per coefficient and the fit falls back to fewer coefficients
_MODELS_PER_COEF = 2


@dataclass(frozen=True)
class Correction:
    """``scale * parts_ms + per_op * n_ops + intercept`` (milliseconds)."""

    scale: float = 1.0
    per_op: float = 0.0
    intercept: float = 0.0

    def predict(self, parts_ms: float, n_ops: int) -> float:
        return self.scale * parts_ms + self.per_op * n_ops + self.intercept

    def op_ms(self, raw_ms: float) -> float:
        """One op's share of a prediction (its timing scaled, plus the per-op term)."""
        return self.scale * raw_ms + self.per_op

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, float]) -> Correction:
        return cls(float(raw["scale"]), float(raw["per_op"]), float(raw["intercept"]))


def _solve(parts: np.ndarray, n_ops: np.ndarray, measured: np.ndarray) -> Correction:
    """Weighted least squares on relative error, with the richest form the data supports.

    Forms, richest first: (scale, per_op, intercept), (scale, intercept), then without a
    scale (a model's time not following its ops' at all, e.g. all call overhead): (per_op,
    intercept), (intercept). A form needs two models per coefficient, an op count that varies
    if it has ``per_op``, and a positive scale if it has one. Under four models the raw sum
    plus the median residual is kept (the table's old per-depth overhead).
    """
    n = len(measured)
    if n < 2 * _MODELS_PER_COEF:
        return Correction(intercept=float(np.median(measured - parts)) if n else 0.0)
    w = 1.0 / measured
    columns = {"scale": parts, "per_op": n_ops.astype(float), "intercept": np.ones(n)}
    forms = [("scale", "per_op", "intercept"), ("scale", "intercept"), ("per_op", "intercept"),
             ("intercept",)]
    for form in forms:
        if n < len(form) * _MODELS_PER_COEF or ("per_op" in form and np.ptp(n_ops) == 0):
            continue
        x = np.stack([columns[c] for c in form], axis=1)
        coef, *_ = np.linalg.lstsq(x * w[:, None], measured * w, rcond=None)
        fitted = {"scale": 0.0, **dict(zip(form, map(float, coef)))}
        if fitted["scale"] > 1e-6 * float(np.max(measured / np.maximum(parts, 1e-12))) or \
                "scale" not in form:
            return Correction(**fitted)
    raise AssertionError("the intercept-only form always fits")  # pragma: no cover


def fit_correction(parts_ms: Sequence[float], n_ops: Sequence[int],
                   measured_ms: Sequence[float]) -> Correction:
    """The correction fitted on all the given calibration models."""
    return _solve(np.asarray(parts_ms, float), np.asarray(n_ops, float),
                  np.asarray(measured_ms, float))


def held_out_errors(parts_ms: Sequence[float], n_ops: Sequence[int],
                    measured_ms: Sequence[float]) -> list[float | None]:
    """Signed % error of each model predicted by the correction fitted without it.

    None where too few other models remain to fit anything (a single calibration model).
    """
    parts = np.asarray(parts_ms, float)
    ops = np.asarray(n_ops, float)
    measured = np.asarray(measured_ms, float)
    out: list[float | None] = []
    for k in range(len(measured)):
        keep = np.arange(len(measured)) != k
        if not keep.any():
            out.append(None)
            continue
        fit = _solve(parts[keep], ops[keep], measured[keep])
        predicted = fit.predict(float(parts[k]), int(ops[k]))
        out.append(float(100.0 * (predicted - measured[k]) / measured[k]))
    return out


def summarise_errors(errors: Sequence[float | None]) -> dict[str, float | int | None]:
    """n, mean, median and max absolute % error, and the signed mean (bias)."""
    values = [float(e) for e in errors if e is not None]
    if not values:
        return {"n": 0, "mean_abs_pct": None, "median_abs_pct": None, "max_abs_pct": None,
                "bias_pct": None}
    absolute = [abs(e) for e in values]
    return {"n": len(values), "mean_abs_pct": statistics.fmean(absolute),
            "median_abs_pct": statistics.median(absolute), "max_abs_pct": max(absolute),
            "bias_pct": statistics.fmean(values)}


class AtBatch(nn.Module):
    """Runs ``module`` on a fixed batch of ``batch`` samples, whatever input it is given.

    Why: a table's timing function measures a module on one sample; wrapping the module
    times it at the deploy batch through the same function (the same runtime, threads and
    repeats) without a second timing path. The buffer is made once, so no copy is timed.
    """

    def __init__(self, module: nn.Module, in_shape: tuple[int, ...], batch: int) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("batch", torch.zeros(batch, *in_shape), persistent=False)

    def forward(self, _x: torch.Tensor) -> torch.Tensor:
        return self.module(self.batch)


def calibrate_rows(rows: list[dict[str, Any]]) -> dict[str, Correction]:
    """Fit the correction per batch on whole models; fill each row's held-out error.

    Each row holds ``parts_ms`` / ``parts_ms_batch`` (summed raw op timings), ``n_ops`` and
    ``runs_ms`` / ``runs_ms_batch`` (the model timed in several interleaved passes). Adds the
    median (``measured_ms``), the run-to-run CV (``cv``), the prediction of the correction fitted
    on all rows (``predicted_ms``) and the one fitted without the row (``loo_error_pct``), each
    with a ``_batch`` twin for the deploy batch.
    """
    fits = {}
    for batch, suffix in (("1", ""), ("deploy", "_batch")):
        for row in rows:
            runs = row[f"runs_ms{suffix}"]
            row[f"measured_ms{suffix}"] = statistics.median(runs)
            mean = statistics.fmean(runs)
            row[f"cv{suffix}"] = statistics.pstdev(runs) / mean if len(runs) > 1 else None
        parts = [r[f"parts_ms{suffix}"] for r in rows]
        ops = [r["n_ops"] for r in rows]
        measured = [r[f"measured_ms{suffix}"] for r in rows]
        fits[batch] = fit_correction(parts, ops, measured)
        for row, err in zip(rows, held_out_errors(parts, ops, measured)):
            row[f"predicted_ms{suffix}"] = fits[batch].predict(row[f"parts_ms{suffix}"],
                                                               row["n_ops"])
            row[f"loo_error_pct{suffix}"] = err
    return fits


def time_entries(ops: list[tuple[str, nn.Module, tuple[int, ...]]], measure: MeasureFn,
                 batch_size: int, passes: int,
                 progress: ProgressFn | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Every op at batch 1 and at the deploy batch, once per pass, passes apart; each keeps its
    fastest pass (other processes only ever add time)."""
    entries: dict[str, float] = {}
    batched: dict[str, float] = {}
    wrapped = [(key, module, AtBatch(module, shape, batch_size), shape)
               for key, module, shape in ops]
    total, done = len(ops) * passes, 0
    for _ in range(passes):
        for key, module, at_batch, shape in wrapped:
            entries[key] = min(measure(module, shape), entries.get(key, math.inf))
            batched[key] = min(measure(at_batch, shape), batched.get(key, math.inf))
            done += 1
            if progress is not None:
                progress(done, total)
    return entries, batched


def time_models(rows: list[dict[str, Any]], models: list[nn.Module], measure: MeasureFn,
                input_shape: tuple[int, ...], batch_size: int, passes: int) -> None:
    """Each whole model at batch 1 and at the deploy batch, in ``max(3, passes)`` interleaved
    passes (three at least: the median and run-to-run variation need them)."""
    batched = [AtBatch(m, input_shape, batch_size) for m in models]
    for row in rows:
        row["runs_ms"], row["runs_ms_batch"] = [], []
    for _ in range(max(3, passes)):
        for row, model, at_batch in zip(rows, models, batched):
            row["runs_ms"].append(measure(model, input_shape))
            row["runs_ms_batch"].append(measure(at_batch, input_shape))
