"""The GPU check: cached-KD training throughput in fp32 vs bf16 autocast, host syncs per
step, and how well a CUDA latency table predicts whole students.

Why one short script: a GPU machine is lent for minutes, with torch and numpy but without
Optuna, fvcore or pandas, so this imports only the trainer, the models, the latency code and
the latency table (none of which need them) and finishes in well under four minutes.

What it measures, on synthetic 32x32 RGB data (10 classes) with cached teacher logits:
- samples/s of ``Trainer.fit`` for an MobileNetV2-like student, fp32 and bf16 autocast,
  ``--repeats`` runs each after one untimed warm-up run (min/median/max, CPU time beside);
- host syncs per optimiser step (``torch.cuda.set_sync_debug_mode``): the design allows the
  one ``loss.item()``;
- the latency table's error: predicted (sum of per-op entries + per-depth overhead) vs
  measured (CUDA events) batch-1 latency for held-out students, plus the table's own
  leave-one-out error on its calibration models.

Usage: ``python benchmarks/gpu.py`` on a CUDA machine (prints ``{"skipped": ...}`` and exits
0 without one); ``--quick`` runs a tiny version on whatever device there is (smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo's autokd, installed or not

import torch
from torch import nn

from autokd.config import TrainConfig
from autokd.cost.latency import measure_latency
from autokd.data import DataSplits
from autokd.distill import KDConfig
from autokd.train import Trainer

__all__ = ["main"]

NUM_CLASSES = 10
OUT = ROOT / "results" / "benchmarks" / "gpu.json"
QUICK_OUT = Path(tempfile.gettempdir()) / "autokd-bench-quick" / "gpu.json"
# the cnn space, narrowed so the table builds in seconds (widths span 8x, kernels 3 and 5)
DECISIONS = {"depth": [1, 2, 3], "widths_0": [8, 16, 32, 64], "widths_1": [8, 16, 32, 64],
             "widths_2": [8, 16, 32, 64], "kernel": [3, 5], "pool": ["max", "stride"],
             "activation": ["relu"]}
QUICK_DECISIONS = {"depth": [1, 2], "widths_0": [4, 8], "widths_1": [4, 8], "kernel": [3],
                   "pool": ["max"], "activation": ["relu"]}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the student -------------------------------------------------------------------------------
class _InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 project, residual if shapes keep."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.body = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(True),
            nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)  # (B, C_out, H/s, W/s)
        return x + out if self.residual else out


class InvertedResidualStandIn(nn.Sequential):
    """A small MobileNetV2-like CNN for 32x32 inputs, used when no ``mbv2`` family exists."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        stages = [(16, 24, 2), (24, 24, 1), (24, 32, 2), (32, 32, 1), (32, 64, 2)]
        super().__init__(
            nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(True),
            *[_InvertedResidual(a, b, s, 6) for a, b, s in stages],
            nn.Conv2d(64, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU6(True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes))


def build_student(input_shape: tuple[int, ...]) -> tuple[nn.Module, str]:
    """The ``mbv2`` family's default student when registered, else the stand-in (labelled)."""
    from autokd.errors import AutokdError
    from autokd.models import build_student as build

    try:
        return build("mbv2", {}, input_shape, NUM_CLASSES), "autokd mbv2 family (default spec)"
    except (AutokdError, KeyError, ValueError):
        return (InvertedResidualStandIn(NUM_CLASSES, input_shape[0]),
                "local inverted-residual stand-in (no mbv2 family registered)")


# -- data and a cached teacher -----------------------------------------------------------------
class CachedTeacher:
    """Fixed logits per split, as ``Teacher.outputs`` returns them after its first call."""

    module = None

    def __init__(self, data: DataSplits, seed: int = 0) -> None:
        self.feature_taps: list[str] = []
        gen = torch.Generator().manual_seed(seed)
        self._logits = {s: torch.randn(1, len(data.split(s)[1]), NUM_CLASSES, generator=gen)
                        for s in ("train", "val", "test")}  # each (M=1, N, K)

    def outputs(self, data: DataSplits, split: str) -> torch.Tensor:
        return self._logits[split]


def synthetic(n_train: int, side: int, n_eval: int = 256, seed: int = 0) -> DataSplits:
    """Normalised random 3 x side x side images with random labels (throughput only)."""
    gen = torch.Generator().manual_seed(seed)

    def part(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randn(n, 3, side, side, generator=gen),
                torch.randint(0, NUM_CLASSES, (n,), generator=gen))

    (xt, yt), (xv, yv), (xs, ys) = part(n_train), part(n_eval), part(n_eval)
    return DataSplits("synthetic", "image", (3, side, side), NUM_CLASSES, xt, yt, xv, yv, xs, ys,
                      f"synthetic-{n_train}-{side}", [str(k) for k in range(NUM_CLASSES)], {})


# -- throughput --------------------------------------------------------------------------------
def _fit(data: DataSplits, device: str, amp: bool, epochs: int, batch: int) -> dict[str, float]:
    torch.manual_seed(0)
    student, _ = build_student(data.input_shape)
    cfg = TrainConfig(epochs=epochs, batch_size=batch, device=device, amp=amp)
    trainer = Trainer(student, data, cfg, KDConfig(), CachedTeacher(data))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = trainer.fit()
    return {"samples_per_s": result.samples_per_second,
            "wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}


def _stats(values: list[float]) -> dict[str, Any]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "n": len(values), "values": values}


def throughput(data: DataSplits, device: str, repeats: int, epochs: int,
               batch: int) -> dict[str, Any]:
    """fp32 and bf16 samples/s, each after one untimed warm-up run (cuDNN autotuning)."""
    out: dict[str, Any] = {}
    for name, amp in (("fp32", False), ("bf16_autocast", True)):
        _fit(data, device, amp, 1, batch)
        runs = [_fit(data, device, amp, epochs, batch) for _ in range(repeats)]
        out[name] = {"samples_per_s": _stats([r["samples_per_s"] for r in runs]),
                     "wall_s": _stats([r["wall_s"] for r in runs]),
                     "cpu_s": _stats([r["cpu_s"] for r in runs]),
                     "amp_active": amp and device.startswith("cuda")}
        log(f"{name}: median {out[name]['samples_per_s']['median']:.0f} samples/s")
    fp32, bf16 = (out[k]["samples_per_s"]["median"] for k in ("fp32", "bf16_autocast"))
    out["bf16_speedup"] = bf16 / fp32
    return out


def syncs_per_step(data: DataSplits, batch: int) -> dict[str, Any]:
    """Host syncs of one bf16 epoch, counted by CUDA's sync debug mode (warn)."""
    steps = -(-len(data.y_train) // batch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            _fit(data, "cuda", True, 1, batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught
             if "synchroniz" in str(w.message).lower()]
    kinds: dict[str, int] = {}
    for s in syncs:
        kinds[s[:120]] = kinds.get(s[:120], 0) + 1
    return {"steps": steps, "syncs": len(syncs), "per_step": len(syncs) / steps, "kinds": kinds}


# -- the latency table -------------------------------------------------------------------------
def latency_table_error(device: str, side: int, quick: bool) -> dict[str, Any]:
    """Build a table for a narrowed cnn space; predict and measure held-out students."""
    from autokd.latency_table import TableSettings, build_table
    from autokd.models import build_student as build
    from autokd.models.supernet import build_supernet

    decisions = QUICK_DECISIONS if quick else DECISIONS
    net = build_supernet("cnn", decisions, {"batch_norm": True}, (3, side, side), NUM_CLASSES)
    settings = TableSettings(warmup=3, repeats=3, min_block_s=0.002 if quick else 0.005,
                             passes=1 if quick else 2, calibration=2 if quick else 4)
    t0 = time.perf_counter()
    table = build_table(net, "cnn-narrow", device, threads=1, settings=settings)
    build_s = time.perf_counter() - t0
    rng, rows = random.Random(1), []
    for _ in range(3 if quick else 8):
        choice = {n: rng.choice(opts) for n, opts in net.decisions.items()}
        spec = net.spec_for(choice)
        model = build(net.family, spec, net.input_shape, net.num_classes)
        predicted = sum(table.latency(op) for op in net.ops_for(choice))
        measured, cv = measure_latency(model, net.input_shape, 1, warmup=5, repeats=7,
                                       device=device, min_block_s=settings.min_block_s)
        rows.append({"spec": spec, "predicted_ms": predicted, "measured_ms": measured,
                     "cv": cv, "error_pct": 100 * (predicted - measured) / measured})
    errors = [abs(r["error_pct"]) for r in rows]
    return {"ops": len(table.entries), "build_s": build_s, "table_loo": table.error(),
            "held_out": rows, "mean_abs_error_pct": statistics.fmean(errors),
            "max_abs_error_pct": max(errors), "bias_pct":
                statistics.fmean(r["error_pct"] for r in rows)}


# -- main ----------------------------------------------------------------------------------------
def _environment(device: str) -> dict[str, Any]:
    env = {"torch": torch.__version__, "python": sys.version.split()[0], "device": device,
           "loadavg": list(os.getloadavg())}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
    return env


def run(quick: bool, repeats: int) -> dict[str, Any]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # quick: a smoke test of the plumbing on a CPU in seconds (16x16, one thread)
    side, n_train, n_eval, epochs, batch = (16, 64, 64, 1, 32) if quick else \
        (32, 16384, 1024, 2, 256)
    if quick:
        torch.set_num_threads(1)
    data = synthetic(n_train, side, n_eval)
    _, student_name = build_student(data.input_shape)
    payload: dict[str, Any] = {"benchmark": "gpu", "quick": quick,
                               "environment": _environment(device), "student": student_name,
                               "setup": {"input": [3, side, side], "classes": NUM_CLASSES,
                                         "train_samples": n_train, "epochs_per_run": epochs,
                                         "batch_size": batch, "repeats": repeats,
                                         "recipe": "cached-logit KD (kl, T=4, alpha=0.9)"}}
    log(f"throughput on {device} ({student_name})")
    payload["throughput"] = throughput(data, device, repeats, epochs, batch)
    if device == "cuda":
        payload["host_syncs"] = syncs_per_step(data, batch)
    log("latency table")
    payload["latency_table"] = latency_table_error(device, side, quick)
    payload["environment"]["loadavg_end"] = list(os.getloadavg())
    # top-level floats for dashboards (DESIGN.md: benchmark targets are top-level floats)
    payload["bf16_speedup"] = payload["throughput"]["bf16_speedup"]
    payload["latency_table_mean_abs_error_pct"] = payload["latency_table"]["mean_abs_error_pct"]
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run, any device")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per mode (>= 5)")
    args = parser.parse_args(argv)
    if not args.quick and not torch.cuda.is_available():
        print(json.dumps({"benchmark": "gpu", "skipped": "no CUDA device"}))
        return 0
    t0 = time.perf_counter()
    payload = run(args.quick, max(5, args.repeats))
    payload["total_s"] = time.perf_counter() - t0
    path = QUICK_OUT if args.quick else OUT
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2, default=str)
    path.write_text(text + "\n")
    print(text)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
