"""Chains of teachers: teacher assistant vs direct KD, and born-again generations.

1. Teacher assistant (Mirzadeh et al. 2020) on MNIST-1D, where the capacity gap between the
   default teacher (1.65 M FLOPs) and the smallest students of the cnn1d space (width 4, a few
   thousand FLOPs, a 200-1000x gap) is widest. Per seed and student, the same student is
   distilled twice with the same recipe, seed and epochs: directly from the teacher, and through
   an assistant (``autokd.chains.resolve_assistant``: the cnn1d depth/width nearest the geometric
   mean of teacher and student FLOPs, distilled from the teacher first, as a search trial with
   ``assistant: auto`` does when no finished trial fits). The assistant's CPU time is recorded.
2. Born-again networks (Furlanello et al. 2018) on digits: generations 1-3 of the default
   teacher's own architecture, generation 1 taught by the teacher and each later one by the
   previous (``autokd.chains.born_again``), next to the same architecture trained from scratch
   with the same seed and epochs.

Test accuracy mean ± sample std over seeds (the seed fixes initialisation and batch order; the
data split and the teacher are fixed). Results are saved after every seed and resumed.

Usage: ``python benchmarks/chains.py [--seeds 0 1 2] [--epochs 60] [--generations 3]
[--ba-epochs 20] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
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

from autokd.chains import born_again, resolve_assistant
from autokd.config import CostConfig, DataConfig, TrainConfig
from autokd.data import DataSplits, load_data
from autokd.distill import KDConfig
from autokd.models import parse_student_arg
from autokd.pipeline import run_distillation, teacher_profile
from autokd.tables import spec_summary
from autokd.teachers import Teacher

__all__ = ["STUDENTS", "main"]

NAME = "chains"
NO_LATENCY = CostConfig(latency=False)
#: the smallest students of search_spaces/cnn1d.yaml (width 4 in every stage)
STUDENTS = ["cnn1d:depth=1,widths=4,kernel=9", "cnn1d:depth=2,widths=4/8,kernel=5",
            "cnn1d:depth=3,widths=4/8/8,kernel=5"]
KEEP = ("val_accuracy", "test_accuracy", "flops", "params", "best_epoch")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=60, help="epochs of each MNIST-1D run")
    ap.add_argument("--students", nargs="+", default=STUDENTS, metavar="FAMILY:SPEC")
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--ba-epochs", type=int, default=20,
                    help="epochs of each born-again generation and of its scratch twin")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 seed, 1 student, 2 epochs, 2 generations of 1 epoch")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.students = args.seeds[:1], 2, args.students[1:2]
        args.generations, args.ba_epochs = 2, 1
    return args


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _spent(start: tuple[float, float]) -> dict[str, float]:
    return {"wall_seconds": round(time.perf_counter() - start[0], 2),
            "cpu_seconds": round(time.process_time() - start[1], 2)}


def _run(data: DataSplits, teacher: Teacher, student: str, kd: KDConfig,
         cfg: TrainConfig) -> dict[str, Any]:
    start = _clock()
    family, spec = parse_student_arg(student)
    metrics = run_distillation(data, teacher, family, spec, kd, cfg, NO_LATENCY).metrics()
    return {k: metrics.get(k) for k in KEEP} | _spent(start)


def assistant_seed(data: DataSplits, teacher: Teacher, teacher_flops: int, seed: int,
                   args: argparse.Namespace) -> dict[str, Any]:
    """Direct and through-an-assistant runs of every student for one seed."""
    cfg, kd = TrainConfig(epochs=args.epochs, seed=seed), KDConfig()
    out: dict[str, Any] = {}
    for student in args.students:
        direct = _run(data, teacher, student, kd, cfg)
        family, spec = parse_student_arg(student)
        start = _clock()
        helper = resolve_assistant(data, teacher, teacher_flops, family, spec, direct["flops"],
                                   KDConfig(assistant="auto"), cfg)
        trained = _spent(start)
        via = _run(data, helper.teacher, student, kd, cfg)
        out[student] = {"direct": direct, "assistant": via, "helper": {
            "spec": spec_summary(helper.spec), "flops": helper.flops,
            "target_flops": round(helper.target_flops), "val_accuracy": helper.val_accuracy,
            "test_accuracy": helper.test_accuracy, **trained}}
        log(f"seed {seed} {student}: direct {direct['test_accuracy']:.4f}, via assistant "
            f"{spec_summary(helper.spec)} ({helper.test_accuracy:.4f}) "
            f"{via['test_accuracy']:.4f}")
    return out


def born_again_seed(data: DataSplits, teacher: Teacher, seed: int,
                    args: argparse.Namespace) -> dict[str, Any]:
    """Generations 1..G of the teacher's architecture, and the same architecture from scratch."""
    cfg = TrainConfig(epochs=args.ba_epochs, seed=seed)
    start = _clock()
    family, spec = teacher.module.family, teacher.module.spec
    scratch = run_distillation(data, None, family, spec, KDConfig().scratch(), cfg, NO_LATENCY)
    out: dict[str, Any] = {"scratch": {k: scratch.metrics().get(k) for k in KEEP} | _spent(start)}
    start = _clock()
    runs = born_again(data, teacher, args.generations, KDConfig(), cfg, NO_LATENCY)
    out["generations"] = [{k: r.metrics().get(k) for k in KEEP} for r in runs]
    out["generations_time"] = _spent(start)
    log(f"seed {seed} born-again: scratch {out['scratch']['test_accuracy']:.4f}, generations "
        + ", ".join(f"{g['test_accuracy']:.4f}" for g in out["generations"]))
    return out


