"""Data-free distillation: synthesise a training split from the teacher alone (DeepInversion).

Why: sometimes the teacher can be shipped but its training data cannot (privacy, licence, size).
DeepInversion (Yin et al., CVPR 2020) recovers inputs from what a network already stores: each
batch-norm layer keeps the running mean and variance of its inputs over the training data, so
noise optimised until a batch reproduces those statistics at every BN layer, while the teacher
classifies it as a chosen class and a smoothness prior keeps it natural, looks to the teacher
like its training data. The student is then distilled on these inputs only; validation and
test stay the real splits, used for selection and reporting, never for synthesis.

How it is kept cheap and reproducible: inputs are optimised in batches (Adam on the inputs, the
teacher frozen in eval mode), in the normalised space the teacher sees; targets are class-
balanced within each batch; everything is seeded, and the result is cached on disk under
``cache_dir()/datafree`` keyed by the new split hash, which covers the real split, the teacher,
``n``, the seed and the synthesis settings, so a resumed search or a worker reads the same
inputs instead of recomputing them.

Settings: ``AUTOKD_DATAFREE_STEPS`` (default 100) Adam steps per batch of 256; everything else is
fixed here (``Synthesis``). Measured on one thread: 1167 digits inputs in 19-30 CPU-seconds,
3250 MNIST-1D inputs in 54-60 (``benchmarks/data_free.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pickle
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autokd._io import atomic_write, cache_dir
from autokd.config import DataConfig
from autokd.data import DataSplits
from autokd.errors import ConfigError, DataError, TeacherError
from autokd.progress import ProgressMeter
from autokd.teachers import Teacher

__all__ = ["DEFAULT_STEPS", "MAX_SAMPLES", "Synthesis", "apply_data_free", "bn_layers", "settings",
           "synthesize"]

logger = logging.getLogger(__name__)

DEFAULT_STEPS = 100
MAX_SAMPLES = 1_000_000
_REQUIREMENT = ("--data-free needs a PyTorch teacher with BatchNorm layers (running statistics), "
                "loaded as an autokd checkpoint or module:function")


@dataclass(frozen=True)
class Synthesis:
    """How inputs are synthesised; all of it is part of the synthetic split's hash.

    Weights follow DeepInversion's CIFAR settings, rescaled to the mean-based priors used here:
    the BN term dominates (it carries the data's statistics), the cross-entropy makes each input
    a clear member of its target class, total variation (images, signals) or an L2 prior
    (tabular, and a small one everywhere) keeps inputs from turning into high-frequency noise.
    """

    steps: int = DEFAULT_STEPS
    batch: int = 256
    lr: float = 0.1
    bn_weight: float = 1.0
    first_bn_weight: float = 2.0  # the first BN sees the input most directly (DeepInversion)
    ce_weight: float = 1.0
    tv_weight: float = 0.5
    l2_weight: float = 0.01


def settings() -> Synthesis:
    """The synthesis settings, with ``AUTOKD_DATAFREE_STEPS`` applied (checked)."""
    text = os.environ.get("AUTOKD_DATAFREE_STEPS")
    if text is None:
        return Synthesis()
    try:
        steps = int(text)
    except ValueError:
        steps = 0
    if not 1 <= steps <= 100_000:
        raise ConfigError(f"AUTOKD_DATAFREE_STEPS must be an integer in 1..100000, got {text!r}")
    return Synthesis(steps=steps)


def bn_layers(teacher: Teacher) -> list[nn.Module]:
    """Every batch-norm layer with running statistics in every member of ``teacher``.

    Raises:
        TeacherError: a member is not a hookable PyTorch network (scikit-learn, TorchScript)
            or has no such layer; the message names the requirement.
    """
    layers: list[nn.Module] = []
    for m in teacher.members:
        if m.module is None:
            raise TeacherError(f"{_REQUIREMENT}; teacher {m.name} is a {m.kind} estimator")
        if isinstance(m.module, torch.jit.ScriptModule):
            raise TeacherError(f"{_REQUIREMENT}; teacher {m.name} is TorchScript, whose layers "
                               "cannot be hooked")
        found = [b for b in m.module.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)
                 and b.running_mean is not None and b.running_var is not None]
        if not found:
            raise TeacherError(f"{_REQUIREMENT}; teacher {m.name} has none")
        layers += found
    return layers


def apply_data_free(data: DataSplits, teacher: Teacher, cfg: DataConfig) -> DataSplits:
    """``data`` itself, or with ``cfg.data_free`` synthetic train inputs (seeded by the data
    seed, so every worker of a search, whatever its own seed, gets the same split)."""
    if cfg.data_free is None:
        return data
    return synthesize(data, teacher, cfg.data_free, cfg.seed)


def synthesize(data: DataSplits, teacher: Teacher, n: int, seed: int,
               cfg: Synthesis | None = None) -> DataSplits:
    """A copy of ``data`` whose train split is ``n`` inputs synthesised from ``teacher``.

    The real train split is never read: only the data's shape, class count, kind and split
    hash are. Labels of the synthetic split are the target classes the inputs were optimised
    for (class-balanced). Cached on disk by the returned ``split_hash``.

    ``cfg`` defaults to :func:`settings` (ablations pass their own, e.g. ``bn_weight=0``).

    Raises:
        ConfigError: ``n`` is out of range or ``AUTOKD_DATAFREE_STEPS`` is malformed.
        DataError: the data is text (token ids cannot be optimised by gradient) or streamed.
        TeacherError: the teacher has no batch-norm statistics to match.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
        raise ConfigError(f"--data-free must be an integer in 1..{MAX_SAMPLES}, got {n!r}")
    if data.kind == "tokens":
        raise DataError("--data-free needs continuous inputs (images, signals, tables); "
                        "text token ids cannot be synthesised by gradient descent")
    if data.streaming:
        raise DataError("--data-free needs data held in memory; raise --memory-budget")
    layers = bn_layers(teacher)
    cfg = cfg or settings()
    digest = _hash(data, teacher, n, seed, cfg)
    path = cache_dir() / "datafree" / f"{digest}.pt"
    x, y, info = _load(path, n, tuple(data.input_shape))
    if x is None:
        start, cpu = time.perf_counter(), time.process_time()
        x, y, info = _run(teacher, layers, data, n, seed, cfg)
        info.update(seconds=round(time.perf_counter() - start, 3),
                    cpu_seconds=round(time.process_time() - cpu, 3))
        atomic_write(path, lambda tmp: torch.save({"x": x, "y": y, "info": info}, tmp))
        logger.info("synthesised %d inputs in %.1f s (cached at %s)", n, info["seconds"], path)
    meta = {**data.meta, "data_free": {**info, "n": n, "seed": seed, "source_split": data.split_hash,
                                       "teacher": teacher.hash, **dataclasses.asdict(cfg)}}
    return dataclasses.replace(data, x_train=x, y_train=y, split_hash=digest, meta=meta)


def _hash(data: DataSplits, teacher: Teacher, n: int, seed: int, cfg: Synthesis) -> str:
    header = {"v": 1, "split": data.split_hash, "teacher": teacher.hash, "n": n, "seed": seed,
              **dataclasses.asdict(cfg)}
    return hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()[:16]


def _load(path: Any, n: int, shape: tuple[int, ...]) -> tuple[Any, Any, dict[str, Any]]:
    """A cached synthetic split, or ``(None, None, {})`` when absent or unusable."""
    if not path.exists():
        return None, None, {}
    try:
        payload = torch.load(path, weights_only=True)
        x, y = payload["x"], payload["y"]
        if tuple(x.shape) == (n, *shape) and tuple(y.shape) == (n,) and torch.isfinite(x).all():
            return x, y, dict(payload.get("info", {}))
        reason = "wrong shape or non-finite values"
    except (OSError, RuntimeError, KeyError, TypeError, AttributeError, EOFError,
            pickle.UnpicklingError) as exc:  # a corrupt cache entry is recomputed, never trusted
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    logger.warning("ignoring unusable data-free cache %s (%s)", path, reason)
    return None, None, {}


@contextmanager
def _frozen(teacher: Teacher) -> Iterator[None]:
    """Teacher in eval mode with no parameter gradients, restored afterwards (it is shared)."""
    modules = [m.module for m in teacher.members]
    saved = [(p, p.requires_grad) for mod in modules for p in mod.parameters()]
    modes = [(mod, mod.training) for mod in modules]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        for mod, _ in modes:
            mod.eval()
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
        for mod, flag in modes:
            mod.train(flag)


def _run(teacher: Teacher, layers: list[nn.Module], data: DataSplits, n: int, seed: int,
         cfg: Synthesis) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Optimise ``n`` inputs batch by batch; returns them on the CPU with their targets."""
    stats: list[torch.Tensor] = []
    first = layers[0]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], _out: Any) -> None:
        h = inputs[0].float()
        dims = [d for d in range(h.ndim) if d != 1]
        mean, var = h.mean(dims), h.var(dims, unbiased=False)
        loss = (torch.linalg.vector_norm(mean - module.running_mean)
                + torch.linalg.vector_norm(var - module.running_var))
        stats.append(loss * (cfg.first_bn_weight if module is first else 1.0))

    device = next(teacher.members[0].module.parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    xs, ys, hits = [], [], 0
    handles = [b.register_forward_hook(hook) for b in layers]
    try:
        with _frozen(teacher), torch.enable_grad(), \
                ProgressMeter(n, "data-free synthesis", "samples") as meter:
            for start in range(0, n, cfg.batch):
                size = min(cfg.batch, n - start)
                # class-balanced targets in every batch (BN statistics mix all classes) and
                # overall: the classes left over by one batch start the next
                y = ((torch.arange(size) + start) % data.num_classes)[
                    torch.randperm(size, generator=gen)]
                x = torch.randn((size, *data.input_shape), generator=gen)
                x, logits = _optimise(teacher, x.to(device), y.to(device), data.kind, stats, cfg)
                hits += int((logits.argmax(1).cpu() == y).sum())
                xs.append(x.cpu())
                ys.append(y)
                meter.update(size)
    finally:
        for h in handles:
            h.remove()
    return torch.cat(xs), torch.cat(ys), {"target_hit_rate": round(hits / n, 4)}


def _optimise(teacher: Teacher, x: torch.Tensor, y: torch.Tensor, kind: str,
              stats: list[torch.Tensor], cfg: Synthesis) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam on one batch of inputs; returns them and the teacher's final logits."""
    x = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    for _ in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        stats.clear()
        logits = torch.stack([m.module(x).float() for m in teacher.members])  # (M, B, K)
        ce = sum(F.cross_entropy(lg, y) for lg in logits) / len(logits)
        loss = (cfg.ce_weight * ce + cfg.bn_weight * sum(stats)
                + cfg.tv_weight * _smoothness(x, kind) + cfg.l2_weight * x.pow(2).mean())
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        stats.clear()
        final = torch.stack([m.module(x).float() for m in teacher.members]).mean(0)
    stats.clear()
    return x.detach(), final


def _smoothness(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Squared total variation along spatial axes (images, signals); an L2 prior on tables."""
    if kind == "tabular":
        return x.pow(2).mean()
    tv = (x[..., 1:] - x[..., :-1]).pow(2).mean()
    if kind == "image":
        tv = tv + (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    return tv
