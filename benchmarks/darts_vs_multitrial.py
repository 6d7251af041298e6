"""How much compute does DARTS need to match the best multi-trial student on digits?

For each seed:

1. Multi-trial: ``autokd.search(strategy="optuna")`` runs ``--trials`` trials (TPE, Pareto
   early stopping, ``--epochs`` per student). Its best student is the feasible one with the
   highest validation accuracy (fewest FLOPs on ties); its compute is the wall time from the
   start of the first trial to the end of that best trial ("time to find it").
2. DARTS: ``autokd.search(strategy="darts")`` with one target, the best multi-trial student's
   FLOPs as a fraction of the teacher's, runs up to ``--darts-runs`` DARTS runs (supernet
   search + retraining of the derived student with the same ``--epochs``). Success: a student
   with FLOPs <= the best multi-trial student's and validation accuracy within 1 point of it.
   Its compute is the wall time from the start of the first run to the end of the first
   successful run.

The ratio DARTS seconds / multi-trial seconds is the result (target: <= 1/5), in wall seconds
and in this process's CPU seconds (other work on the shared cores stretches wall time, not
CPU time). Both run in this one process on the 2-core machine with ``--threads`` torch
threads, without latency measurement (its cost is the same per student for both and would
only add timing noise), on the same cached default teacher, whose training is not counted.
The multi-trial search runs first, so it also pays torch's one-time lazy imports. NNI's DARTS
strategy is timed next to ours on an equivalent small space when ``nni`` (an optional extra)
and what its one-shot strategies need are importable; otherwise the JSON says why it skipped.

Usage: ``python benchmarks/darts_vs_multitrial.py [--seeds 0 1] [--trials 40] [--epochs 40]
[--darts-runs 3] [--threads 1] [--quick]``. Default: about 10 minutes on two free cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import optuna
from _common import log, mean_std, set_threads, teacher_for, write_result
from optuna.trial import FrozenTrial, TrialState

from autokd.config import CostConfig, DataConfig, SearchSettings
from autokd.data import load_data
from autokd.record import SearchRecord, TrialRecord, feasible
from autokd.search import SearchConfig, run_search

__all__ = ["main"]

ACCURACY_SLACK = 0.01  # "within 1 accuracy point"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--trials", type=int, default=40, help="multi-trial budget")
    p.add_argument("--epochs", type=int, default=40, help="training epochs per student")
    p.add_argument("--darts-runs", type=int, default=3, help="most DARTS runs per seed")
    p.add_argument("--darts-epochs", type=int, default=None, help="supernet epochs (default)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (1: 3-5x faster than 2 for these tiny "
                        "models when the 2 cores are shared)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny budgets")
    return p


# -- running and timing a search ---------------------------------------------------------------
class Clock:
    """Wall and process-CPU seconds since the study was ready, stamped as each trial ends.

    Why CPU seconds too: the 2 cores are shared with other work, which stretches wall time
    unevenly between the two searches; this process's CPU time is nearly immune to that.
    """

    def __init__(self) -> None:
        self.start: tuple[float, float] | None = None
        self.stamps: dict[int, tuple[float, float]] = {}

    def now(self) -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def ready(self, _outcome: Any) -> None:
        self.start = self.now()

    def trial_done(self, progress: Any) -> None:
        wall, cpu = self.now()
        assert self.start is not None
        self.stamps[progress.last.number] = (wall - self.start[0], cpu - self.start[1])


def _run(root: str, name: str, seed: int, args: argparse.Namespace, strategy: str,
         budget: int, options: dict[str, Any] | None = None) -> tuple[optuna.Study, Clock]:
    settings = SearchSettings(epochs=args.epochs, cost=CostConfig(latency=False))
    cfg = SearchConfig(data=DataConfig("digits"), space="cnn", budget=budget, strategy=strategy,
                       settings=settings, name=name, results=root, seed=seed,
                       strategy_options=options or {})
    clock = Clock()
    outcome = run_search(cfg, clock.trial_done, on_ready=clock.ready)
    return outcome.study, clock


def _usable(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(states=(TrialState.COMPLETE,))
            if feasible(t) and not TrialRecord.of(t).get("infeasible")
            and TrialRecord.of(t).get("val_accuracy") is not None]


def _row(t: FrozenTrial, clock: Clock) -> dict[str, Any]:
    a = TrialRecord.of(t).fields()
    wall, cpu = clock.stamps[t.number]
    return {"trial": t.number, "wall_seconds": wall, "cpu_seconds": cpu,
            "val_accuracy": a["val_accuracy"], "test_accuracy": a.get("test_accuracy"),
            "flops": a["flops"], "spec": a.get("spec"),
            "darts_search_seconds": a.get("darts_search_seconds"),
            "train_seconds": a.get("train_seconds")}


# -- the two searches --------------------------------------------------------------------------
def _multitrial(root: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    study, clock = _run(root, f"multitrial-{seed}", seed, args, "optuna", args.trials)
    usable = _usable(study)
    best = max(usable, key=lambda t: (TrialRecord.of(t).get("val_accuracy"), -TrialRecord.of(t).get("flops")))
    last = max(clock.stamps.values())
    return {"best": _row(best, clock), "trials": len(study.trials), "finished": len(usable),
            "total_wall_seconds": last[0], "total_cpu_seconds": last[1],
            "teacher": SearchRecord.of(study).teacher}


def _darts(root: str, seed: int, args: argparse.Namespace, best: dict[str, Any],
           teacher_flops: float) -> dict[str, Any]:
    options: dict[str, Any] = {"targets": [best["flops"] / teacher_flops]}
    if args.darts_epochs:
        options["epochs"] = args.darts_epochs
    study, clock = _run(root, f"darts-{seed}", seed, args, "darts", args.darts_runs, options)
    rows = [_row(t, clock) for t in sorted(_usable(study), key=lambda t: t.number)]
    for row in rows:
        row["success"] = (row["flops"] <= best["flops"]
                          and row["val_accuracy"] >= best["val_accuracy"] - ACCURACY_SLACK)
    first = next((r for r in rows if r["success"]), None)
    return {"runs": rows, "success": first is not None,
            "wall_seconds": first["wall_seconds"] if first else None,
            "cpu_seconds": first["cpu_seconds"] if first else None,
            "target_fraction": options["targets"][0]}


def _one_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # SQLite commits on disk cost ~10 ms
    with tempfile.TemporaryDirectory(dir=shm) as root:
        log(f"seed {seed}: multi-trial search of {args.trials} trials")
        multi = _multitrial(root, seed, args)
        log(f"seed {seed}: best multi-trial student {multi['best']}")
        darts = _darts(root, seed, args, multi["best"], multi["teacher"]["flops"])
    best = multi["best"]
    ratios = {f"{kind}_ratio": darts[f"{kind}_seconds"] / best[f"{kind}_seconds"]
              if darts["success"] else None for kind in ("wall", "cpu")}
    log(f"seed {seed}: darts {darts['wall_seconds']} s vs multi-trial {best['wall_seconds']:.1f} s"
        f" to find it: {ratios}")
    return {"seed": seed, "multitrial": multi, "darts": darts, **ratios,
            "load_average": os.getloadavg()}


# -- NNI (optional extra) ----------------------------------------------------------------------
def _nni(args: argparse.Namespace) -> dict[str, Any]:
    """NNI's DARTS strategy vs ours on the same small space (kernel per stage x activation)."""
    try:
        import nni  # noqa: F401
    except ImportError:
        return {"status": "skipped: nni not installed"}
    try:
        return _nni_run(args)
    except ModuleNotFoundError as exc:  # nni is there, but not what its one-shot DARTS needs
        return {"status": f"skipped: nni is installed but {exc.name} (needed by its DARTS "
                          "strategy) is not"}
    except Exception as exc:  # noqa: BLE001  (an optional comparison must not sink the benchmark)
        return {"status": f"failed: {type(exc).__name__}: {exc}"[:300]}


