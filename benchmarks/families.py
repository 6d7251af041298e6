"""Do the mbv2 and resnet spaces give better (accuracy, FLOPs) fronts than the plain CNNs?

Protocol, per dataset (``mnist5k``: mbv2, resnet vs cnn; ``mnist1d``: mbv2, resnet vs cnn1d):

1. One teacher per dataset (the cached default teacher; ``--quick``: a 3-epoch one), the same
   for every space and seed.
2. Each (space, seed) is one search with the same budget: ``--trials`` (12) TPE trials (the
   default sampler) of ``--epochs`` epochs, no latency measurement, one torch thread.
3. Hypervolume of each search's validation front of (accuracy, FLOPs) on ONE scale per
   dataset: the union of the compared spaces' ``space_scale`` ranges (FrontScale.union), so a
   space that reaches cheaper or dearer students is not rewarded by a private scale.
4. Per space: HV mean ± std over seeds and a paired two-sided Wilcoxon test against the plain
   CNN (paired by seed; "descriptive" below 6 seeds); the best student (by validation
   accuracy, its test accuracy quoted) at <= 1/10 of the teacher's FLOPs.

Resume and budget: every finished search is written to the JSON at once and skipped by a
rerun with the same protocol; ``--cpu-minutes`` stops starting new searches once this run's
searches have used that much CPU. Usage: ``python benchmarks/families.py [--seeds 0 1 2]
[--trials 12] [--epochs 6] [--cpu-minutes 15] [--quick]`` (``--quick``: 1 seed, 2 trials of
1 epoch, 1000 MNIST-1D samples).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    load_resumable,
    log,
    mean_std,
    pm,
    result_path,
    save_atomic,
    set_threads,
    teacher_for,
)
from _efficiency_score import paired_test

from autokd.config import CostConfig, DataConfig, SearchConfig, SearchSettings, TrainConfig
from autokd.data import load_data
from autokd.pareto import FrontScale
from autokd.pipeline import teacher_profile
from autokd.record import TrialRecord
from autokd.scale import space_scale
from autokd.search import run_search
from autokd.space import load_space

__all__ = ["main", "parse_args"]

NAME = "families"
SPACES = {"mnist5k": ("cnn", "mbv2", "resnet"), "mnist1d": ("cnn1d", "mbv2", "resnet")}
OBJECTIVES = ("accuracy", "flops")
PROTOCOL_KEYS = ("trials", "epochs")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(SPACES), choices=list(SPACES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--cpu-minutes", type=float, default=None,
                   help="stop starting new searches after this much CPU in this run")
    p.add_argument("--spaces", nargs="+", help="the spaces to compare on every --datasets one, "
                   "the first being the baseline (default: the table above)")
    p.add_argument("--name", default=NAME, help="results/benchmarks/NAME.json")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny budget, temp output")
    args = p.parse_args(argv)
    args.space_table = {d: tuple(args.spaces) if args.spaces else SPACES[d]
                        for d in args.datasets}
    # generated sources can be made smaller; a smoke run checks the plumbing, not the numbers
    args.num_samples = {}
    if args.quick:
        args.seeds, args.trials, args.epochs = args.seeds[:1], 2, 1
        args.num_samples = {"mnist1d": 1000}
    return args


def _data_config(dataset: str, args: argparse.Namespace) -> DataConfig:
    return DataConfig(source=dataset, num_samples=args.num_samples.get(dataset))








def _search(dataset: str, space: str, seed: int, teacher: str, args: argparse.Namespace,
            root: Path) -> dict[str, Any]:
    """One TPE search; every finished trial's (val, test accuracy, FLOPs)."""
    settings = SearchSettings(
        epochs=args.epochs, keep_weights=False,
        cost=dataclasses.replace(CostConfig.for_search(), latency=False),
        train=TrainConfig(threads=1, seed=seed, device="cpu"))
    cfg = SearchConfig(data=_data_config(dataset, args), teacher=[teacher], budget=args.trials,
                       strategy="optuna", sampler="tpe", settings=settings, space=space,
                       name=f"{dataset}-{space}-{seed}", results=str(root), seed=seed,
                       device="cpu", jobs=1)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    outcome = run_search(cfg)
    points = []
    for t in outcome.study.trials:
        rec = TrialRecord.of(t)
        if rec.val_accuracy is not None and rec.flops is not None:
            points.append([rec.val_accuracy, rec.test_accuracy, rec.flops])
    return {"points": points, "cpu_s": time.process_time() - cpu0,
            "wall_s": time.perf_counter() - wall0, "loadavg": list(os.getloadavg())}


