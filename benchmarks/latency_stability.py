"""How repeatable is ``autokd.cost.measure_latency`` within one process?

Measures one small CNN ``--runs`` times at batch 1 and at batch 64, with unrelated large
allocations in between (what a search does while training other candidates), and reports the
median latency and the coefficient of variation of the per-run medians. A search compares
candidates measured minutes apart, so the CV of medians is the noise floor of its latency
objective.

Usage: ``python benchmarks/latency_stability.py [--quick] [--runs 10] [--out results/benchmarks]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from autokd.cost import fix_allocator, measure_latency

__all__ = ["main"]

INPUT_SHAPE = (1, 16, 16)
BATCH_SIZES = (1, 64)


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),  # (B, 16, 16, 16)
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),  # (B, 16, 8, 8)
        nn.Conv2d(16, 32, 3, padding=1),  # (B, 32, 8, 8)
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).eval()


def disturb() -> None:
    """Allocate and free large blocks, as training another candidate would."""
    for mib in (8, 64, 200):
        block = torch.empty(mib * 2**18)  # float32: 2**18 elements per MiB
        block.fill_(1.0)
        del block


def summarise(medians: list[float]) -> dict[str, float | list[float]]:
    mean = statistics.fmean(medians)
    return {
        "median_ms": statistics.median(medians),
        "cv_of_medians": statistics.pstdev(medians) / mean,
        "runs_ms": medians,
    }


def run(runs: int, min_block_s: float = 0.02) -> dict[str, object]:
    model = small_cnn()
    medians: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
    for _ in range(runs):
        for batch_size in BATCH_SIZES:
            disturb()
            ms, _cv = measure_latency(model, INPUT_SHAPE, batch_size, threads=1,
                                      min_block_s=min_block_s)
            medians[batch_size].append(ms)
    per_batch = {b: summarise(m) for b, m in medians.items()}
    return {
        "median_ms": {str(b): s["median_ms"] for b, s in per_batch.items()},
        "cv_of_medians": {str(b): s["cv_of_medians"] for b, s in per_batch.items()},
        "runs_ms": {str(b): s["runs_ms"] for b, s in per_batch.items()},
        "input_shape": list(INPUT_SHAPE),
        "runs": runs,
        "threads": 1,
        "allocator_pinned": fix_allocator(),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--quick", action="store_true",
                        help="3 runs of 1 ms blocks instead of 10 of 20 ms (about a second)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = parser.parse_args(argv)
    load_before, cpu0, start = os.getloadavg(), time.process_time(), time.perf_counter()
    result = run(3, 0.001) if args.quick else run(args.runs)
    result.update({"quick": args.quick, "wall_s": round(time.perf_counter() - start, 2),
                   "cpu_s": round(time.process_time() - cpu0, 2),
                   "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg())})
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    (args.out / "latency_stability.json").write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
