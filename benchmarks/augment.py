"""Augmentation-aware distillation: no augmentation vs an online teacher vs the replay cache.

One fixed student and the dataset's default teacher; three ways to train it:

- ``none``: no augmentation, cached clean teacher logits (the trainer's default).
- ``online``: each batch augmented, the teacher run on it (correct, a teacher forward per step).
- ``replay``: each batch augmented with one of K fixed draws per sample whose teacher logits
  were computed once (Fast Knowledge Distillation, Shen & Xing 2022); the teacher never runs in
  the loop. As in a search, every seed shares one cache (``replay_seed`` 0).

Reported: test accuracy over seeds (mean ± sample std; a paired Wilcoxon test against ``none``
with >= 6 seeds), training throughput (samples/s of ``Trainer.fit`` over its epochs, per-epoch
validation included; >= 5 round-robin repeats, min/median/max, wall and this process's CPU
time, load average before and after), and the one-off replay-cache build time.

The default recipe is ``crop`` (pad 1/8, crop back): flips do not preserve digit labels.

Usage: ``python benchmarks/augment.py [--dataset digits] [--recipe crop] [--seeds 6]
[--epochs 30] [--repeats 5] [--replay-k 8] [--name augment] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

import torch
from _common import log, mean_std, pm, set_threads, teacher_for, write_result

from autokd.config import TrainConfig
from autokd.data import SOURCES, DataSplits, load_data
from autokd.data.augment import get_augment
from autokd.distill import KDConfig
from autokd.models import build_student, default_family
from autokd.replay import clear_memory_cache, replay_cache
from autokd.train import Trainer

__all__ = ["main"]

STUDENT = {"depth": 2, "widths": [8, 16]}
MODES = ("none", "online", "replay")


def _cfg(mode: str, recipe: str, epochs: int, seed: int, k: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, seed=seed, threads=1,
                       augment="none" if mode == "none" else recipe,
                       aug_teacher="online" if mode == "online" else "replay", replay_k=k)


def _trainer(data: DataSplits, teacher: Any, cfg: TrainConfig) -> Trainer:
    torch.manual_seed(cfg.seed)
    family = default_family(data.input_shape)  # cnn for images, cnn1d for signals
    student = build_student(family, STUDENT, data.input_shape, data.num_classes)
    return Trainer(student, data, cfg, KDConfig(), teacher)


def accuracy(data: DataSplits, teacher: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Test accuracy per mode over seeds (same seeds, same initial weights per seed)."""
    per_mode: dict[str, list[float]] = {m: [] for m in MODES}
    for seed in range(args.seeds):
        for mode in MODES:
            cfg = _cfg(mode, args.recipe, args.epochs, seed, args.replay_k)
            per_mode[mode].append(_trainer(data, teacher, cfg).fit().test["accuracy"])
            log(f"seed {seed} {mode}: test accuracy {per_mode[mode][-1]:.4f}")
    out: dict[str, Any] = {m: mean_std(v) for m, v in per_mode.items()}
    for mode in ("online", "replay"):
        out[f"{mode}_vs_none"] = _paired(per_mode[mode], per_mode["none"])
    out["replay_vs_online"] = _paired(per_mode["replay"], per_mode["online"])
    return out


def _paired(a: list[float], b: list[float]) -> dict[str, Any]:
    diffs = [x - y for x, y in zip(a, b)]
    out: dict[str, Any] = {"mean_diff": statistics.fmean(diffs),
                           "better_on": f"{sum(d > 0 for d in diffs)}/{len(diffs)}"}
    if len(diffs) < 6 or not any(diffs):
        out["test"] = "descriptive (fewer than 6 seeds or no differences)"
        return out
    from scipy.stats import wilcoxon

    out["test"] = "wilcoxon signed-rank, two-sided"
    out["p_value"] = float(wilcoxon(diffs).pvalue)
    return out


