"""Latency of an exported student: ONNX Runtime and TorchScript vs eager PyTorch.

Exports one student (``autokd.export.export_student``: verified artifacts), then times the
eager PyTorch model, the TorchScript file and the ONNX file (ONNX Runtime, CPU provider) with
the same ``autokd.cost.measure_latency`` procedure, one thread each, interleaved over
``--runs`` rounds so drifting machine load hits every runtime alike. Reports the median of the
per-round medians, their coefficient of variation and the ONNX speed-up over PyTorch.

Without ``--study`` a small search is run first in a temp dir (a quickly trained teacher and a
short default-space search), so the script is self-contained.

Usage: ``python benchmarks/export_latency.py [--study DIR] [--trial N] [--runs 5] [--quick]
[--out results/benchmarks]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import warnings
from pathlib import Path
from typing import Any

import onnxruntime
import torch
from torch import nn

from autokd.config import CostConfig, TrainConfig
from autokd.cost import fix_allocator, measure_latency
from autokd.data import load_data
from autokd.distill import KDConfig
from autokd.export import OnnxModule, export_student, load_student
from autokd.pipeline import run_distillation
from autokd.search import search
from autokd.study import StudyPaths, find_study
from autokd.teachers import save_checkpoint

__all__ = ["main"]

BATCH_SIZES = (1, 64)


def quick_study(root: Path, trials: int = 6, epochs: int = 10) -> tuple[Any, StudyPaths]:
    """A ``trials``-trial, ``epochs``-epoch search on digits with a teacher trained as long."""
    data = load_data("digits")
    run = run_distillation(data, None, "cnn", {"depth": 2, "widths": [32, 64]},
                           KDConfig(soft_loss="none", alpha=0.0), TrainConfig(epochs=epochs),
                           CostConfig(latency=False))
    teacher = save_checkpoint(run.model, root / "teacher.pt", data=data.describe())
    study = search(dataset="digits", budget=trials, epochs=epochs, teacher=[str(teacher)],
                   name="bench", results=str(root / "results"), seed=0, device="cpu")
    return study, StudyPaths(root / "results" / "bench")


def runtimes(folder: Path) -> dict[str, nn.Module]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
        scripted = torch.jit.load(str(folder / "student.torchscript.pt")).eval()
    return {"pytorch": load_student(folder), "torchscript": scripted,
            "onnx": OnnxModule(folder / "student.onnx", threads=1)}


def time_all(models: dict[str, nn.Module], shape: tuple[int, ...], runs: int) -> dict[str, Any]:
    """Per runtime and batch size: median of per-round medians and their CV."""
    rounds: dict[str, dict[int, list[float]]] = {n: {b: [] for b in BATCH_SIZES} for n in models}
    for _ in range(runs):
        for batch in BATCH_SIZES:
            for name, model in models.items():  # interleaved: load drift hits all alike
                rounds[name][batch].append(measure_latency(model, shape, batch, threads=1)[0])
    out: dict[str, Any] = {"median_ms": {}, "cv_of_medians": {}, "runs_ms": rounds}
    for name, per_batch in rounds.items():
        out["median_ms"][name] = {str(b): statistics.median(v) for b, v in per_batch.items()}
        out["cv_of_medians"][name] = {str(b): statistics.pstdev(v) / statistics.fmean(v)
                                      for b, v in per_batch.items()}
    return out


def run(study_dir: str | None, trial: int | None, runs: int,
        quick: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        study, paths = find_study(study_dir) if study_dir else \
            quick_study(Path(tmp), *((2, 1) if quick else (6, 10)))
        result = export_student(study, paths, trial=trial, out=Path(tmp) / "export")
        card = result.card
        timing = time_all(runtimes(result.directory), tuple(card["model"]["input_shape"]), runs)
    med = timing["median_ms"]
    return {
        "study": study.study_name, "trial": result.trial,
        "student": {"family": card["model"]["family"], "spec": card["model"]["spec"],
                    "params": card["costs"]["params"], "flops": card["costs"]["flops"]},
        "test_accuracy": card["metrics"]["test"]["accuracy"],
        "parity_max_abs_diff": {f: v["max_abs_diff"] for f, v in card["verification"].items()
                                if isinstance(v, dict)},
        **timing,
        "onnx_speedup_vs_pytorch": {b: med["pytorch"][b] / med["onnx"][b] for b in med["onnx"]},
        "torchscript_speedup_vs_pytorch": {b: med["pytorch"][b] / med["torchscript"][b]
                                           for b in med["torchscript"]},
        "runs": runs, "threads": 1, "allocator_pinned": fix_allocator(),
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", help="study name or results dir (default: a quick search)")
    p.add_argument("--trial", type=int, help="trial to export (default: best val accuracy)")
    p.add_argument("--runs", type=int, default=5, help="interleaved timing rounds (default 5)")
    p.add_argument("--out", default="results/benchmarks", help="where the JSON goes")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: a 2-trial, 1-epoch search and one timing round")
    args = p.parse_args(argv)
    out = {**run(args.study, args.trial, 1 if args.quick else args.runs, args.quick),
           "quick": args.quick}
    text = json.dumps(out, indent=2)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "export_latency.json").write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
