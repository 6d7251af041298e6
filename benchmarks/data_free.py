"""Data-free distillation: how close does a student get with no training data at all?

For digits and MNIST-1D: the cached default teacher (BatchNorm cnn / cnn1d, trained on the real
train split: it stands for a pretrained model whose data is not available), and one small
student, distilled with the default recipe (KL, T=4, alpha=0.9) for ``--epochs`` epochs on

- ``real``: the real train split (the reference);
- ``data_free``: ``--data-free N`` inputs synthesised by ``autokd.datafree`` (DeepInversion:
  BN statistics + class cross-entropy + smoothness prior), N = the real train split's size;
- ``no_bn``: the same synthesis without the BN-statistics term (cross-entropy and prior only),
  which isolates what matching the teacher's statistics adds;
- ``noise``: N Gaussian inputs in the normalised space, labelled by the teacher's argmax: no
  synthesis at all, the floor.

Same seed per row for the synthesis, the student's initialisation and batch order; val and
test are the real splits in every arm. Reports test accuracy mean ± sample std over seeds and
the synthesis cost (CPU seconds, one repeat per seed). Resumable: each finished (dataset, seed)
is saved, and a rerun with the same protocol skips it.

Usage: ``python benchmarks/data_free.py [--datasets digits mnist1d] [--seeds 0 1 2]
[--epochs 40] [--quick]``
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time
from typing import Any

import torch
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
from kd_vs_scratch import STUDENTS

from autokd import datafree
from autokd.config import CostConfig, TrainConfig
from autokd.data import DataSplits, load_data
from autokd.distill import KDConfig
from autokd.pipeline import run_distillation
from autokd.teachers import Teacher, load_teacher

NAME = "data_free"
ARMS = ("real", "data_free", "no_bn", "noise")
NO_LATENCY = CostConfig(latency=False)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teacher", metavar="PATH",
                    help="an autokd teacher checkpoint for every dataset (default: the cached "
                         "default teacher of each)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: digits, 1 seed, 64 inputs, 5 synthesis steps, 1 epoch")
    args = ap.parse_args(argv)
    args.synthesis = datafree.settings()
    args.n = {}  # dataset -> N; None: the real train split's size
    if args.quick:
        args.datasets, args.seeds, args.epochs = ["digits"], args.seeds[:1], 1
        args.synthesis = dataclasses.replace(args.synthesis, steps=5)
        args.n = {"digits": 64}
    return args


def noise_split(data: DataSplits, teacher: Teacher, n: int, seed: int) -> DataSplits:
    """``n`` N(0, 1) inputs in the normalised space, labelled by the teacher's argmax."""
    x = torch.randn((n, *data.input_shape), generator=torch.Generator().manual_seed(seed))
    y = teacher.logits(x).mean(0).argmax(1)
    digest = hashlib.sha256(f"noise/{data.split_hash}/{teacher.hash}/{n}/{seed}".encode())
    return dataclasses.replace(data, x_train=x, y_train=y, split_hash=digest.hexdigest()[:16])


def one_seed(data: DataSplits, teacher: Teacher, name: str, seed: int,
             args: argparse.Namespace) -> dict[str, Any]:
    """Every arm of one (dataset, seed)."""
    n = args.n.get(name) or data.sizes()["train"]
    splits: dict[str, DataSplits] = {"real": data}
    synth: dict[str, Any] = {}
    for arm, cfg in (("data_free", args.synthesis),
                     ("no_bn", dataclasses.replace(args.synthesis, bn_weight=0.0))):
        splits[arm] = datafree.synthesize(data, teacher, n, seed, cfg=cfg)
        info = splits[arm].meta["data_free"]
        synth[arm] = {k: info.get(k) for k in ("seconds", "cpu_seconds", "target_hit_rate")}
    splits["noise"] = noise_split(data, teacher, n, seed)
    family, spec = STUDENTS[name]
    out: dict[str, Any] = {"n": n, "synthesis": synth}
    for arm in ARMS:
        cpu = time.process_time()
        run = run_distillation(splits[arm], teacher, family, spec, KDConfig(),
                               TrainConfig(epochs=args.epochs, seed=seed), NO_LATENCY)
        m = run.metrics()
        out[arm] = {"test_accuracy": m["test_accuracy"], "val_accuracy": m["val_accuracy"],
                    "best_epoch": m["best_epoch"], "train_cpu_s": round(time.process_time() - cpu, 2)}
        log(f"{name} seed {seed} {arm}: test {m['test_accuracy']:.4f}")
    return out


def summarise(doc: dict[str, Any], name: str) -> dict[str, Any]:
    rows = [r for key, r in doc["runs"].items() if key.startswith(f"{name}/")]
    out: dict[str, Any] = {arm: mean_std([r[arm]["test_accuracy"] for r in rows]) for arm in ARMS}
    out["gap_to_real"] = mean_std([r["real"]["test_accuracy"] - r["data_free"]["test_accuracy"]
                                   for r in rows])
    for arm in ("data_free", "no_bn"):
        cpu = [r["synthesis"][arm]["cpu_seconds"] for r in rows
               if r["synthesis"][arm].get("cpu_seconds") is not None]
        out[f"{arm}_synthesis_cpu_s"] = ({"min": min(cpu), "median": sorted(cpu)[len(cpu) // 2],
                                          "max": max(cpu), "repeats": len(cpu)} if cpu else None)
        out[f"{arm}_target_hit_rate"] = mean_std([r["synthesis"][arm]["target_hit_rate"]
                                                  for r in rows])
    teacher = doc["teachers"][name]["test_accuracy"]
    out["text"] = (f"{name}: real {pm(out['real'])} %, data-free {pm(out['data_free'])} %, "
                   f"no BN term {pm(out['no_bn'])} %, Gaussian noise {pm(out['noise'])} % "
                   f"(teacher {teacher * 100:.1f} %)")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    protocol = {"datasets": args.datasets, "seeds": args.seeds, "epochs": args.epochs,
                "n": args.n, "synthesis": dataclasses.asdict(args.synthesis),
                "students": {d: list(STUDENTS[d]) for d in args.datasets}, "quick": args.quick,
                "teacher": args.teacher}
    path = result_path(NAME, args.quick)
    doc = load_resumable(path, protocol, teachers={}, summary={})
    doc.setdefault("loadavg_start", list(os.getloadavg()))
    for name in args.datasets:
        data = load_data(name)
        if args.teacher:
            teacher, teacher_path = load_teacher(args.teacher, data=data), args.teacher
        else:
            teacher, teacher_path = teacher_for(data, quick=args.quick)
        doc["teachers"][name] = {"path": str(teacher_path),
                                 "test_accuracy": teacher.accuracy(data, "test"),
                                 "val_accuracy": teacher.accuracy(data, "val")}
        for seed in args.seeds:
            key = f"{name}/{seed}"
            if key in doc["runs"]:
                continue
            doc["runs"][key] = one_seed(data, teacher, name, seed, args)
            doc["summary"][name] = summarise(doc, name)
            save_atomic(path, doc, indent=1)
        doc["summary"][name] = summarise(doc, name)
        log(doc["summary"][name]["text"])
    doc.update({"benchmark": NAME, "quick": args.quick, "loadavg_end": list(os.getloadavg()),
                "torch_threads": torch.get_num_threads(),
                "std": "sample std (ddof=1) over seeds"})
    save_atomic(path, doc, indent=1)
    print(json.dumps(doc, indent=1, default=str))
    log(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main()