SMALL_SPACE = {"family": "cnn",
               "architecture": {"depth": 2, "widths": [16, 32],
                                "kernel": {"choice": [3, 5], "per_stage": "depth"},
                                "activation": {"choice": ["relu", "silu"]}, "batch_norm": True},
               "training": {"lr": 0.003, "batch_size": 64}}


def _nni_run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.experiment import NasExperiment
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace
    from nni.nas.strategy import DARTS as NniDarts
    from torch import nn
    from torch.utils.data import TensorDataset

    class Space(ModelSpace):
        def __init__(self) -> None:
            super().__init__()
            blocks, c_in = [], 1
            for i, c_out in enumerate((16, 32)):
                convs = [nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
                                       nn.BatchNorm2d(c_out), act(), nn.MaxPool2d(2))
                         for k in (3, 5) for act in (nn.ReLU, nn.SiLU)]
                blocks.append(LayerChoice(convs, label=f"stage{i}"))
                c_in = c_out
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.blocks(x))

    data = load_data("digits")
    train = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=64)
    epochs = 2 if args.quick else 16
    evaluator = Classification(learning_rate=3e-3, weight_decay=1e-4, train_dataloaders=train,
                               val_dataloaders=val, max_epochs=epochs, num_classes=10,
                               export_onnx=False)
    t0 = time.perf_counter()
    experiment = NasExperiment(Space(), evaluator, NniDarts())
    experiment.run()
    nni_seconds = time.perf_counter() - t0
    arch = experiment.export_top_models(formatter="dict")[0]
    return {"status": "ran", "nni_seconds": nni_seconds, "nni_arch": arch,
            "ours_seconds": _ours_on_small_space(epochs), "epochs": epochs}