def summarise(doc: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """mean ± std per arm, paired differences, and the top-level numbers."""
    runs, seeds = doc["runs"], [str(s) for s in args.seeds]
    ta: dict[str, Any] = {}
    for student in args.students:
        rows = [runs[f"assistant/{s}"][student] for s in seeds if f"assistant/{s}" in runs]
        diff = [r["assistant"]["test_accuracy"] - r["direct"]["test_accuracy"] for r in rows]
        ta[student] = {
            "direct_test_accuracy": mean_std([r["direct"]["test_accuracy"] for r in rows]),
            "assistant_test_accuracy": mean_std([r["assistant"]["test_accuracy"] for r in rows]),
            "assistant_minus_direct": mean_std(diff),
            "direct_val_accuracy": mean_std([r["direct"]["val_accuracy"] for r in rows]),
            "assistant_val_accuracy": mean_std([r["assistant"]["val_accuracy"] for r in rows]),
            "helper_test_accuracy": mean_std([r["helper"]["test_accuracy"] for r in rows]),
            "helper_cpu_seconds": mean_std([r["helper"]["cpu_seconds"] for r in rows]),
            "helpers": sorted({r["helper"]["spec"] for r in rows}),
            "student_flops": rows[0]["direct"]["flops"] if rows else None}
    ba_rows = [runs[f"born_again/{s}"] for s in seeds if f"born_again/{s}" in runs]
    gens = {f"generation_{g + 1}": mean_std([r["generations"][g]["test_accuracy"]
                                             for r in ba_rows])
            for g in range(args.generations)}
    gens["scratch"] = mean_std([r["scratch"]["test_accuracy"] for r in ba_rows])
    gens_val = {f"generation_{g + 1}": mean_std([r["generations"][g]["val_accuracy"]
                                                 for r in ba_rows])
                for g in range(args.generations)}
    gens_val["scratch"] = mean_std([r["scratch"]["val_accuracy"] for r in ba_rows])
    top = {f"ta_minus_direct_pp_{s.split(':', 1)[1]}": _pp(v["assistant_minus_direct"])
           for s, v in ta.items()}
    top.update({f"born_again_{k}_test_accuracy": v["mean"] for k, v in gens.items()})
    top["cpu_seconds_all_seeds"] = _total(runs, "cpu_seconds")
    top["wall_seconds_all_seeds"] = _total(runs, "wall_seconds")
    return {**top, "teacher_assistant": ta, "born_again": gens, "born_again_val": gens_val,
            "text": [f"{s}: assistant {pm(v['assistant_test_accuracy'])} % vs direct "
                     f"{pm(v['direct_test_accuracy'])} %" for s, v in ta.items()]
            + [f"born-again {k}: {pm(v)} %" for k, v in gens.items()]}


def _total(tree: Any, key: str) -> float:
    """The sum of every ``key`` in the saved runs: what all seeds cost, over resumed runs."""
    if isinstance(tree, dict):
        return sum(float(v) if k == key else _total(v, key) for k, v in tree.items())
    if isinstance(tree, list):
        return sum(_total(v, key) for v in tree)
    return 0.0


def _pp(stats: dict[str, Any]) -> float | None:
    return None if stats["mean"] is None else 100.0 * stats["mean"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    protocol = {"seeds": args.seeds, "epochs": args.epochs, "students": args.students,
                "generations": args.generations, "ba_epochs": args.ba_epochs,
                "quick": args.quick, "recipe": vars(KDConfig())}
    path = result_path(NAME, args.quick)
    doc = load_resumable(path, protocol, teachers={})
    start = _clock()
    signals = load_data(DataConfig(source="mnist1d", num_samples=1000 if args.quick else None))
    digits = load_data(DataConfig(source="digits"))
    for key, data, unit in (("assistant", signals, assistant_seed),
                            ("born_again", digits, born_again_seed)):
        teacher, where = teacher_for(data, quick=args.quick)
        profile = teacher_profile(teacher, data, NO_LATENCY)
        doc["teachers"][data.name] = {k: profile.get(k) for k in
                                      ("val_accuracy", "test_accuracy", "flops", "params")}
        doc["teachers"][data.name]["path"] = str(where)
        for seed in args.seeds:
            if f"{key}/{seed}" in doc["runs"]:
                continue  # resumed
            extra = (profile["flops"],) if key == "assistant" else ()
            doc["runs"][f"{key}/{seed}"] = unit(data, teacher, *extra, seed, args)
            doc["runs"][f"{key}/{seed}"]["loadavg_end"] = list(os.getloadavg())
            save_atomic(path, doc)
    doc.update(summarise(doc, args))
    doc["this_run"] = _spent(start) | {"loadavg_end": list(os.getloadavg())}
    save_atomic(path, doc)
    print(json.dumps(doc, indent=2, default=str))
    log(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main()
