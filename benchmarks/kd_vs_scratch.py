"""Does distillation beat training from scratch for the same small student?

For each dataset: the cached default teacher (``autokd.teachers.default_teacher``), one small
student with at least 10x fewer FLOPs, trained ``--epochs`` epochs per seed twice through
``autokd.pipeline.run_distillation``: with the default KD recipe (KL, T=4, alpha=0.9; see
``--temperature`` / ``--alpha``) and from scratch (the same recipe with every teacher term
off, ``KDConfig.scratch``). Same data split, same teacher, same seeds (the seed fixes the
student's initialisation and batch order), so the only difference is the teacher's signal.
Reports test accuracy mean ± sample std.

Why 100 epochs by default: with short budgets KD can rank *below* scratch (the softened
targets slow early progress), which says nothing about the converged benefit.

Usage: ``python benchmarks/kd_vs_scratch.py [--datasets digits mnist1d] [--seeds 0 1 2]
[--epochs 100] [--student mnist1d=cnn1d:depth=3,widths=8/16/16,kernel=5] [--quick]``
(``--quick``: 1 seed, 1 epoch, 1000 MNIST-1D samples, 1-epoch teachers: the plumbing only).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from _common import log, mean_std, pm, quick_teacher, set_threads, teacher_for, write_result

from autokd.config import CostConfig, DataConfig, TrainConfig
from autokd.data import DataSplits, load_data
from autokd.distill import KDConfig
from autokd.models import parse_student_arg
from autokd.pipeline import run_distillation, teacher_profile
from autokd.teachers import Teacher

__all__ = ["STUDENTS", "main"]

#: dataset -> (family, spec) of the default student; each has >= 10x fewer FLOPs than the teacher
STUDENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "digits": ("cnn", {"depth": 2, "widths": [8, 16], "kernel": 3}),
    "mnist1d": ("cnn1d", {"depth": 3, "widths": [8, 16, 16], "kernel": 5}),
}
NO_LATENCY = CostConfig(latency=False)
MIN_COMPRESSION = 10.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--temperature", type=float, default=KDConfig.temperature)
    ap.add_argument("--alpha", type=float, default=KDConfig.alpha, help="weight of the KD term")
    ap.add_argument(
        "--student",
        action="append",
        default=[],
        metavar="DATASET=FAMILY:SPEC",
        help="override a dataset's student, e.g. mnist1d=cnn1d:depth=2,widths=8/16",
    )
    ap.add_argument("--num-samples", type=int, default=None,
                    help="generated samples of mnist1d (default: the source's 5000)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 seed, 1 epoch, 1000 mnist1d samples")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    args.students = dict(STUDENTS)
    for item in args.student:
        dataset, _, text = item.partition("=")
        args.students[dataset] = parse_student_arg(text)
    if args.quick:
        args.seeds, args.epochs = args.seeds[:1], 1
        args.num_samples = args.num_samples or 1000
    args.kd = KDConfig(temperature=args.temperature, alpha=args.alpha).validate()
    return args


def one_run(
    data: DataSplits,
    teacher: Teacher,
    student: tuple[str, dict[str, Any]],
    kd: KDConfig,
    cfg: TrainConfig,
) -> dict[str, Any]:
    family, spec = student
    t0 = time.perf_counter()
    metrics = run_distillation(data, teacher, family, spec, kd, cfg, NO_LATENCY).metrics()
    keep = (
        "val_accuracy",
        "test_accuracy",
        "retention",
        "params",
        "flops",
        "flops_compression",
        "params_compression",
        "best_epoch",
    )
    return {k: metrics.get(k) for k in keep} | {"seconds": round(time.perf_counter() - t0, 1)}


def compare_on(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """KD and scratch runs of one dataset's student over every seed, plus the summary."""
    generated = name == "mnist1d"  # the only source here whose size is a setting
    data = load_data(DataConfig(source=name, num_samples=args.num_samples if generated else None))
    # quick: a 1-epoch teacher (the 3-epoch one of ``teacher_for`` dominates a smoke run)
    teacher, path = quick_teacher(data, epochs=1) if args.quick else teacher_for(data)
    profile = teacher_profile(teacher, data, NO_LATENCY)
    runs: dict[str, list[dict[str, Any]]] = {"kd": [], "scratch": []}
    for seed in args.seeds:
        cfg = TrainConfig(epochs=args.epochs, lr=args.lr, seed=seed)
        for arm, kd in (("kd", args.kd), ("scratch", args.kd.scratch())):
            row = one_run(data, teacher, args.students[name], kd, cfg)
            runs[arm].append({"seed": seed, **row})
            log(f"{name} seed {seed} {arm}: test {row['test_accuracy']:.4f} ({row['seconds']} s)")
    compression = runs["kd"][0]["flops_compression"]
    if compression is None or compression < MIN_COMPRESSION:
        log(f"warning: {name} student has only {compression}x fewer FLOPs than the teacher")
    return summarise(name, data, profile, path, args, runs)


def summarise(
    name: str,
    data: DataSplits,
    profile: dict[str, Any],
    path: Any,
    args: argparse.Namespace,
    runs: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    family, spec = args.students[name]
    stats = {
        arm: {k: mean_std([r[k] for r in rows]) for k in ("test_accuracy", "val_accuracy")}
        for arm, rows in runs.items()
    }
    pairs = zip(runs["kd"], runs["scratch"], strict=True)
    gain = [k["test_accuracy"] - s["test_accuracy"] for k, s in pairs]
    first = runs["kd"][0]
    return {
        "dataset": data.describe(),
        "teacher": {
            k: profile.get(k) for k in ("name", "val_accuracy", "test_accuracy", "params", "flops")
        }
        | {"path": str(path)},
        "student": {
            "family": family,
            "spec": spec,
            "params": first["params"],
            "flops": first["flops"],
            "flops_compression": first["flops_compression"],
            "params_compression": first["params_compression"],
        },
        "kd_recipe": dataclasses.asdict(args.kd),
        "epochs": args.epochs,
        "kd": stats["kd"],
        "scratch": stats["scratch"],
        "kd_gain_test": mean_std(gain),
        "text": f"KD {pm(stats['kd']['test_accuracy'])} % vs scratch "
        f"{pm(stats['scratch']['test_accuracy'])} % (teacher "
        f"{profile['test_accuracy'] * 100:.1f} %)",
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    results = {name: compare_on(name, args) for name in args.datasets}
    payload = {
        "benchmark": "kd_vs_scratch",
        "quick": args.quick,
        "seeds": args.seeds,
        "std": "sample std (ddof=1) over seeds",
        "results": results,
    }
    write_result("kd_vs_scratch", payload, quick=args.quick)
    return payload


if __name__ == "__main__":
    main()