def _ours_on_small_space(epochs: int) -> float:
    from autokd.config import TrainConfig
    from autokd.distill import KDConfig
    from autokd.models.supernet import Relaxation, Supernet
    from autokd.nas import DartsOptions, DartsSearch, space_decisions
    from autokd.nas.cost_model import CostModel
    from autokd.space import SearchSpace

    data = load_data("digits")
    decisions, fixed = space_decisions(SearchSpace.from_dict(SMALL_SPACE))
    options = DartsOptions(epochs=epochs, relaxation="softmax", warmup=0.0)
    net = Supernet("cnn", decisions, fixed, data.input_shape, 10, Relaxation("softmax"))
    t0 = time.perf_counter()
    scratch = KDConfig(soft_loss="none", alpha=0.0)  # plain cross-entropy, like NNI's evaluator
    DartsSearch(net, CostModel(net), data, None, scratch, TrainConfig(lr=3e-3), {},
                options).run()
    return time.perf_counter() - t0


# -- main --------------------------------------------------------------------------------------
def _summary(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"darts_success": f"{sum(s['darts']['success'] for s in seeds)}/"
                                            f"{len(seeds)}"}
    for kind in ("wall", "cpu"):
        ratios = [s[f"{kind}_ratio"] for s in seeds if s[f"{kind}_ratio"] is not None]
        out[f"{kind}_ratio"] = mean_std(ratios)
        out[f"{kind}_ratio_max"] = max(ratios) if ratios else None
        out[f"darts_{kind}_seconds"] = mean_std([s["darts"][f"{kind}_seconds"] for s in seeds])
        out[f"multitrial_{kind}_seconds_to_best"] = mean_std(
            [s["multitrial"]["best"][f"{kind}_seconds"] for s in seeds])
    out["target"] = "darts seconds / multi-trial seconds <= 0.2 on every seed"
    out["target_met_wall"] = out["wall_ratio_max"] is not None and \
        len(out["wall_ratio"]["values"]) == len(seeds) and out["wall_ratio_max"] <= 0.2
    out["target_met_cpu"] = out["cpu_ratio_max"] is not None and \
        len(out["cpu_ratio"]["values"]) == len(seeds) and out["cpu_ratio_max"] <= 0.2
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    if args.quick:
        args.seeds, args.trials, args.epochs, args.darts_runs = [0], 4, 3, 1
        args.darts_epochs = args.darts_epochs or 2
    set_threads(args.threads)
    data = load_data("digits")
    teacher_for(data)  # train / load the default teacher before any clock starts
    seeds = [_one_seed(seed, args) for seed in args.seeds]
    payload = {
        "benchmark": "darts_vs_multitrial",
        "quick": args.quick,
        "setup": {"dataset": "digits", "space": "cnn", "threads": args.threads,
                  "trials": args.trials, "epochs": args.epochs, "darts_runs": args.darts_runs,
                  "darts_epochs": args.darts_epochs or "default", "accuracy_slack": ACCURACY_SLACK,
                  "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg()},
        "summary": _summary(seeds),
        "seeds": seeds,
        "nni": _nni(args),
    }
    write_result("darts_vs_multitrial", payload, quick=args.quick)
    return payload


if __name__ == "__main__":
    main()
