"""INT8 students: QAT-KD in a search vs its float twin and vs post-training quantisation.

Protocol, per dataset (``digits``: the cnn space; ``mnist1d``: the cnn1d space) and seed:

1. One teacher per dataset (the cached default teacher; ``--quick``: a 3-epoch one).
2. A search with ``quantize`` in the space (``recipe={"quantize": ["none", "int8"]}``, what
   ``--recipe quantize=none,int8`` does): ``--trials`` (12) TPE trials of ``--epochs`` (15)
   epochs, objectives (val accuracy, bytes); an int8 trial's bytes and accuracy are its INT8
   ONNX model's. Its Pareto front is listed with each member's quantize.
3. The best INT8 student (best val accuracy among int8 trials) is exported with
   ``autokd.export`` (pt, onnx, int8: verified; INT8 is exempt from the 1e-4 float parity and
   must reproduce the accuracy its card states).
4. Its float twin: the same architecture and recipe with ``quantize: none``, trained with the
   same settings and seed from the same teacher; its ONNX model, and post-training
   quantisation (PTQ, ONNX Runtime static QDQ, 512 training samples calibrate) of it.
5. Measured: test/val accuracy of QAT INT8, float twin and PTQ INT8 (ONNX Runtime); file and
   initialiser bytes; ONNX Runtime latency (1 thread) at batch 1 and 64, the three models
   interleaved over ``--runs`` (5) rounds, min/median/max of the per-round medians.

Accuracy summaries are mean ± std over seeds. Timings share the machine with whatever else
runs: the load average is recorded beside them. Resume: each (dataset, seed) is written to
the JSON when done and skipped by a rerun with the same protocol; ``--cpu-minutes`` stops
starting new runs. Usage: ``python benchmarks/int8.py [--datasets digits mnist1d]
[--seeds 0 1 2] [--trials 12] [--epochs 15] [--runs 5] [--cpu-minutes 15] [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import onnxruntime
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

from autokd.config import CostConfig, DataConfig, SearchConfig, SearchSettings, TrainConfig
from autokd.cost import measure_latency
from autokd.data import DataSplits, load_data
from autokd.distill import KDConfig
from autokd.export import OnnxModule, export_student, test_metrics, write_artifacts
from autokd.export.int8 import calibration_samples, int8_sizes
from autokd.export.source import search_epochs, trial_train_config
from autokd.pipeline import run_distillation
from autokd.record import TrialRecord
from autokd.search import run_search
from autokd.study import StudyPaths
from autokd.teachers import Teacher

__all__ = ["main", "parse_args"]

NAME = "int8"
SPACES = {"digits": "cnn", "mnist1d": "cnn1d"}
BATCHES = (1, 64)
MODELS = ("float_twin", "qat_int8", "ptq_int8")  # timed and scored, in this order
PROTOCOL_KEYS = ("trials", "epochs", "runs")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(SPACES), choices=list(SPACES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--runs", type=int, default=5, help="interleaved timing rounds (>= 5)")
    p.add_argument("--cpu-minutes", type=float, default=None,
                   help="stop starting new runs after this much CPU in this run")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny budget, temp output")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.trials, args.epochs = args.seeds[:1], 4, 1
    args.runs = max(5, args.runs)
    return args


def _search(dataset: str, seed: int, teacher: Path, args: argparse.Namespace,
            root: Path) -> tuple[Any, StudyPaths]:
    settings = SearchSettings(
        objectives=["accuracy", "bytes"], epochs=args.epochs, keep_weights=True,
        cost=dataclasses.replace(CostConfig.for_search(), latency=False),
        train=TrainConfig(threads=1, seed=seed, device="cpu"))
    name = f"{dataset}-int8-{seed}"
    cfg = SearchConfig(data=DataConfig(source=dataset), teacher=[str(teacher)],
                       budget=args.trials, strategy="optuna", sampler="tpe", settings=settings,
                       space=SPACES[dataset], name=name, results=str(root), seed=seed,
                       device="cpu", jobs=1, recipe={"quantize": ["none", "int8"]})
    return run_search(cfg).study, StudyPaths(root / name)


def _quantize(t: Any) -> str:
    return (TrialRecord.of(t).recipe or {}).get("quantize", "none")


def _member(t: Any) -> dict[str, Any]:
    rec = TrialRecord.of(t)
    return {"trial": t.number, "quantize": _quantize(t), "val_accuracy": rec.val_accuracy,
            "test_accuracy": rec.test_accuracy, "bytes": rec.get("bytes"),
            "params": rec.get("params"), "flops": rec.flops, "spec": rec.spec}


def _front(study: Any) -> dict[str, Any]:
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    front = sorted((_member(t) for t in study.best_trials), key=lambda m: m["bytes"] or 0)
    return {"trials": len(done), "int8_trials": sum(_quantize(t) == "int8" for t in done),
            "members": front, "int8_members": sum(m["quantize"] == "int8" for m in front)}


def _float_twin(study: Any, t: Any, data: DataSplits, teacher: Teacher) -> torch.nn.Module:
    """The int8 trial's architecture and recipe with quantize none, same settings and seed."""
    rec = TrialRecord.of(t)
    kd = KDConfig(**{**(rec.recipe or {}), "quantize": "none", "qat_weight": 0.0}).validate()
    cfg = trial_train_config(study, t, search_epochs(study, t))
    run = run_distillation(data, teacher, rec.family, rec.spec, kd, cfg,
                           CostConfig(latency=False))
    return run.model.cpu().eval()


