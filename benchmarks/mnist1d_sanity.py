"""Does autokd's own training reproduce the MNIST-1D paper's baseline table?

Trains, with autokd's trainer, a logistic model (``mlp`` depth 0), the paper's MLP (two hidden
layers of 100) and the default 1-D teacher (the wide ``cnn1d`` of
``autokd.teachers.default_teacher_spec``), each over ``--seeds``, and puts their test accuracy
next to the published figures (Greydanus 2020, README of greydanus/mnist1d: logistic
regression 32 %, MLP 68 %, CNN 94 %).

What differs from the paper, on purpose: the paper trains on the package's fixed 4000/1000
train/test cut; autokd merges the generated samples and makes its own stratified
train/val/test split (defaults: 65/15/20 %, so 3250/750/1000 of 5000), normalises on train and
keeps the best-validation epoch. Seed ``s`` sets the generator seed, the split seed and the
training seed, so the spread covers data, split and initialisation. All three models use the
default teacher's training recipe (AdamW, cosine schedule, its epochs and learning rate).

Usage: ``python benchmarks/mnist1d_sanity.py [--seeds 0 1 2] [--num-samples 5000] [--quick]``
(``--quick``: 1 seed, 1000 samples, 3 epochs; checks the plumbing, not the numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from _common import log, mean_std, pm, quick_teacher, set_threads, write_result

from autokd.config import CostConfig, DataConfig
from autokd.cost import measure_cost
from autokd.data import DataSplits, load_data
from autokd.distill import KDConfig
from autokd.pipeline import run_distillation
from autokd.teachers import default_teacher, default_teacher_spec

__all__ = ["PUBLISHED", "main"]

#: model -> (published test accuracy, autokd family, spec); the CNN row is the default teacher.
PUBLISHED: dict[str, tuple[float, str, dict[str, Any] | None]] = {
    "logistic": (0.32, "mlp", {"depth": 0}),
    "mlp": (0.68, "mlp", {"depth": 2, "widths": 100}),
    "cnn": (0.94, "cnn1d", None),
}
SCRATCH = KDConfig(soft_loss="none", alpha=0.0)
NO_LATENCY = CostConfig(latency=False)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--num-samples", type=int, default=5000, help="generated samples (5000)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 seed, tiny data")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.num_samples = args.seeds[:1], 1000
    return args


def train_row(data: DataSplits, name: str, seed: int, quick: bool) -> dict[str, Any]:
    """One model on one seed: the CNN is the (cached) default teacher, the rest train here."""
    _, family, spec = PUBLISHED[name]
    t0 = time.perf_counter()
    if name == "cnn":
        teacher, _ = quick_teacher(data) if quick else default_teacher(data, seed=seed)
        model = teacher.module
        val, test = teacher.accuracy(data, "val"), teacher.accuracy(data, "test")
    else:
        _, _, cfg = default_teacher_spec(data)
        cfg = dataclasses.replace(cfg, seed=seed, epochs=3 if quick else cfg.epochs)
        run = run_distillation(data, None, family, spec, SCRATCH, cfg, NO_LATENCY)
        model, val, test = run.model, run.metrics()["val_accuracy"], run.metrics()["test_accuracy"]
    cost = measure_cost(model, data.input_shape, NO_LATENCY)
    return {
        "model": name,
        "seed": seed,
        "family": family,
        "spec": dict(model.spec),
        "val_accuracy": val,
        "test_accuracy": test,
        "params": cost.params,
        "flops": cost.flops,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name, (published, family, _) in PUBLISHED.items():
        mine = [r for r in rows if r["model"] == name]
        test = mean_std([r["test_accuracy"] for r in mine])
        out.append(
            {
                "model": name,
                "family": family,
                "spec": mine[0]["spec"],
                "params": mine[0]["params"],
                "flops": mine[0]["flops"],
                "published_test_accuracy": published,
                "test_accuracy": test,
                "val_accuracy": mean_std([r["val_accuracy"] for r in mine]),
                "text": f"{pm(test)} % (published {published * 100:.0f} %)",
            }
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    rows, sizes = [], {}
    for seed in args.seeds:
        data = load_data(DataConfig(source="mnist1d", seed=seed, num_samples=args.num_samples))
        sizes[seed] = data.sizes()
        for name in PUBLISHED:
            row = train_row(data, name, seed, args.quick)
            log(f"seed {seed} {name}: test {row['test_accuracy']:.4f} ({row['seconds']} s)")
            rows.append(row)
    payload = {
        "benchmark": "mnist1d_sanity",
        "quick": args.quick,
        "setup": {
            "num_samples": args.num_samples,
            "seeds": args.seeds,
            "split_sizes": sizes,
            "split": "autokd stratified train/val/test (val 15 %, test 20 %) of the "
            "generated samples; published: package's 4000/1000 train/test",
            "recipe": dataclasses.asdict(default_teacher_spec(data)[2]),
            "std": "sample std (ddof=1) over seeds",
        },
        "summary": summarise(rows),
        "rows": rows,
    }
    write_result("mnist1d_sanity", payload, quick=args.quick)
    return payload


if __name__ == "__main__":
    main()
