"""Does autokd reproduce the MNIST-1D paper's baseline table, and where does it differ?

Published (Greydanus 2020, README of greydanus/mnist1d): logistic regression 32 %, MLP 68 %,
CNN 94 % test accuracy. Three parts, each over ``--seeds`` (mean ± sample std):

1. The published set-up in a plain torch loop (``_mnist1d_paper``: the package's 4000/1000
   cut at data seed 42, the paper's models, Adam lr 1e-2, batch 100 in order, 6000 steps, test
   accuracy after the last step; the seed sets the initialisation), for all three models.
2. An ablation for the MLP that moves from the published set-up to autokd's one setting at a
   time: the plain MLP of autokd's ``mlp`` family (no residual add), data generated at seed
   ``s``, autokd's stratified split (3250/750/1000 of 5000, normalised on train), autokd's
   trainer with the published recipe (shuffled batches, best-validation epoch), and finally
   autokd's default-teacher recipe (AdamW lr 2e-3, cosine, 60 epochs, batch 64). Each step's
   accuracy shows which difference costs what. The CNN gets the same treatment in short: the
   paper's CNN, the same CNN with the global-average head autokd's ``cnn1d`` family uses, the
   closest ``cnn1d`` spec through autokd, and the default 1-D teacher (125k parameters).
3. autokd's own rows (logistic, MLP, default teacher) as before, on autokd's data path.

Usage: ``python benchmarks/mnist1d_sanity.py [--seeds 0 1 2] [--quick]``
(``--quick``: 1 seed, 1000 samples, 200 steps, 2 epochs; checks the plumbing, not the numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

from _common import log, mean_std, pm, quick_teacher, set_threads, write_result
from _mnist1d_paper import PaperRecipe, build, paper_data, train_steps

from autokd.config import CostConfig, DataConfig, TrainConfig
from autokd.cost import measure_cost
from autokd.data import load_data
from autokd.distill import KDConfig
from autokd.pipeline import run_distillation
from autokd.teachers import default_teacher, default_teacher_spec

__all__ = ["PUBLISHED", "main"]

#: model -> published test accuracy (README of greydanus/mnist1d)
PUBLISHED = {"logistic": 0.32, "mlp": 0.68, "cnn": 0.94}
#: the repository's own re-run of its benchmark (notebooks/mnist1d-classification.ipynb, seed
#: 42, accuracy printed at step 6000): the published code does not give 68 % for the MLP either
NOTEBOOK_RERUN = {"logistic": 0.315, "mlp": 0.651, "cnn": 0.923}
PAPER_DATA_SEED = 42
SCRATCH = KDConfig(soft_loss="none", alpha=0.0)
NO_LATENCY = CostConfig(latency=False)
#: autokd's closest ``cnn1d`` to the paper's CNN (its head averages over length instead)
CNN1D_PAPERLIKE = {"depth": 3, "widths": 25, "kernel": [5, 3, 3], "pool": "stride",
                   "batch_norm": False}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--num-samples", type=int, default=5000, help="generated samples (5000)")
    ap.add_argument("--steps", type=int, default=6000, help="published loop's steps (6000)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 seed, tiny data")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    args.epochs = None  # autokd recipes keep their own epochs
    if args.quick:
        args.seeds, args.num_samples, args.steps, args.epochs = args.seeds[:1], 1000, 200, 2
    return args


class Ctx:
    """Per-seed data, built once: the paper's cut, the cut at seed ``s``, autokd's split."""

    def __init__(self, args: argparse.Namespace, seed: int) -> None:
        self.args, self.seed, n = args, seed, args.num_samples
        self.paper = paper_data(PAPER_DATA_SEED, n)
        self.paper_s = paper_data(seed, n)
        self.splits = load_data(DataConfig(source="mnist1d", seed=seed, num_samples=n))
        s = self.splits
        self.autokd = {"x_train": s.x_train, "y_train": s.y_train,
                       "x_test": s.x_test, "y_test": s.y_test}

    def recipe(self) -> PaperRecipe:
        return PaperRecipe(steps=self.args.steps, eval_every=min(250, self.args.steps))

    def published_cfg(self) -> TrainConfig:
        """The published recipe in autokd's trainer: Adam (AdamW, no decay), constant lr 1e-2,
        batch 100, no clipping, as many epochs as give the published number of steps."""
        per_epoch = math.ceil(len(self.splits.y_train) / 100)
        epochs = self.args.epochs or math.ceil((self.args.steps + 1) / per_epoch)
        return TrainConfig(epochs=epochs, batch_size=100, lr=1e-2, weight_decay=0.0,
                           scheduler="constant", grad_clip=0.0, seed=self.seed)

    def default_cfg(self) -> TrainConfig:
        _, _, cfg = default_teacher_spec(self.splits)
        return dataclasses.replace(cfg, seed=self.seed, epochs=self.args.epochs or cfg.epochs)


def plain(name: str, data_key: str, **options: Any) -> Callable[[Ctx], dict[str, Any]]:
    """A run of the published loop on one of the context's data sets."""

    def run(ctx: Ctx) -> dict[str, Any]:
        data = getattr(ctx, data_key)
        out = train_steps(build(name, ctx.seed, **options), data, ctx.recipe())
        return out | {"train_size": len(data["y_train"]), "test_size": len(data["y_test"])}

    return run


