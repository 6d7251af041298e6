"""How differently a front ranks under eager PyTorch latency and ONNX Runtime latency.

Runs one short search on digits (default space, latency timed eagerly per trial), then times
every finished trial's student again in both runtimes, interleaved over ``--rounds`` rounds so
drifting machine load hits both alike (``autokd.quant.deploy.runtime_cost``: the float ONNX
file under ONNX Runtime, the same ``measure_latency`` rules), at batch 1 and at the deploy
batch. Reports Spearman's rho between the two latencies over the trials, the (val accuracy,
latency) Pareto fronts under each and how many members differ, what the export + timing costs
per trial (at full timing, and at a search's per-trial timing: the cost measurement a trial
pays when latency is an objective or a limit), and what re-timing only the front after the
search costs (``autokd.runtime_front``, the default when latency ranks nothing).

Usage: ``python benchmarks/latency_runtime.py [--quick] [--trials 16] [--epochs 5]
[--rounds 5] [--out results/benchmarks]``; ``--quick`` writes under
``$TMPDIR/autokd-bench-quick/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
import yaml
from scipy.stats import spearmanr

from autokd.config import CostConfig, TrainConfig
from autokd.cost import fix_allocator
from autokd.data import DataSplits, load_data
from autokd.distill import KDConfig
from autokd.models import build_student
from autokd.pareto import as_losses, non_dominated
from autokd.pipeline import run_distillation
from autokd.quant.deploy import runtime_cost
from autokd.record import TrialRecord
from autokd.runtime_front import RUNTIME_ATTR, front_runtime_latency
from autokd.search import search
from autokd.teachers import load_teachers, save_checkpoint

__all__ = ["main", "run"]

RUNTIMES = ("torch", "onnxruntime")
QUICK_SPACE = {"family": "cnn",
               "architecture": {"depth": {"int": [1, 2]},
                                "widths": {"choice": [4, 8, 16], "per_stage": "depth"}},
               "distillation": {"temperature": 4.0, "alpha": 0.9},
               "training": {"lr": 0.005, "epochs": 1}}


def _teacher(data: DataSplits, root: Path, epochs: int) -> Path:
    run = run_distillation(data, None, "cnn", {"depth": 2, "widths": [32, 64]},
                           KDConfig(soft_loss="none", alpha=0.0), TrainConfig(epochs=epochs),
                           CostConfig(latency=False))
    return save_checkpoint(run.model, root / "teacher.pt", data=data.describe())


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _time_trials(trials: list[dict[str, Any]], data: DataSplits, cfg: CostConfig,
                 rounds: int) -> None:
    """Each trial's latency in both runtimes, ``rounds`` interleaved rounds; the median of
    the round medians is kept with min/max, and the export + timing seconds of ONNX Runtime."""
    batch = cfg.batch_size
    models = {t["trial"]: build_student(t["family"], t["spec"], data.input_shape,
                                        data.num_classes) for t in trials}
    runs: dict[int, dict[str, dict[str, list[float]]]] = {
        n: {r: {"1": [], str(batch): []} for r in RUNTIMES} for n in models}
    spent: dict[int, list[float]] = {n: [] for n in models}
    for _ in range(rounds):
        for n, model in models.items():
            for runtime in RUNTIMES:
                t0 = time.perf_counter()
                cost = runtime_cost(model, data.input_shape,
                                    dataclasses.replace(cfg, runtime=runtime))
                if runtime == "onnxruntime":
                    spent[n].append(time.perf_counter() - t0)
                assert cost.latency_runtime == runtime, cost.latency_fallback
                runs[n][runtime]["1"].append(cost.latency_ms)
                runs[n][runtime][str(batch)].append(cost.latency_ms_batch)
    per_trial = CostConfig.for_search(batch_size=batch)  # what a search spends per trial
    for t in trials:
        n = t["trial"]
        t["latency"] = {r: {b: _spread(v) for b, v in runs[n][r].items()} for r in RUNTIMES}
        t["onnxruntime_export_and_time_s"] = _spread(spent[n])
        cost_s: dict[str, list[float]] = {r: [] for r in RUNTIMES}
        for _ in range(rounds):
            for runtime in RUNTIMES:
                t0 = time.perf_counter()
                runtime_cost(models[n], data.input_shape,
                             dataclasses.replace(per_trial, runtime=runtime))
                cost_s[runtime].append(time.perf_counter() - t0)
        t["search_cost_measurement_s"] = {r: _spread(v) for r, v in cost_s.items()}


def _fronts(trials: list[dict[str, Any]], batch: str) -> dict[str, Any]:
    """(val accuracy, latency) fronts under each runtime, and how they differ."""
    out: dict[str, Any] = {}
    for runtime in RUNTIMES:
        values = [[t["val_accuracy"], t["latency"][runtime][batch]["median"]] for t in trials]
        mask = non_dominated(as_losses(values, ["maximize", "minimize"]))
        out[runtime] = sorted(t["trial"] for t, m in zip(trials, mask) if m)
    eager, ort = set(out["torch"]), set(out["onnxruntime"])
    out["differ"] = len(eager ^ ort)
    out["only_torch"] = sorted(eager - ort)
    out["only_onnxruntime"] = sorted(ort - eager)
    out["jaccard"] = len(eager & ort) / len(eager | ort) if eager | ort else 1.0
    return out


def _rho(trials: list[dict[str, Any]], batch: str) -> float | None:
    a = [t["latency"]["torch"][batch]["median"] for t in trials]
    b = [t["latency"]["onnxruntime"][batch]["median"] for t in trials]
    if len(a) < 3:
        return None
    return float(spearmanr(a, b).statistic)


def run(trials: int, epochs: int, rounds: int, batch: int, quick: bool = False) -> dict[str, Any]:
    """The search, both timings and the comparison; ``quick``: a tiny space, a 1-epoch
    teacher and per-trial (not full) timing, to check the script end to end in seconds."""
    wall0, cpu0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()
    data = load_data("digits")
    timing = CostConfig.for_search(batch_size=batch) if quick else CostConfig(batch_size=batch)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        teacher = _teacher(data, root, 1 if quick else 10)
        space = None
        if quick:
            space = str(root / "tiny.yaml")
            Path(space).write_text(yaml.safe_dump(QUICK_SPACE))
        search_cost = CostConfig.for_search(batch_size=batch)  # eager per trial
        t0 = time.perf_counter()
        study = search(dataset="digits", budget=trials, epochs=epochs, teacher=[str(teacher)],
                       name="rt", results=str(root / "results"), seed=0, device="cpu",
                       cost=search_cost, space=space)
        search_s = time.perf_counter() - t0
        rows = []
        for t in study.trials:
            rec = TrialRecord.of(t)
            if t.state.name == "COMPLETE" and rec.val_accuracy is not None and not rec.infeasible:
                rows.append({"trial": t.number, "family": rec.family, "spec": rec.spec,
                             "val_accuracy": rec.val_accuracy, "flops": rec.flops,
                             "params": rec.params, "search_latency_ms": rec.latency_ms})
        _time_trials(rows, data, timing, rounds)
        t0 = time.perf_counter()
        deferred = dataclasses.replace(search_cost, runtime="onnxruntime", defer_runtime=True)
        members = front_runtime_latency(study, data, load_teachers([str(teacher)], data=data),
                                        deferred)
        retime_s = time.perf_counter() - t0
        retimed = study.user_attrs.get(RUNTIME_ATTR, {})
    ratio = [t["latency"]["torch"]["1"]["median"] / t["latency"]["onnxruntime"]["1"]["median"]
             for t in rows]
    per_trial_export = [t["onnxruntime_export_and_time_s"]["median"] for t in rows]
    search_cost_s = {r: _spread([t["search_cost_measurement_s"][r]["median"] for t in rows])
                     for r in RUNTIMES}
    return {
        "dataset": "digits", "space": "tiny cnn (quick)" if quick else "default (cnn)",
        "trials": trials, "epochs": epochs, "timing": dataclasses.asdict(timing),
        "complete_trials": len(rows), "rounds": rounds, "deploy_batch": batch, "threads": 1,
        "spearman_rho_batch1": _rho(rows, "1"),
        "spearman_rho_deploy_batch": _rho(rows, str(batch)),
        "front_batch1": _fronts(rows, "1"),
        "front_deploy_batch": _fronts(rows, str(batch)),
        "eager_over_onnxruntime_batch1": _spread(ratio),
        "onnxruntime_export_and_time_s_per_trial": _spread(per_trial_export),
        "search_cost_measurement_s_per_trial": search_cost_s,
        "search_seconds": search_s, "search_seconds_per_trial": search_s / trials,
        "retime_front_after_search_s": retime_s, "retime_front_members": members,
        "retimed": retimed.get("trials", {}),
        "per_trial": rows,
        "wall_seconds": time.perf_counter() - wall0, "cpu_seconds": time.process_time() - cpu0,
        "loadavg_start": list(load0), "loadavg_end": list(os.getloadavg()),
        "cpus": os.cpu_count(), "allocator_pinned": fix_allocator(),
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="3 trials of a tiny space, 1 epoch, 1 round of per-trial timing")
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--batch", type=int, default=64, help="deploy batch size (default 64)")
    p.add_argument("--out", default="results/benchmarks", help="where the JSON goes")
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.epochs, args.rounds = 3, 1, 1
        args.out = str(Path(tempfile.gettempdir()) / "autokd-bench-quick")
    out = run(args.trials, args.epochs, args.rounds, args.batch, quick=args.quick)
    text = json.dumps({"quick": args.quick, **out}, indent=2)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "latency_runtime.json").write_text(text + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