def _accuracy(path: Path, data: DataSplits) -> dict[str, float]:
    m = test_metrics(OnnxModule(path), data)
    return {"val": m["val"]["accuracy"], "test": m["test"]["accuracy"]}


def _timings(files: dict[str, Path], shape: tuple[int, ...], runs: int,
             min_block_s: float) -> dict[str, Any]:
    """ONNX Runtime, 1 thread: per model and batch, the medians of ``runs`` interleaved rounds
    (each ``measure_latency``'s median of 7 blocks) as min/median/max."""
    models = {name: OnnxModule(files[name], threads=1) for name in MODELS}
    rounds: dict[str, dict[int, list[float]]] = {n: {b: [] for b in BATCHES} for n in models}
    cpu0, wall0, load0 = time.process_time(), time.perf_counter(), os.getloadavg()
    for _ in range(runs):
        for batch in BATCHES:
            for name, model in models.items():  # interleaved: load drift hits all alike
                rounds[name][batch].append(measure_latency(model, shape, batch, threads=1,
                                                           min_block_s=min_block_s)[0])
    out: dict[str, Any] = {
        name: {str(b): {"min_ms": min(v), "median_ms": statistics.median(v), "max_ms": max(v),
                        "rounds_ms": v} for b, v in per.items()}
        for name, per in rounds.items()}
    out.update(runs=runs, threads=1, cpu_s=time.process_time() - cpu0,
               wall_s=time.perf_counter() - wall0, loadavg_before=list(load0),
               loadavg_after=list(os.getloadavg()))
    return out


def _export_check(card: dict[str, Any], t: Any) -> dict[str, Any]:
    """What the export verified: float parity, INT8 exempt and equal to its card."""
    v = card["verification"]
    return {"weights": card["provenance"]["weights"]["how"],
            "card_test_accuracy": card["metrics"]["test"]["accuracy"],
            "search_test_accuracy": TrialRecord.of(t).test_accuracy,
            "int8_file_test_accuracy": v["int8"]["test_accuracy"],
            "int8_equals_card": v["int8"]["test_accuracy"] == card["metrics"]["test"]["accuracy"],
            "int8_max_abs_diff_vs_float": v["int8"]["max_abs_diff"],
            "int8_prediction_agreement": v["int8"]["prediction_agreement"],
            "float_parity_max_abs_diff": {f: v[f]["max_abs_diff"] for f in ("pt", "onnx")},
            "tolerance": v["tolerance"]}