def autokd_run(family: str, spec: dict[str, Any], which: str) -> Callable[[Ctx], dict[str, Any]]:
    """A run of autokd's trainer on autokd's split with the published or the default recipe."""

    def run(ctx: Ctx) -> dict[str, Any]:
        cfg = ctx.published_cfg() if which == "published" else ctx.default_cfg()
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_distillation(ctx.splits, None, family, spec, SCRATCH, cfg, NO_LATENCY)
        m = res.metrics()
        return {"test_accuracy": m["test_accuracy"], "val_accuracy": m["val_accuracy"],
                "best_epoch": m["best_epoch"], "epochs": cfg.epochs, "lr": cfg.lr,
                "params": m["params"], "spec": dict(res.model.spec),
                "train_size": len(ctx.splits.y_train),
                "seconds": round(time.perf_counter() - t0, 2),
                "cpu_seconds": round(time.process_time() - c0, 2)}

    return run


def teacher_run(ctx: Ctx) -> dict[str, Any]:
    """The default 1-D teacher (cached by ``default_teacher``; quick: a 3-epoch one)."""
    t0, c0 = time.perf_counter(), time.process_time()
    data = ctx.splits
    teacher, _ = quick_teacher(data) if ctx.args.quick else default_teacher(data, seed=ctx.seed)
    cost = measure_cost(teacher.module, data.input_shape, NO_LATENCY)
    return {"test_accuracy": teacher.accuracy(data, "test"),
            "val_accuracy": teacher.accuracy(data, "val"), "params": cost.params,
            "spec": dict(getattr(teacher.module, "spec", {})),
            "seconds": round(time.perf_counter() - t0, 2),
            "cpu_seconds": round(time.process_time() - c0, 2)}


