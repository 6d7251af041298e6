"""What do image folders cost: decoding into the cache, and training from memory vs streamed?

A folder of generated 32x32 RGB PNGs (10 classes) is written to a temp directory, then:

- ``decode``: a cold ``load_data("folder:...")`` into an empty cache (content hash + decode +
  cache write), and a warm one (the cache mapped, its checksum verified), each repeated.
- ``trial``: the same student (``--family``: cnn depth 2, widths 8/16 by default) distilled
  for the same epochs from the same cached teacher logits, with the data in memory, streamed
  with 0 loader workers and streamed with 2, round-robin. Samples/s counts training samples over the whole ``fit``
  (validation included). The val accuracy of each mode is recorded: it must be identical.

Timings: min/median/max of ``--repeats`` (>= 5) runs; wall clock and CPU time (this process
plus reaped children, i.e. loader workers); the load average before and after.

Usage: ``python benchmarks/data_paths.py [--images 3000] [--epochs 2] [--repeats 5] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, set_threads, write_result

__all__ = ["main"]

STUDENTS = {"cnn": {"depth": 2, "widths": [8, 16]},
            "mbv2": {"stages": 2, "depths": 1, "widths": [16, 24], "expansion": 3},
            "resnet": {"stages": 2, "depths": 1, "widths": [8, 16]}}
TEACHER = {"depth": 2, "widths": [16, 32]}
MODES = {"memory": ("64G", 0), "stream_w0": ("1K", 0), "stream_w2": ("1K", 2)}


def _make_folder(root: Path, n: int, classes: int, size: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        c = i % classes
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.zeros((size, size, 3), np.int64)
        base[..., c % 3] = 60 + 60 * (c // 3)
        pixels = np.clip(base + rng.integers(0, 90, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")


def _clock() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    return time.perf_counter(), cpu


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    w0, c0 = _clock()
    out = fn()
    w1, c1 = _clock()
    return w1 - w0, c1 - c0, out


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "n": len(values)}


def _decode(source: str, repeats: int, tmp: Path) -> dict[str, Any]:
    from autokd.data import load_data

    cold, warm, cold_cpu, warm_cpu = [], [], [], []
    for r in range(repeats):
        os.environ["AUTOKD_CACHE"] = str(tmp / f"cache{r}")
        wall, cpu, data = _timed(lambda: load_data(source))
        cold.append(wall)
        cold_cpu.append(cpu)
        wall, cpu, _ = _timed(lambda: load_data(source))
        warm.append(wall)
        warm_cpu.append(cpu)
        log(f"decode repeat {r + 1}/{repeats}: cold {cold[-1]:.2f} s, warm {warm[-1]:.2f} s")
    n = sum(data.sizes().values())
    return {"images": n, "cold_wall_s": _stats(cold), "cold_cpu_s": _stats(cold_cpu),
            "warm_wall_s": _stats(warm), "warm_cpu_s": _stats(warm_cpu),
            "cold_images_per_s": n / statistics.median(cold)}


def _trial(data: Any, teacher: Any, epochs: int, family: str) -> float:
    from autokd.config import TrainConfig
    from autokd.distill import KDConfig
    from autokd.models import build_student
    from autokd.train import Trainer

    torch.manual_seed(1)
    student = build_student(family, STUDENTS[family], data.input_shape, data.num_classes)
    cfg = TrainConfig(epochs=epochs, batch_size=64, threads=1)
    return Trainer(student, data, cfg, KDConfig(), teacher).fit().val["accuracy"]


def _trials(source: str, epochs: int, repeats: int, tmp: Path,
            family: str = "cnn") -> dict[str, Any]:
    from autokd.data import load_data
    from autokd.models import build_student
    from autokd.teachers import load_teacher, save_checkpoint

    splits = {m: load_data(source, memory_budget=b, loader_workers=w)
              for m, (b, w) in MODES.items()}
    first = splits["memory"]
    assert all(s.split_hash == first.split_hash for s in splits.values())
    torch.manual_seed(0)
    net = build_student("cnn", TEACHER, first.input_shape, first.num_classes)
    teacher = load_teacher(save_checkpoint(net, tmp / "teacher.pt"), data=first)
    teacher.outputs(first, "train")  # cached KD: every mode reads the same cached logits
    n = first.sizes()["train"] * epochs
    wall: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    acc: dict[str, float] = {}
    for r in range(repeats):
        for mode, data in splits.items():
            w, c, acc[mode] = _timed(lambda d=data: _trial(d, teacher, epochs, family))
            wall[mode].append(w)
            cpu[mode].append(c)
        log(f"trial repeat {r + 1}/{repeats}: " +
            ", ".join(f"{m} {wall[m][-1]:.2f} s" for m in MODES))
    return {m: {"wall_s": _stats(wall[m]), "cpu_s": _stats(cpu[m]),
                "samples_per_s": n / statistics.median(wall[m]), "val_accuracy": acc[m]}
            for m in MODES}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--family", default="cnn", choices=sorted(STUDENTS),
                   help="the trial's student family (results: data_paths[_FAMILY].json)")
    p.add_argument("--quick", action="store_true", help="300 images, 1 epoch: a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.epochs = 300, 1
    set_threads(1)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="autokd-data-paths-") as name:
        tmp = Path(name)
        _make_folder(tmp / "images", args.images, args.classes, args.size)
        source = f"folder:{tmp / 'images'}"
        decode = _decode(source, args.repeats, tmp)
        trial = _trials(source, args.epochs, args.repeats, tmp, args.family)
    mem = trial["memory"]["samples_per_s"]
    payload = {
        "decode_images_per_s": decode["cold_images_per_s"],
        "stream_w0_vs_memory": trial["stream_w0"]["samples_per_s"] / mem,
        "stream_w2_vs_memory": trial["stream_w2"]["samples_per_s"] / mem,
        "same_val_accuracy": float(len({t["val_accuracy"] for t in trial.values()}) == 1),
        "config": {"images": args.images, "classes": args.classes, "size": args.size,
                   "epochs": args.epochs, "repeats": args.repeats, "family": args.family,
                   "student": STUDENTS[args.family],
                   "teacher": TEACHER, "batch_size": 64, "threads": 1,
                   "cpus": os.cpu_count()},
        "decode": decode,
        "trial": trial,
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
    }
    name = "data_paths" if args.family == "cnn" else f"data_paths_{args.family}"
    write_result(name, payload, quick=args.quick)
    return payload


if __name__ == "__main__":
    main()
