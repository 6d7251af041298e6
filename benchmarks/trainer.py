"""How close is autokd's trainer to the hardware, and how much faster than a plain KD loop?

Four ways to train the same student on digits for the same epochs and batch size:

- ``plain_kd_loop``: what one writes by hand: a ``DataLoader`` over a ``TensorDataset``, the
  teacher run on every batch, ``alpha * T^2 * KL + (1 - alpha) * CE``.
- ``autokd``: ``Trainer.fit`` with the teacher's outputs already cached (as in a search, where
  every trial after the first reuses them). Reported twice: whole ``fit`` (with per-epoch
  validation and the final test evaluation) and the training loop alone (``_epoch``).
- ``bare_step``: the physical limit: the student's forward, CE, backward and optimiser step on
  pre-made batch tensors, nothing else.
- ``cached_kd_step``: the same with the KD loss on pre-made cached teacher logits: the ceiling
  of any KD trainer, so the gap between it and ``bare_step`` is the price of the loss itself.

All four use one thread, the same initial weights and the same optimiser; each is repeated
round-robin and the median kept. Targets: autokd >= 3x the plain loop, >= 0.85x the bare step.
Results come twice: by wall clock, and by this process's CPU time, which on a shared machine
leaves out the time other processes held the core (the load average is recorded too).

Usage: ``python benchmarks/trainer.py [--epochs 5] [--repeats 3] [--out results/benchmarks]``
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["main"]

Seconds = tuple[float, float]  # (wall clock, CPU time of this process)
STUDENT = {"depth": 2, "widths": [8, 16]}
TEACHER = {"depth": 3, "widths": [64, 128, 128]}
T, ALPHA, LR, WD = 4.0, 0.9, 3e-3, 1e-4
TARGETS = {"autokd_fit_vs_plain": 3.0, "autokd_fit_vs_bare": 0.85, "autokd_loop_vs_bare": 0.85}


def _models(data: Any) -> tuple[nn.Module, nn.Module]:
    from autokd.models import build_student

    torch.manual_seed(0)
    teacher = build_student("cnn", TEACHER, data.input_shape, data.num_classes).eval()
    torch.manual_seed(1)
    student = build_student("cnn", STUDENT, data.input_shape, data.num_classes)
    return teacher, student


def _clock() -> Seconds:
    return time.perf_counter(), time.process_time()


def _since(start: Seconds) -> Seconds:
    """Elapsed (wall, CPU) seconds. CPU time leaves out the time other processes held the core,
    which on a shared machine is most of the noise; with one thread it is the unloaded time."""
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """The optimiser autokd's trainer builds (AdamW, foreach), so no loop wins by its choice."""
    return torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD, foreach=True)


