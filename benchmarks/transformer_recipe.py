"""The transformer distillation recipe on MNIST-1D as a patch sequence: init and KD terms.

Protocol (fixed before the run):

1. Data: MNIST-1D (signals (1, 40)), the transformer family's patch embedding (patch 4: a CLS
   token + 10 patch tokens).
2. Teacher: a 6-layer transformer (the family's teacher recipe), trained once with CE and
   cached; the same teacher for every run.
3. Students: 3 layers, the teacher's hidden size, heads and MLP ratio (so teacher-layer
   initialisation is possible; DistilBERT's "every other layer" is the uniform mapping with
   L_S = L_T / 2), ``--epochs`` epochs, Adam at the family's default lr, batch 64.
4. Conditions: init random | teacher x terms logits (KL 0.9 + CE 0.1) | + hidden cosine
   (``hidden_cos`` 1.0) | + attention transfer (``tinybert_attn`` 1.0) | + both; seeds
   ``--seeds`` (the same seeds for every condition: a seed fixes the random init and the batch
   order).
5. Reported per condition: test accuracy (of the best-validation epoch) mean ± std over seeds;
   the epoch at which validation accuracy first reaches 95 % of its final (last-epoch) value,
   mean ± std; paired differences vs random init / vs logits-only (Wilcoxon only with >= 6
   pairs, else descriptive). Runs are written one by one and resumed; load average and CPU
   time are recorded.

Usage: ``python benchmarks/transformer_recipe.py [--seeds 0 1 2] [--epochs 30] [--quick]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from _common import (
    QUICK_OUT_DIR,
    load_resumable,
    log,
    mean_std,
    pm,
    result_path,
    save_atomic,
    set_threads,
)
from _efficiency_score import paired_test

from autokd._io import cache_dir
from autokd.config import TrainConfig
from autokd.data import DataSplits, load_data
from autokd.distill import KDConfig
from autokd.models import build_student
from autokd.pipeline import init_student
from autokd.teachers import Teacher, load_teacher, save_checkpoint, teacher_metrics, train_teacher
from autokd.train import Trainer, seed_everything

__all__ = ["main"]

NAME = "transformer_recipe"
TEACHER = {"layers": 6, "hidden": 64, "heads": 4, "mlp_ratio": 4, "patch": 4, "dropout": 0.1}
TERMS: dict[str, dict[str, float]] = {
    "logits": {"kl": 0.9, "ce": 0.1},
    "hidden": {"kl": 0.9, "ce": 0.1, "hidden_cos": 1.0},
    "attention": {"kl": 0.9, "ce": 0.1, "tinybert_attn": 1.0},
    "hidden+attention": {"kl": 0.9, "ce": 0.1, "hidden_cos": 1.0, "tinybert_attn": 1.0},
}
INITS = ("random", "teacher")
PROTOCOL_KEYS = ("epochs", "teacher_epochs", "student_layers", "lr", "dataset")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist1d")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30, help="student epochs")
    p.add_argument("--teacher-epochs", type=int, default=100)
    p.add_argument("--student-layers", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--terms", nargs="+", default=list(TERMS), choices=list(TERMS))
    p.add_argument("--cpu-minutes", type=float, help="stop starting runs after this much CPU")
    p.add_argument("--quick", action="store_true", help="smoke run: digits, tiny budgets")
    args = p.parse_args(argv)
    if args.quick:
        args.dataset, args.seeds, args.epochs, args.teacher_epochs = "digits", [0], 2, 2
        args.terms = ["logits", "hidden+attention"]
    return args


def _teacher(data: DataSplits, epochs: int, quick: bool) -> tuple[Teacher, Path]:
    """The 6-layer transformer teacher, trained once per split and epochs, then cached."""
    tag = hashlib.sha256(json.dumps([TEACHER, epochs]).encode()).hexdigest()[:8]
    root = QUICK_OUT_DIR / "teachers" if quick else cache_dir() / "teachers"
    path = root / f"{data.split_hash}-transformer-{tag}.pt"
    if not path.exists():
        log(f"training the transformer teacher ({epochs} epochs) -> {path}")
        model, result = train_teacher(data, epochs=epochs, family="transformer")
        save_checkpoint(model, path, data=data.describe(),
                        metrics=teacher_metrics(model, data, result))
    return load_teacher(path, data=data), path


def _epoch_to_95(history: list[dict[str, float]]) -> int:
    """First epoch (1-based) whose validation accuracy is >= 95 % of the last epoch's."""
    final = history[-1]["val_accuracy"]
    return next(i + 1 for i, h in enumerate(history) if h["val_accuracy"] >= 0.95 * final)