def _scale(spaces: tuple[str, ...], data: Any, teacher_acc: float) -> FrontScale:
    """The union of the compared spaces' scales: one yardstick for every front."""
    scales = [space_scale(load_space(s), data, teacher_acc, OBJECTIVES) for s in spaces]
    return scales[0].union(*scales[1:])


def _summary(dataset: str, compared: tuple[str, ...], doc: dict[str, Any], scale: FrontScale,
             teacher: dict[str, Any]) -> dict[str, Any]:
    spaces: dict[str, Any] = {}
    hv_by_seed: dict[str, dict[int, float]] = {}
    budget = teacher["flops"] / 10
    for space in compared:
        runs = {int(k.rsplit("/", 1)[1]): v for k, v in doc["runs"].items()
                if k.startswith(f"{dataset}/{space}/")}
        hv_by_seed[space] = {s: scale.hypervolume([[p[0], p[2]] for p in r["points"]],
                                                  OBJECTIVES) if r["points"] else 0.0
                             for s, r in runs.items()}
        small = [p for r in runs.values() for p in r["points"] if p[2] <= budget]
        best = max(small, key=lambda p: p[0], default=None)
        spaces[space] = {
            "hv_val": mean_std(list(hv_by_seed[space].values())),
            "cpu_s": mean_std([r["cpu_s"] for r in runs.values()]),
            "best_at_tenth_teacher_flops": None if best is None else
            {"val_accuracy": best[0], "test_accuracy": best[1], "flops": best[2]},
        }
    base = compared[0]
    for space in compared[1:]:
        spaces[space]["vs_" + base] = paired_test(hv_by_seed[space], hv_by_seed[base])
    return {"teacher": teacher, "scale": scale.to_dict(), "spaces": spaces}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(1)
    protocol = {k: getattr(args, k) for k in PROTOCOL_KEYS} | {"quick": args.quick}
    path = result_path(args.name, args.quick)
    doc = load_resumable(path, protocol, datasets={})
    cpu_start, stopped = time.process_time(), None
    root = Path(tempfile.mkdtemp(prefix="autokd-families-"))
    try:
        for dataset in args.datasets:
            data = load_data(_data_config(dataset, args))
            teacher, teacher_path = teacher_for(data, quick=args.quick)
            profile = teacher_profile(teacher, data, dataclasses.replace(CostConfig(),
                                                                        latency=False))
            t_info = {"test_accuracy": profile["test_accuracy"], "flops": profile["flops"],
                      "params": profile["params"]}
            for seed in args.seeds:
                for space in args.space_table[dataset]:
                    key = f"{dataset}/{space}/{seed}"
                    if key in doc["runs"]:
                        continue
                    used = (time.process_time() - cpu_start) / 60
                    if args.cpu_minutes is not None and used >= args.cpu_minutes:
                        stopped = f"cpu budget of {args.cpu_minutes} min reached"
                        break
                    log(f"{key}: {args.trials} trials x {args.epochs} epochs")
                    doc["runs"][key] = _search(dataset, space, seed, str(teacher_path), args,
                                               root)
                    save_atomic(path, doc)  # resume point after every search
            compared = args.space_table[dataset]
            scale = _scale(compared, data, profile["test_accuracy"])
            doc["datasets"][dataset] = _summary(dataset, compared, doc, scale, t_info)
            for space, s in doc["datasets"][dataset]["spaces"].items():
                log(f"{dataset} {space}: HV {pm(s['hv_val'])} "
                    f"best<=T/10 {s['best_at_tenth_teacher_flops']}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    doc["stopped"] = stopped
    doc["loadavg_end"] = list(os.getloadavg())
    save_atomic(path, doc)
    print(json.dumps(doc, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