def throughput(data: DataSplits, teacher: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Samples/s of ``fit`` per mode, modes interleaved so load drifts hit them alike."""
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for _ in range(args.repeats):
        for mode in MODES:
            trainer = _trainer(data, teacher, _cfg(mode, args.recipe, args.timing_epochs, 0,
                                                    args.replay_k))
            wall, cpu = time.perf_counter(), time.process_time()
            result = trainer.fit()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            samples = args.timing_epochs * len(data.x_train)
            runs[mode].append({"loop_samples_per_s": result.samples_per_second,
                               "fit_wall_s": wall, "fit_cpu_s": cpu,
                               "samples_per_cpu_s": samples / cpu})
    return {m: _spread(r) for m, r in runs.items()}


def _spread(runs: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"repeats": len(runs)}
    for key in runs[0]:
        vals = sorted(r[key] for r in runs)
        out[key] = {"min": vals[0], "median": statistics.median(vals), "max": vals[-1]}
    return out


def cache_build(data: DataSplits, teacher: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Cold build (teacher on K draws of the train split) and warm disk load, repeated.

    Each repeat gets an empty cache directory, so no earlier run's file turns a build into a
    load.
    """
    aug = get_augment(args.recipe, data.kind)
    build, load = [], []
    previous = os.environ.get("AUTOKD_CACHE")
    try:
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                os.environ["AUTOKD_CACHE"] = tmp
                build.append(_timed_cache(teacher, data, aug, args.replay_k))
                load.append(_timed_cache(teacher, data, aug, args.replay_k))
    finally:
        os.environ.pop("AUTOKD_CACHE", None)
        if previous is not None:
            os.environ["AUTOKD_CACHE"] = previous
    return {"build_s": _spread([{"s": b} for b in build])["s"],
            "disk_load_s": _spread([{"s": v} for v in load])["s"],
            "k": args.replay_k, "train_samples": len(data.x_train)}


def _timed_cache(teacher: Any, data: DataSplits, aug: Any, k: int) -> float:
    clear_memory_cache()
    t0 = time.perf_counter()
    replay_cache(teacher, data, aug, k, 0)
    seconds = time.perf_counter() - t0
    clear_memory_cache()
    return seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=None,
                   help="default mnist5k when installed, else digits; --quick: digits")
    p.add_argument("--recipe", default="crop")
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--timing-epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--replay-k", type=int, default=8)
    p.add_argument("--name", default="augment", help="result file results/benchmarks/NAME.json")
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny teacher and budget")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.timing_epochs, args.repeats = 2, 2, 1, 2
    if args.dataset is None:
        args.dataset = "digits" if args.quick or "mnist5k" not in SOURCES else "mnist5k"
    set_threads(1)
    data = load_data(args.dataset)
    get_augment(args.recipe, data.kind)  # a recipe that does not fit fails before any work
    teacher, teacher_path = teacher_for(data, quick=args.quick)
    load_before, cpu0 = os.getloadavg(), time.process_time()
    acc = accuracy(data, teacher, args)
    speed = throughput(data, teacher, args)
    build = cache_build(data, teacher, args)
    payload = {
        "benchmark": "augment", "quick": args.quick, "dataset": data.describe(),
        "recipe": args.recipe, "student": {"family": default_family(data.input_shape), **STUDENT},
        "teacher": str(teacher_path), "teacher_test_accuracy": teacher.accuracy(data),
        "epochs": args.epochs, "seeds": args.seeds, "replay_k": args.replay_k,
        "test_accuracy": acc, "throughput": speed, "replay_cache": build,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "cpu_seconds_total": time.process_time() - cpu0,
        "torch_threads": torch.get_num_threads(),
    }
    payload.update(_headline(acc, speed, build))
    for mode in MODES:
        log(f"{mode}: accuracy {pm(acc[mode])} %, "
            f"{speed[mode]['loop_samples_per_s']['median']:.0f} samples/s (median)")
    write_result(args.name, payload, quick=args.quick)
    return payload


def _headline(acc: dict[str, Any], speed: dict[str, Any], build: dict[str, Any]) -> dict[str, Any]:
    """Top-level floats (the benchmark JSON convention)."""
    med = {m: speed[m]["loop_samples_per_s"]["median"] for m in MODES}
    return {f"{m}_test_accuracy_mean": acc[m]["mean"] for m in MODES} | {
        f"{m}_samples_per_s_median": med[m] for m in MODES} | {
        "replay_speedup_vs_online": med["replay"] / med["online"],
        "replay_build_s_median": build["build_s"]["median"]}


if __name__ == "__main__":
    main()