def run_one(data: DataSplits, teacher: Teacher, terms: str, init: str, seed: int,
            args: argparse.Namespace) -> dict[str, Any]:
    """Train one student; its test accuracy (best-validation epoch) and learning curve."""
    spec = {**TEACHER, "layers": args.student_layers}
    kd = KDConfig(terms=dict(TERMS[terms]), init=init).validate()
    seed_everything(seed)
    student = build_student("transformer", spec, data.input_shape, data.num_classes,
                            tokens=data.tokens)
    init_student(student, kd, teacher)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, seed=seed, threads=1)
    wall, cpu = time.perf_counter(), time.process_time()
    result = Trainer(student, data, cfg, kd, teacher).fit()
    return {"test_accuracy": result.test["accuracy"], "val_accuracy": result.val["accuracy"],
            "best_epoch": result.best_epoch, "epoch_to_95": _epoch_to_95(result.history),
            "val_curve": [round(h["val_accuracy"], 4) for h in result.history],
            "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "loadavg": list(os.getloadavg())}


def summarise(runs: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Per condition mean ± std; paired differences (by seed) vs random init and vs logits."""
    def per_seed(terms: str, init: str, key: str) -> dict[int, float]:
        return {s: runs[f"{terms}/{init}/{s}"][key] for s in args.seeds
                if f"{terms}/{init}/{s}" in runs}

    out: dict[str, Any] = {}
    for terms in args.terms:
        for init in INITS:
            acc = per_seed(terms, init, "test_accuracy")
            out[f"{terms}/{init}"] = {
                "test_accuracy": mean_std(list(acc.values())),
                "epoch_to_95": mean_std(list(per_seed(terms, init, "epoch_to_95").values())),
                "vs_random_init": None if init == "random" else
                paired_test(acc, per_seed(terms, "random", "test_accuracy")),
                "vs_logits_only": None if terms == "logits" else
                paired_test(acc, per_seed("logits", init, "test_accuracy")),
            }
    return out








def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(1)
    data = load_data(args.dataset)
    protocol = {k: getattr(args, k) for k in PROTOCOL_KEYS}
    path = result_path(NAME, args.quick)
    doc = load_resumable(path, protocol)
    teacher, teacher_path = _teacher(data, args.teacher_epochs, args.quick)
    doc["teacher"] = {"path": str(teacher_path), "spec": TEACHER,
                      "test_accuracy": teacher.accuracy(data)}
    spent, cpu0 = 0.0, time.process_time()
    for seed in args.seeds:
        for terms in args.terms:
            for init in INITS:
                key = f"{terms}/{init}/{seed}"
                if key in doc["runs"]:
                    continue
                if args.cpu_minutes and spent > args.cpu_minutes * 60:
                    log("CPU budget spent; rerun to resume")
                    break
                doc["runs"][key] = run_one(data, teacher, terms, init, seed, args)
                spent = time.process_time() - cpu0
                r = doc["runs"][key]
                log(f"{key}: test {r['test_accuracy']:.4f}, 95 % at epoch {r['epoch_to_95']}, "
                    f"{r['cpu_s']:.0f} CPU s")
                doc["summary"] = summarise(doc["runs"], args)
                save_atomic(path, doc, indent=1)
    doc["summary"] = summarise(doc["runs"], args)
    doc.update({"benchmark": NAME, "quick": args.quick, "dataset": data.describe(),
                "student": {**TEACHER, "layers": args.student_layers}, "terms": TERMS,
                "loadavg_end": list(os.getloadavg()), "torch_threads": torch.get_num_threads()})
    for cond, s in doc["summary"].items():
        log(f"{cond}: test {pm(s['test_accuracy'])} %, 95 % at epoch "
            f"{pm(s['epoch_to_95'], scale=1.0)}")
    doc.update(_headline(doc["summary"]))
    save_atomic(path, doc, indent=1)
    print(json.dumps(doc, indent=1, default=str))
    return doc


def _headline(summary: dict[str, Any]) -> dict[str, Any]:
    """Top-level floats: each condition's mean test accuracy."""
    return {f"test_accuracy_{c.replace('/', '_').replace('+', '_')}": s["test_accuracy"]["mean"]
            for c, s in summary.items() if s["test_accuracy"]["mean"] is not None}


if __name__ == "__main__":
    main()
