"""How well do latency tables predict students they were not calibrated on?

For each family with a table (``cnn``, ``cnn1d``, ``mlp`` and ``mbv2`` by their DARTS supernet,
``resnet`` by per-block units) the table of the family's bundled space is built, then held-out
students (sampled from the same space with another seed, none equal to a calibration model)
are timed ``--runs`` times each, interleaved, at batch 1 and at the deploy batch, exactly as a
search times a trial. Their median is compared with the table's prediction. The run-to-run
CV of those timings is the noise floor: no predictor can be checked more finely than it.

Usage: ``python benchmarks/latency_model.py [--quick] [--heldout 12] [--runs 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from autokd.block_latency import build_block_table, predict_latency
from autokd.config import CostConfig
from autokd.cost import measure_latency
from autokd.latency_model import AtBatch, summarise_errors
from autokd.latency_table import TableSettings, build_table
from autokd.models import build_student
from autokd.models.supernet import build_supernet
from autokd.nas import space_decisions
from autokd.space import load_space

__all__ = ["main"]

# one sample's shape per family: the bundled datasets' (digits 8x8 / 64 features, mnist1d 40)
SHAPES: dict[str, tuple[int, ...]] = {"cnn": (1, 8, 8), "cnn1d": (1, 40), "mlp": (64,),
                                      "mbv2": (1, 16, 16), "resnet": (1, 16, 16)}
CLASSES = 10
TARGET_MEAN_DEPLOY, TARGET_MAX = 10.0, 25.0


def _measure(cost: CostConfig) -> Any:
    def measure(module: torch.nn.Module, shape: tuple[int, ...]) -> float:
        return measure_latency(module, shape, 1, warmup=cost.warmup, repeats=cost.repeats,
                               threads=cost.threads, min_block_s=cost.min_block_s)[0]
    return measure


def _supernet_family(name: str, settings: TableSettings, heldout: int, seed: int,
                     cost: CostConfig) -> tuple[Any, list[dict[str, Any]]]:
    """The table, and held-out students as (model, predicted at batch 1, at deploy batch)."""
    space = load_space(name)
    decisions, fixed = space_decisions(space)
    shape = SHAPES[name]
    net = build_supernet(space.family, decisions, fixed, shape, CLASSES)
    table = build_table(net, name, settings=settings, measure=_measure(cost),
                        batch_size=cost.batch_size)
    seen = {repr(sorted(c["spec"].items())) for c in table.calibration}
    rng = random.Random(seed)
    students = []
    while len(students) < heldout:
        choice = {n: rng.choice(opts) for n, opts in net.decisions.items()}
        spec = net.spec_for(choice)
        if repr(sorted(spec.items())) in seen:
            continue
        seen.add(repr(sorted(spec.items())))
        ops = net.ops_for(choice)
        students.append({"spec": spec,
                         "model": build_student(space.family, spec, shape, CLASSES).eval(),
                         "predicted_ms": sum(table.latency(op) for op in ops),
                         "predicted_ms_batch": sum(table.latency(op, "deploy") for op in ops)})
    return table, students


def _block_family(name: str, settings: TableSettings, heldout: int, seed: int,
                  cost: CostConfig) -> tuple[Any, list[dict[str, Any]]]:
    """``resnet``: units of calibration *and* held-out students are timed (a block table must
    cover a student's units), but only the calibration students fit the correction."""
    import optuna

    space = load_space(name)
    shape = SHAPES[name]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    specs: list[dict[str, Any]] = []
    while len(specs) < max(12, 4 * settings.calibration) + heldout:
        spec = space.sample(study.ask()).spec
        if spec not in specs:
            specs.append(spec)
    calibration, held = specs[:len(specs) - heldout], specs[len(specs) - heldout:]
    table = build_block_table(space.family, calibration, shape, CLASSES, name,
                              settings=settings, measure=_measure(cost),
                              batch_size=cost.batch_size, cover=held)
    students = []
    for spec in held:
        model = build_student(space.family, spec, shape, CLASSES).eval()
        students.append({"spec": spec, "model": model,
                         "predicted_ms": predict_latency(table, model, shape),
                         "predicted_ms_batch": predict_latency(table, model, shape, "deploy")})
    return table, students


def _time_students(students: list[dict[str, Any]], shape: tuple[int, ...], runs: int,
                   cost: CostConfig) -> None:
    measure = _measure(cost)
    batched = [AtBatch(s["model"], shape, cost.batch_size) for s in students]
    for s in students:
        s["runs_ms"], s["runs_ms_batch"] = [], []
    for _ in range(runs):  # interleaved: one burst of load spreads over every student
        for s, at_batch in zip(students, batched):
            s["runs_ms"].append(measure(s["model"], shape))
            s["runs_ms_batch"].append(measure(at_batch, shape))


def _evaluate(students: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for batch, suffix in (("batch1", ""), ("deploy_batch", "_batch")):
        errors, cvs = [], []
        for s in students:
            runs = s[f"runs_ms{suffix}"]
            measured = statistics.median(runs)
            errors.append(100.0 * (s[f"predicted_ms{suffix}"] - measured) / measured)
            cvs.append(100.0 * statistics.pstdev(runs) / statistics.fmean(runs))
        out[batch] = {**summarise_errors(errors), "run_to_run_cv_pct": statistics.median(cvs),
                      "errors_pct": [round(e, 2) for e in errors]}
    return out


def run(families: list[str], heldout: int, runs: int, settings: TableSettings,
        cost: CostConfig, seed: int) -> dict[str, Any]:
    per_family: dict[str, Any] = {}
    pooled: dict[str, list[dict[str, Any]]] = {}
    for name in families:
        t0 = time.perf_counter()
        build = _block_family if name == "resnet" else _supernet_family
        table, students = build(name, settings, heldout, seed, cost)
        _time_students(students, SHAPES[name], runs, cost)
        result = _evaluate(students)
        pooled[name] = students
        per_family[name] = {**result, "heldout": len(students),
                            "table_ops": len(table.entries),
                            "table_build_s": round(table.build_seconds, 2),
                            "table_loo_error": table.error(),
                            "correction": table.correction,
                            "latency_ms_range_batch1": [
                                min(statistics.median(s["runs_ms"]) for s in students),
                                max(statistics.median(s["runs_ms"]) for s in students)],
                            "wall_s": round(time.perf_counter() - t0, 2)}
    overall = _evaluate([s for group in pooled.values() for s in group])
    return {"families": per_family, "overall": overall}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one family (mlp), 4 held-out students, short timings (< 20 s)")
    parser.add_argument("--families", default="cnn,cnn1d,mlp,mbv2,resnet")
    parser.add_argument("--heldout", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = parser.parse_args(argv)
    cost = CostConfig.for_search()  # what a search times each trial with
    settings = TableSettings.from_cost(cost)
    families = args.families.split(",")
    if args.quick:
        families, args.heldout = ["mlp"], 4
        cost = CostConfig.for_search(min_block_s=0.0005, repeats=3, warmup=1, batch_size=16)
        settings = TableSettings(warmup=1, repeats=3, min_block_s=0.0005, passes=1,
                                 calibration=1)
    torch.manual_seed(0)
    load_before, cpu0, wall0 = os.getloadavg(), time.process_time(), time.perf_counter()
    result = run(families, args.heldout, args.runs, settings, cost, args.seed)
    overall = result["overall"]
    mean_b1, cv_b1 = overall["batch1"]["mean_abs_pct"], overall["batch1"]["run_to_run_cv_pct"]
    result.update({
        "mean_error_deploy_batch": overall["deploy_batch"]["mean_abs_pct"],
        "max_error_deploy_batch": overall["deploy_batch"]["max_abs_pct"],
        "mean_error_batch1": mean_b1,
        "max_error_batch1": overall["batch1"]["max_abs_pct"],
        "run_to_run_cv_batch1": cv_b1,
        "run_to_run_cv_deploy_batch": overall["deploy_batch"]["run_to_run_cv_pct"],
        "targets": {
            "mean_deploy_le_10pct": overall["deploy_batch"]["mean_abs_pct"] <= TARGET_MEAN_DEPLOY,
            "mean_batch1_le_2x_cv": mean_b1 <= 2 * cv_b1,
            "max_le_25pct": max(overall["batch1"]["max_abs_pct"],
                                overall["deploy_batch"]["max_abs_pct"]) <= TARGET_MAX},
        "deploy_batch_size": cost.batch_size, "runs_per_student": args.runs,
        "quick": args.quick, "threads": cost.threads, "torch": torch.__version__,
        "wall_s": round(time.perf_counter() - wall0, 2),
        "cpu_s": round(time.process_time() - cpu0, 2),
        "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
    })
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1, default=float)
    (args.out / "latency_model.json").write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