def _one(dataset: str, seed: int, data: DataSplits, teacher: Teacher, teacher_path: Path,
         args: argparse.Namespace, root: Path) -> dict[str, Any]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    study, paths = _search(dataset, seed, teacher_path, args, root)
    run: dict[str, Any] = {"front": _front(study), "search_cpu_s": time.process_time() - cpu0}
    int8 = [t for t in study.trials if t.state.name == "COMPLETE" and _quantize(t) == "int8"]
    if not int8:
        run["best_int8"] = None
        return run
    best = max(int8, key=lambda t: TrialRecord.of(t).val_accuracy or -1.0)
    export = export_student(study, paths, trial=best.number, formats="pt,onnx,int8",
                            out=root / f"export-{dataset}-{seed}")
    twin = _float_twin(study, best, data, teacher)
    folder = root / f"twin-{dataset}-{seed}"
    folder.mkdir()
    twin_files = write_artifacts(twin, folder, ("onnx", "int8"), {}, data.head("test", 2),
                                 calibration=calibration_samples(data))
    files = {"float_twin": twin_files["onnx"], "ptq_int8": twin_files["int8"],
             "qat_int8": export.directory / "student.int8.onnx",
             "qat_float_weights": export.directory / "student.onnx"}
    run.update(
        best_int8=_member(best), export=_export_check(export.card, best),
        accuracy={name: _accuracy(path, data) for name, path in files.items()},
        bytes={"qat_int8": int8_sizes(files["qat_int8"], files["float_twin"]),
               "ptq_int8": int8_sizes(files["ptq_int8"], files["float_twin"]),
               "params": export.card["costs"]["params"], "flops": export.card["costs"]["flops"]},
        latency=_timings(files, tuple(data.input_shape), args.runs,
                         0.002 if args.quick else 0.02),
        cpu_s=time.process_time() - cpu0, wall_s=time.perf_counter() - wall0,
        loadavg=list(os.getloadavg()))
    return run


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of what the comparison is about."""
    done = [r for r in runs if r.get("best_int8")]
    acc = {n: mean_std([r["accuracy"][n]["test"] for r in done])
           for n in ("qat_int8", "float_twin", "ptq_int8", "qat_float_weights")}
    lat = {f"{q}_over_float_b{b}": mean_std([
        _ratio(r["latency"][q][str(b)]["median_ms"],
               r["latency"]["float_twin"][str(b)]["median_ms"]) for r in done])
        for q in ("qat_int8", "ptq_int8") for b in BATCHES}
    out = {
        "seeds_with_int8": len(done), "seeds": len(runs),
        "front_int8_members": mean_std([r["front"]["int8_members"] for r in runs]),
        "front_members": mean_std([len(r["front"]["members"]) for r in runs]),
        "test_accuracy": acc,
        "qat_minus_float_points": mean_std([100 * (r["accuracy"]["qat_int8"]["test"]
                                                   - r["accuracy"]["float_twin"]["test"])
                                            for r in done]),
        "qat_minus_ptq_points": mean_std([100 * (r["accuracy"]["qat_int8"]["test"]
                                                 - r["accuracy"]["ptq_int8"]["test"])
                                          for r in done]),
        "float_over_int8_weight_bytes": mean_std([_ratio(
            r["bytes"]["qat_int8"]["float_initializer_bytes"],
            r["bytes"]["qat_int8"]["initializer_bytes"]) for r in done]),
        "float_over_int8_file_bytes": mean_std([_ratio(
            r["bytes"]["qat_int8"]["float_file_bytes"], r["bytes"]["qat_int8"]["file_bytes"])
            for r in done]),
        "params": mean_std([r["bytes"]["params"] for r in done]),
        "latency_ratio": lat,
        "export_int8_equals_card": all(r["export"]["int8_equals_card"] for r in done),
    }
    out["notes"] = _notes(out)
    return out


def _notes(s: dict[str, Any]) -> list[str]:
    """Plain sentences for what the numbers say, so the JSON explains itself."""
    notes = []
    r = s["latency_ratio"]
    slow = [b for b in BATCHES if (r[f"qat_int8_over_float_b{b}"]["mean"] or 0) > 1]
    ptq_faster = [b for b in slow if (r[f"ptq_int8_over_float_b{b}"]["mean"] or 2) < 1]
    if slow:
        notes.append(f"the QAT INT8 model is slower than float at batch "
                     f"{', '.join(map(str, slow))}: quantising and dequantising activations at "
                     "every Q/DQ pair, and the int8 kernels' fixed costs, weigh heavily in a "
                     "student doing this little arithmetic per layer")
    if ptq_faster:
        notes.append(f"yet post-training quantisation of the same architecture is faster than "
                     f"float at batch {', '.join(map(str, ptq_faster))}: its graph is BatchNorm-"
                     "folded before quantising, so ONNX Runtime fuses it into QLinearConv/"
                     "QGemm; the QAT file quantises only each layer's input and leaves "
                     "BatchNorm, the activation and pooling as float nodes after each "
                     "convolution, so no DequantizeLinear-Conv-QuantizeLinear unit forms and "
                     "the convolutions run in float on weights dequantised at every call")
    file_ratio = s["float_over_int8_file_bytes"]["mean"]
    if file_ratio is not None and file_ratio < 3:
        notes.append(f"the whole INT8 file is only {file_ratio:.2f}x smaller than the float "
                     "one (weights alone shrink ~4x): the graph's names, shapes and Q/DQ "
                     "nodes are a large share of a file holding a few thousand parameters")
    return notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(1)
    protocol = {k: getattr(args, k) for k in PROTOCOL_KEYS} | {"quick": args.quick}
    path = result_path(NAME, args.quick)
    doc = load_resumable(path, protocol, datasets={})
    doc.update(torch=torch.__version__, onnxruntime=onnxruntime.__version__)
    cpu_start, stopped = time.process_time(), None
    root = Path(tempfile.mkdtemp(prefix="autokd-int8-"))
    try:
        for dataset in args.datasets:
            data = load_data(dataset)
            teacher, teacher_path = teacher_for(data, quick=args.quick)
            for seed in args.seeds:
                key = f"{dataset}/{seed}"
                if key in doc["runs"]:
                    continue
                if args.cpu_minutes is not None and \
                        (time.process_time() - cpu_start) / 60 >= args.cpu_minutes:
                    stopped = f"cpu budget of {args.cpu_minutes} min reached"
                    break
                log(f"{key}: {args.trials} trials x {args.epochs} epochs, quantize none|int8")
                doc["runs"][key] = _one(dataset, seed, data, teacher, teacher_path, args, root)
                save_atomic(path, doc)  # resume point after every (dataset, seed)
            runs = [v for k, v in doc["runs"].items() if k.startswith(f"{dataset}/")]
            doc["datasets"][dataset] = s = _summary(runs)
            log(f"{dataset}: test acc QAT int8 {pm(s['test_accuracy']['qat_int8'])}, float "
                f"twin {pm(s['test_accuracy']['float_twin'])}, PTQ "
                f"{pm(s['test_accuracy']['ptq_int8'])}; front int8 members "
                f"{s['front_int8_members']['values']}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    doc["stopped"] = stopped
    doc["loadavg_end"] = list(os.getloadavg())
    save_atomic(path, doc)
    print(json.dumps(doc, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