def plain_kd_loop(data: Any, teacher: nn.Module, student: nn.Module, epochs: int,
                  batch: int) -> Seconds:
    """Seconds for ``epochs`` of the hand-written loop (teacher forward every batch)."""
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=batch,
                        shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = _optimizer(student)
    student.train()
    start = _clock()
    for _ in range(epochs):
        for xb, yb in loader:
            with torch.no_grad():
                t_logits = teacher(xb)  # (B, K)
            s_logits = student(xb)  # (B, K)
            soft = F.kl_div(F.log_softmax(s_logits / T, -1), F.softmax(t_logits / T, -1),
                            reduction="batchmean") * T * T
            loss = ALPHA * soft + (1 - ALPHA) * F.cross_entropy(s_logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return _since(start)


def bare_step(data: Any, student: nn.Module, epochs: int, batch: int) -> Seconds:
    """Seconds for the student's forward + CE + backward + step on pre-made batches."""
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(epochs):
        order = torch.randperm(len(data.x_train), generator=gen)
        batches += [(data.x_train[i].contiguous(), data.y_train[i].contiguous())
                    for i in order.split(batch)]
    opt = _optimizer(student)
    student.train()
    start = _clock()
    for xb, yb in batches:
        loss = F.cross_entropy(student(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return _since(start)


def cached_kd_step(data: Any, t_logits: torch.Tensor, student: nn.Module, epochs: int,
                   batch: int) -> Seconds:
    """Seconds for ``bare_step`` with the KD loss on pre-made cached teacher logits (N, K)."""
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(epochs):
        order = torch.randperm(len(data.x_train), generator=gen)
        batches += [(data.x_train[i].contiguous(), data.y_train[i].contiguous(),
                     t_logits[i].contiguous()) for i in order.split(batch)]
    opt = _optimizer(student)
    student.train()
    start = _clock()
    for xb, yb, tb in batches:
        s_logits = student(xb)  # (B, K)
        soft = F.kl_div(F.log_softmax(s_logits / T, -1), F.softmax(tb / T, -1),
                        reduction="batchmean") * T * T
        loss = ALPHA * soft + (1 - ALPHA) * F.cross_entropy(s_logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return _since(start)


def autokd_fit(data: Any, teacher: Any, student: nn.Module, epochs: int,
               batch: int) -> tuple[Seconds, Seconds, float]:
    """(fit seconds, training-loop seconds, trainer-reported samples/s) of ``Trainer.fit``."""
    from autokd.config import TrainConfig
    from autokd.distill import KDConfig
    from autokd.train import Trainer

    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=LR, weight_decay=WD, device="cpu")
    trainer = Trainer(student, data, cfg, KDConfig(temperature=T, alpha=ALPHA), teacher)
    loop = [0.0, 0.0]
    epoch_fn = trainer._epoch

    def timed_epoch(*args: Any) -> float:
        start = _clock()
        out = epoch_fn(*args)
        wall, cpu = _since(start)
        loop[0], loop[1] = loop[0] + wall, loop[1] + cpu
        return out

    trainer._epoch = timed_epoch  # type: ignore[method-assign]
    start = _clock()
    result = trainer.fit()
    return _since(start), (loop[0], loop[1]), result.samples_per_second


def _interleaved(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[Any]]:
    """Each method ``repeats`` times, round-robin, so a change in machine load hits all alike."""
    for fn in runs.values():
        fn()  # warm-up: first-call imports and allocator growth are not throughput
    out: dict[str, list[Any]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            out[name].append(fn())
    return out


def _cached_teacher(data: Any, teacher: nn.Module, folder: Path) -> Any:
    from autokd.teachers import load_teacher, save_checkpoint

    path = save_checkpoint(teacher, folder / "teacher.pt")
    cached = load_teacher(path, data=data)
    for split in ("train", "val", "test"):
        cached.outputs(data, split)  # the cache a search fills once
    return cached


def measure(epochs: int, repeats: int, batch: int) -> dict[str, Any]:
    from autokd.data import load_data

    data = load_data("digits")
    teacher, student0 = _models(data)
    samples = epochs * len(data.x_train)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AUTOKD_CACHE"] = tmp
        cached = _cached_teacher(data, teacher, Path(tmp))
        logits = cached.outputs(data, "train")[0]  # (N, K)
        runs = _interleaved({
            "plain": lambda: plain_kd_loop(data, teacher, copy.deepcopy(student0), epochs, batch),
            "bare": lambda: bare_step(data, copy.deepcopy(student0), epochs, batch),
            "cached_kd": lambda: cached_kd_step(data, logits, copy.deepcopy(student0), epochs,
                                                batch),
            "fit": lambda: autokd_fit(data, cached, copy.deepcopy(student0), epochs, batch),
        }, repeats)
    fits = runs["fit"]
    seconds = {"plain_kd_loop": runs["plain"], "bare_step": runs["bare"],
               "cached_kd_step": runs["cached_kd"], "autokd_fit": [f[0] for f in fits],
               "autokd_train_loop": [f[1] for f in fits]}
    rate = {k: samples / statistics.median(t[0] for t in v) for k, v in seconds.items()}
    rate["autokd_reported"] = statistics.median(f[2] for f in fits)
    cpu = {k: samples / statistics.median(t[1] for t in v) for k, v in seconds.items()}
    return {**_report(rate, data, epochs, repeats, batch), "cpu_time": _ratios(cpu)}


def _ratios(rate: dict[str, float]) -> dict[str, Any]:
    ratios = {
        "autokd_fit_vs_plain": rate["autokd_fit"] / rate["plain_kd_loop"],
        "autokd_fit_vs_bare": rate["autokd_fit"] / rate["bare_step"],
        "autokd_loop_vs_bare": rate["autokd_train_loop"] / rate["bare_step"],
        "autokd_loop_vs_cached_kd": rate["autokd_train_loop"] / rate["cached_kd_step"],
        "cached_kd_vs_bare": rate["cached_kd_step"] / rate["bare_step"],
    }
    return {"samples_per_second": {k: round(v, 1) for k, v in rate.items()},
            **{k: round(v, 3) for k, v in ratios.items()},
            "meets_targets": {k: ratios[k] >= t for k, t in TARGETS.items()}}


def _report(rate: dict[str, float], data: Any, epochs: int, repeats: int,
            batch: int) -> dict[str, Any]:
    return {
        "wall_clock": _ratios(rate),
        "targets": TARGETS,
        "setup": {
            "dataset": "digits", "train_samples": len(data.x_train), "batch_size": batch,
            "epochs": epochs, "repeats": repeats, "threads": torch.get_num_threads(),
            "student": {"family": "cnn", **STUDENT}, "teacher": {"family": "cnn", **TEACHER},
            "torch": torch.__version__, "load_average": [round(x, 2) for x in os.getloadavg()],
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = measure(args.epochs, args.repeats, args.batch_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trainer.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