MLP_SPEC = {"depth": 2, "widths": 100}
#: (model, step name, what changes relative to the previous step, run); ablation order
STEPS: list[tuple[str, str, str, Callable[[Ctx], dict[str, Any]]]] = [
    ("logistic", "published", "published set-up", plain("logistic", "paper")),
    ("logistic", "autokd", "autokd: its split, trainer and default recipe",
     autokd_run("mlp", {"depth": 0}, "default")),
    ("mlp", "published", "published set-up (residual MLP, data seed 42, 4000/1000 cut)",
     plain("mlp", "paper")),
    ("mlp", "hidden_256", "side check: hidden 256 (the repo's get_model_args default)",
     plain("mlp", "paper", hidden=256)),
    ("mlp", "plain_mlp", "MLP without the residual add (autokd's mlp family)",
     plain("mlp", "paper", residual=False)),
    ("mlp", "data_seed", "data generated at seed s instead of 42 (same 4000/1000 cut)",
     plain("mlp", "paper_s", residual=False)),
    ("mlp", "autokd_split", ("autokd's split of those 5000: train 3250 / val 750 / test 1000, "
                             "normalised on train"), plain("mlp", "autokd", residual=False)),
    ("mlp", "autokd_trainer", ("autokd's trainer, published recipe (shuffled batches, "
                               "best-validation epoch)"), autokd_run("mlp", MLP_SPEC, "published")),
    ("mlp", "autokd", ("autokd's default-teacher recipe (AdamW 2e-3, wd 1e-4, cosine, "
                       "60 epochs, batch 64, clip 5)"), autokd_run("mlp", MLP_SPEC, "default")),
    ("cnn", "published", "published set-up (the paper's 5210-parameter CNN)",
     plain("cnn", "paper")),
    ("cnn", "gap_head", "the same CNN with a global-average head (as autokd's cnn1d)",
     plain("cnn", "paper", head="gap")),
    ("cnn", "autokd_cnn1d", ("closest cnn1d spec through autokd (its split, trainer, default "
                             "recipe)"), autokd_run("cnn1d", CNN1D_PAPERLIKE, "default")),
    ("cnn", "autokd_teacher", "autokd's default 1-D teacher (wide cnn1d)", teacher_run),
]


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (model, step): test accuracy mean ± std, gap to the published number and
    change from the previous step of the same model."""
    out: list[dict[str, Any]] = []
    prev: dict[str, float] = {}
    for model, step, change, _ in STEPS:
        mine = [r for r in rows if r["model"] == model and r["step"] == step]
        test = mean_std([r["test_accuracy"] for r in mine])
        published = PUBLISHED[model]
        delta = None if model not in prev or step == "hidden_256" else test["mean"] - prev[model]
        out.append({
            "model": model, "step": step, "change": change,
            "params": mine[0].get("params"), "published_test_accuracy": published,
            "test_accuracy": test,
            "gap_to_published": test["mean"] - published,
            "change_from_previous_step": delta,
            "text": f"{pm(test)} % (published {published * 100:.0f} %, gap "
                    f"{(test['mean'] - published) * 100:+.1f})",
        })
        if step != "hidden_256":
            prev[model] = test["mean"]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    load_before, wall0, cpu0 = os.getloadavg(), time.perf_counter(), time.process_time()
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        ctx = Ctx(args, seed)
        for model, step, _, run in STEPS:
            row = {"model": model, "step": step, "seed": seed, **run(ctx)}
            log(f"seed {seed} {model}/{step}: test {row['test_accuracy']:.4f} "
                f"({row['seconds']} s)")
            rows.append(row)
    payload = {
        "benchmark": "mnist1d_sanity",
        "quick": args.quick,
        "setup": {
            "published": "README of greydanus/mnist1d (Greydanus 2020): logistic 32 %, MLP 68 %,"
                         " CNN 94 %",
            "published_recipe": "package make_dataset defaults (5000 samples, data seed 42, "
                                "4000/1000 cut, no validation); Adam lr 1e-2, wd 0, batch 100 "
                                f"in order, steps 0..{args.steps}; test accuracy at the end",
            "frozen_data": "the paper used the downloaded mnist1d_data.pkl; nothing is "
                           "downloaded here: the package's generator at seed 42 stands in",
            "notebook_rerun": NOTEBOOK_RERUN,
            "seeds": args.seeds,
            "seed_meaning": "published-loop steps: the initialisation seed (data fixed at 42) "
                            "except data_seed/autokd_split, where it is also the data seed; "
                            "autokd steps: data, split and training seed",
            "num_samples": args.num_samples,
            "autokd_split_sizes": ctx.splits.sizes(),
            "autokd_published_recipe": dataclasses.asdict(ctx.published_cfg()),
            "autokd_default_recipe": dataclasses.asdict(ctx.default_cfg()),
            "cnn1d_paperlike_spec": CNN1D_PAPERLIKE,
            "threads": args.threads,
            "std": "sample std (ddof=1) over seeds",
        },
        "summary": summarise(rows),
        "rows": rows,
        "machine": {"loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                    "wall_seconds": round(time.perf_counter() - wall0, 1),
                    "cpu_seconds": round(time.process_time() - cpu0, 1),
                    "cpu_count": os.cpu_count()},
    }
    write_result("mnist1d_sanity", payload, quick=args.quick)
    return payload


if __name__ == "__main__":
    main()
