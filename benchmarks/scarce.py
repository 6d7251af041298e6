"""Scarce labels and privileged features: what a teacher adds when labels or columns are few.

Part 1, unlabelled data (digits, MNIST-1D): the labelled train split is cut to ``--fraction``
(10 %) per class (``--train-fraction``); three arms train the same small student per seed:
``scratch`` on the 10 %, ``kd`` on the 10 % and ``kd_unlabeled`` on the 10 % plus the other
90 % as unlabelled inputs (``--unlabeled rest``: used only through the teacher's soft outputs).
The teacher is the cached default teacher trained on the FULL labelled train split (100 % of
the labels), as a teacher from elsewhere would be; val and test are the same for every arm.
All arms take the same number of optimiser steps: the unlabelled arm's epoch is one pass over
the unlabelled pool, so the two 10 % arms get proportionally more epochs.

Part 2, LUPI (breast_cancer, wine): the teacher (the default one) sees every column, the
student only every third column (``--student-features 0,3,6,...``); KD vs scratch on the same
columns, over ``--lupi-seeds`` (10: a run takes about a second, and the test splits are small).
breast_cancer also runs its 10 "error" columns (10-19), the weakest third.

Every run is saved as it finishes (``results/benchmarks/scarce.json``), so a stopped run
resumes seed by seed. Test accuracy as mean ± sample std over seeds (student initialisation
and batch order; the data split is fixed by data seed 0).

Usage: ``python benchmarks/scarce.py [--quick] [--seeds 0 1 2] [--epochs 30]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import torch
from _common import (
    load_resumable,
    log,
    mean_std,
    pm,
    quick_teacher,
    result_path,
    save_atomic,
    set_threads,
    teacher_for,
)

from autokd.config import CostConfig, DataConfig, TrainConfig
from autokd.data import DataSplits, load_data
from autokd.distill import KDConfig
from autokd.pipeline import run_distillation
from autokd.teachers import Teacher, load_teacher

__all__ = ["main"]

#: dataset -> (family, spec) of the student (the kd_vs_scratch students; a small MLP for LUPI)
STUDENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "digits": ("cnn", {"depth": 2, "widths": [8, 16], "kernel": 3}),
    "mnist1d": ("cnn1d", {"depth": 3, "widths": [8, 16, 16], "kernel": 5}),
    "breast_cancer": ("mlp", {"depth": 2, "widths": [32, 16]}),
    "wine": ("mlp", {"depth": 2, "widths": [32, 16]}),
}
NO_LATENCY = CostConfig(latency=False)
ARMS = ("scratch", "kd", "kd_unlabeled")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    ap.add_argument("--lupi-datasets", nargs="+", default=["breast_cancer", "wine"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lupi-seeds", type=int, nargs="+", default=list(range(10)),
                    help="LUPI runs take about a second each: more seeds, tighter estimates")
    ap.add_argument("--fraction", type=float, default=0.1, help="labelled share of train")
    ap.add_argument("--epochs", type=int, default=30,
                    help="epochs of the unlabelled arm (the 10 %% arms: the same steps)")
    ap.add_argument("--lupi-epochs", type=int, default=60)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: digits and breast_cancer, 1 seed, 1 epoch, quick teachers")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.quick:
        args.datasets, args.lupi_datasets = ["digits"], ["breast_cancer"]
        args.seeds, args.epochs, args.lupi_epochs = args.seeds[:1], 1, 2
        args.lupi_seeds = args.lupi_seeds[:1]
    return args


def protocol(args: argparse.Namespace) -> dict[str, Any]:
    """What makes earlier results comparable (resume only when it is unchanged); as JSON
    reads it back (tuples become lists), so an unchanged protocol compares equal."""
    return json.loads(json.dumps({"fraction": args.fraction, "epochs": args.epochs, "lupi_epochs": args.lupi_epochs,
            "lupi_seeds": args.lupi_seeds,
            "kd": vars(KDConfig()), "students": STUDENTS, "quick": args.quick,
            "lupi_columns": {"every_third": "every third column, from 0", **EXTRA_COLUMNS}},
                                 default=str))


def _teacher(data: DataSplits, quick: bool) -> tuple[Teacher, str]:
    """The teacher trained on ``data`` (its full labelled train split, every column)."""
    teacher, path = quick_teacher(data, epochs=1) if quick else teacher_for(data)
    return teacher, str(path)


def _run(data: DataSplits, teacher: Teacher, name: str, kd: KDConfig, epochs: int,
         seed: int) -> dict[str, Any]:
    family, spec = STUDENTS[name]
    cfg = TrainConfig(epochs=epochs, seed=seed, threads=1)
    t0, c0 = time.perf_counter(), time.process_time()
    m = run_distillation(data, teacher, family, spec, kd, cfg, NO_LATENCY).metrics()
    return {"test_accuracy": m["test_accuracy"], "val_accuracy": m["val_accuracy"],
            "best_epoch": m["best_epoch"], "epochs": epochs, "params": m["params"],
            "wall_s": round(time.perf_counter() - t0, 2),
            "cpu_s": round(time.process_time() - c0, 2)}


def unlabeled_part(name: str, args: argparse.Namespace, doc: dict[str, Any],
                   save: Any) -> dict[str, Any]:
    """The three arms of one dataset over every seed, resumable run by run."""
    full = load_data(DataConfig(source=name))
    teacher, path = _teacher(full, args.quick)
    few = load_data(DataConfig(source=name, train_fraction=args.fraction))
    rest = load_data(DataConfig(source=name, train_fraction=args.fraction, unlabeled="rest"))
    n_l, n_u = len(few.y_train), len(rest.x_unlabeled)  # type: ignore[arg-type]
    # the same optimiser steps: the 10 % arms repeat their smaller epochs
    steps = math.ceil(max(n_l, n_u) / TrainConfig.batch_size) * args.epochs
    few_epochs = max(1, round(steps / math.ceil(n_l / TrainConfig.batch_size)))
    kd = KDConfig()
    plan = {"scratch": (few, kd.scratch(), few_epochs), "kd": (few, kd, few_epochs),
            "kd_unlabeled": (rest, kd, args.epochs)}
    for seed in args.seeds:
        for arm, (data, recipe, epochs) in plan.items():
            key = f"{name}/{arm}/{seed}"
            if key in doc["runs"]:
                continue
            t = load_teacher(path, data=data)
            doc["runs"][key] = _run(data, t, name, recipe, epochs, seed)
            save()
            log(f"{key}: test {doc['runs'][key]['test_accuracy']:.4f} "
                f"({doc['runs'][key]['wall_s']} s)")
    arms = {arm: mean_std([doc["runs"][f"{name}/{arm}/{s}"]["test_accuracy"]
                           for s in args.seeds]) for arm in ARMS}
    return {"teacher": path, "teacher_trained_on": f"all {len(full.y_train)} labelled train "
            "samples", "teacher_test_accuracy": teacher.accuracy(full, "test"),
            "teacher_test_accuracy_as_students_see_it": teacher.accuracy(few, "test"),
            "labelled": n_l, "unlabeled": n_u, "unlabeled_leaked_dropped":
            rest.meta["unlabeled"]["leaked_dropped"], "steps": steps,
            "epochs": {arm: plan[arm][2] for arm in ARMS},
            "test_accuracy": arms, "text": {arm: pm(arms[arm]) for arm in ARMS}}


#: extra LUPI column choices beside every third column: breast_cancer's 10 "error" columns
#: (standard errors of the 10 measurements), the weakest third, where scratch falls short
EXTRA_COLUMNS: dict[str, dict[str, str]] = {
    "breast_cancer": {"errors": ",".join(str(c) for c in range(10, 20))},
}


def lupi_part(name: str, args: argparse.Namespace, doc: dict[str, Any],
              save: Any) -> dict[str, Any]:
    """KD vs scratch for students that read a third of the columns; the teacher reads all."""
    full = load_data(DataConfig(source=name))
    _, path = _teacher(full, args.quick)
    variants = {"every_third": ",".join(str(c) for c in range(0, full.input_shape[0], 3)),
                **EXTRA_COLUMNS.get(name, {})}
    return {variant: _lupi_variant(name, variant, columns, path, args, doc, save)
            for variant, columns in variants.items()}


def _lupi_variant(name: str, variant: str, columns: str, path: str,
                  args: argparse.Namespace, doc: dict[str, Any], save: Any) -> dict[str, Any]:
    data = load_data(DataConfig(source=name, student_features=columns))
    teacher = load_teacher(path, data=data)
    kd = KDConfig()
    runs = doc["runs"]
    for seed in args.lupi_seeds:
        for arm, recipe in (("scratch", kd.scratch()), ("kd", kd)):
            key = f"lupi/{name}/{variant}/{arm}/{seed}"
            if key not in runs:
                runs[key] = _run(data, teacher, name, recipe, args.lupi_epochs, seed)
                save()
                log(f"{key}: test {runs[key]['test_accuracy']:.4f}")
    acc = {arm: [runs[f"lupi/{name}/{variant}/{arm}/{s}"]["test_accuracy"]
                 for s in args.lupi_seeds] for arm in ("scratch", "kd")}
    wins = sum(k > s for k, s in zip(acc["kd"], acc["scratch"], strict=True))
    ties = sum(k == s for k, s in zip(acc["kd"], acc["scratch"], strict=True))
    arms = {arm: mean_std(values) for arm, values in acc.items()}
    train_out = teacher.outputs(data, "train").mean(0)  # (N, K): how much beyond the labels
    top = torch.softmax(train_out / kd.temperature, -1).max(1).values
    return {"teacher": path, "teacher_columns": data.for_teacher().input_shape[0],
            "teacher_test_accuracy": teacher.accuracy(data, "test"),
            "teacher_train_accuracy": teacher.accuracy(data, "train"),
            "teacher_train_mean_top_probability_at_T": float(top.mean()),
            "student_columns": data.meta["student_features"], "test_samples": len(data.y_test),
            "kd_wins_ties_losses": [wins, ties, len(args.lupi_seeds) - wins - ties],
            "test_accuracy": arms, "text": {arm: pm(arms[arm]) for arm in arms}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    path = result_path("scarce", args.quick)
    doc = load_resumable(path, protocol(args))

    def save() -> None:
        save_atomic(path, doc)

    t0, c0 = time.perf_counter(), time.process_time()
    out: dict[str, Any] = {
        "what": "with 10 % of the labels: scratch vs KD vs KD + the other 90 % unlabelled "
                "(teacher on 100 % of the labels); LUPI: teacher on all columns, student on "
                "every third, KD vs scratch",
        "seeds": args.seeds, "lupi_seeds": args.lupi_seeds,
        "unlabeled": {n: unlabeled_part(n, args, doc, save) for n in args.datasets},
        "lupi": {n: lupi_part(n, args, doc, save) for n in args.lupi_datasets},
        "loadavg": list(os.getloadavg()),
        "wall_s": round(time.perf_counter() - t0, 1),  # this invocation (a resume: less)
        "cpu_s": round(time.process_time() - c0, 1),
        "runs_wall_s": round(sum(r["wall_s"] for r in doc["runs"].values()), 1),  # all runs
        "runs_cpu_s": round(sum(r["cpu_s"] for r in doc["runs"].values()), 1),
    }
    for n, part in out["unlabeled"].items():  # headline floats (top level)
        acc = part["test_accuracy"]
        out[f"{n}_kd_unlabeled_minus_kd"] = acc["kd_unlabeled"]["mean"] - acc["kd"]["mean"]
        out[f"{n}_kd_minus_scratch"] = acc["kd"]["mean"] - acc["scratch"]["mean"]
    for n, variants in out["lupi"].items():
        for variant, part in variants.items():
            acc = part["test_accuracy"]
            out[f"lupi_{n}_{variant}_kd_minus_scratch"] = acc["kd"]["mean"] - acc["scratch"]["mean"]
    doc.update(out)
    save_atomic(path, doc)
    print(json.dumps(doc, indent=2, default=str))
    log(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main()
