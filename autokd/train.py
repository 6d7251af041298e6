"""The distillation loop.

Why it looks like this:
- Teacher outputs are computed once per (teacher, split) and indexed per batch: running the
  teacher every batch made KD 3.5x slower here. Teacher features for hint/relation/attention
  losses are cached the same way when they fit in memory; otherwise the teacher runs per batch.
  Which intermediate activations are hooked is the union of the tap groups the recipe's terms
  read (``KDConfig.tap_groups``): ``features`` for CNN/MLP terms, ``hidden``/``attention``/
  ``values``/``embedding`` for transformer terms. Models that compute a group only on demand
  (attention probabilities) get ``enable_taps`` while training epochs run.
- Each epoch permutes the in-memory data once and takes batches as views (no DataLoader
  per-sample overhead, no per-batch gathering).
- The student kept is the best epoch by the validation metric (``cfg.metric``: accuracy,
  balanced accuracy or macro F1), never the last.
- Progress is reported through callbacks (``on_epoch_end``), so a search can prune without this
  module knowing about Optuna.
- A run can stop after some epochs and continue later exactly where it stopped (``TrainState``):
  the LR and temperature schedules span ``cfg.schedule_epochs``, so training to epoch 3 and
  resuming to epoch 9 gives the same student as training straight to epoch 9.
- A ``quantize: int8`` recipe trains the student fake-quantised (``autokd.quant``): its
  activation ranges freeze for the last quarter of the schedule and the loss adds
  ``qat_weight * ||W - Q(W)||^2``.
- With augmentation (``cfg.augment``) each batch is augmented by ``autokd.replay``'s
  ``BatchAugmenter``, which also hands back the teacher logits of the augmented batch (the
  teacher run online, or an augmentation-replay cache); the clean-data caches are then unused.
- Unlabelled inputs (``--unlabeled``) add a batch per step through the teacher's outputs only
  (``autokd.train_unlabeled``); an epoch then spans the larger of the two sets.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from autokd.config import TrainConfig
from autokd.data import DataSplits
from autokd.device import resolve_device, to_device, uses_channels_last
from autokd.distill import DistillLoss, KDConfig
from autokd.errors import ConfigError, TrainingError
from autokd.evaluation import evaluate
from autokd.quant import FREEZE_AT, freeze_observers, prepare_qat, rounding_penalty
from autokd.replay import BatchAugmenter
from autokd.train_state import RunHistory, TrainState
from autokd.train_taps import TapPlan, Taps
from autokd.train_unlabeled import UnlabeledInputs, check_unlabeled, pair_batches

__all__ = [
    "TeacherLike",
    "TrainResult",
    "TrainState",
    "Trainer",
    "clip_gradients",
    "distill",
    "evaluate",
    "seed_everything",
]

logger = logging.getLogger(__name__)
Callback = Callable[["Trainer", int, dict[str, float]], Any]


class TeacherLike(Protocol):
    """What the trainer needs from a teacher (see ``autokd.teachers.Teacher``; its optional
    ``tap_groups`` and ``tap_outputs(data, split, groups)`` are used when present)."""

    module: nn.Module | None
    feature_taps: list[str]

    def outputs(self, data: DataSplits, split: str) -> torch.Tensor:
        """Cached logits of every member for a split, shape (M, N, K)."""
        ...

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every member on a batch, (M, B, K): augmented batches (online, replay)."""
        ...


@dataclass
class TrainResult:
    """A trained student and how it got there."""

    model: nn.Module
    best_epoch: int
    epochs_run: int
    val: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    samples_per_second: float = 0.0
    state: TrainState | None = None  # where training stopped (``Trainer.keep_state``)

    def summary(self) -> dict[str, float]:
        out = {f"val_{k}": v for k, v in self.val.items()}
        out.update({f"test_{k}": v for k, v in self.test.items()})
        out.update(best_epoch=self.best_epoch, epochs_run=self.epochs_run,
                   train_seconds=self.train_seconds, samples_per_second=self.samples_per_second)
        return out


def seed_everything(seed: int) -> None:
    """Seed torch's global generators; used before building a model so its init is fixed."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@torch.no_grad()
def clip_gradients(params: list[nn.Parameter], max_norm: float) -> None:
    """``nn.utils.clip_grad_norm_`` (same scaling) at a quarter of its per-call cost.

    Why: on a small CNN the stock function's device/dtype grouping cost ~6 % of each step.
    On CPU the norm is read back (free there) so the scaling is skipped when it would be 1.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))  # ()
    if norm.device.type != "cpu":  # no sync on accelerators: scale by min(1, coef) always
        torch._foreach_mul_(grads, (max_norm / (norm + 1e-6)).clamp_(max=1.0))
        return
    value = norm.item()
    if value + 1e-6 > max_norm or not math.isfinite(value):
        torch._foreach_mul_(grads, max_norm / (value + 1e-6))


def _fused_ok(params: list[nn.Parameter]) -> bool:
    """Fused optimisers need floating-point parameters on one CPU or CUDA device."""
    devices = {p.device.type for p in params}
    return bool(params) and len(devices) == 1 and devices <= {"cpu", "cuda"} \
        and all(p.is_floating_point() for p in params)


class Trainer:
    """Distil one student from a (possibly absent) teacher on in-memory data."""

    def __init__(self, student: nn.Module, data: DataSplits, cfg: TrainConfig | None = None,
                 kd: KDConfig | None = None, teacher: TeacherLike | None = None) -> None:
        self.cfg = (cfg or TrainConfig()).validate()
        self.kd = (kd or KDConfig()).validate()
        self.data, self.teacher = data, teacher
        if self.kd.uses_teacher and teacher is None:
            raise ConfigError("this distillation recipe needs a teacher; pass one or use --scratch")
        self.device = resolve_device(self.cfg.device)
        self.channels_last = uses_channels_last(self.device, data.x_train)
        check_unlabeled(data, self.kd, self.cfg)
        self.qat = self.kd.quantize == "int8"
        student = prepare_qat(student) if self.qat else student
        self.student = student.to(self.device, memory_format=self._memory_format)
        self.callbacks: dict[str, list[Callback]] = {"on_epoch_end": [], "on_train_end": []}
        self.taps = TapPlan(self.kd, self.student, teacher, data)  # hooked activations
        self.loss_fn = self._build_loss().to(self.device)
        # augmentation and the teacher logits of each augmented batch (online or replayed)
        self.augment = BatchAugmenter(self.cfg, data, teacher, self.kd.uses_teacher, self.device)
        self.stop_requested = False
        self.global_step = 0  # optimiser steps taken (KD terms may read it)
        self.keep_state = False  # fit() leaves ``self.state`` to continue from later
        self.state: TrainState | None = None
        self._resume: TrainState | None = None
        self._live: tuple[Any, ...] | None = None  # the running fit's (track, opt, ...)
        self._unl: UnlabeledInputs | None = None  # set by fit(), with the teacher's outputs
        self._epoch_samples = 0

    def resume(self, state: TrainState) -> None:
        """Continue ``state`` on the next ``fit()`` (up to ``cfg.epochs``, on its schedule)."""
        self._resume = state

    def add_callback(self, event: str, fn: Callback) -> None:
        """Register ``fn(trainer, epoch, metrics)``; raising in it (e.g. a prune) stops training."""
        if event not in self.callbacks:
            raise ConfigError(f"unknown trainer event {event!r}; known: {', '.join(self.callbacks)}")
        self.callbacks[event].append(fn)

    # -- set-up ---------------------------------------------------------------------------
    @property
    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.preserve_format

    def _build_loss(self) -> DistillLoss:
        if not self.taps:
            return DistillLoss(self.kd, self.data.num_classes)
        self.teacher.module.to(self.device)  # run on the fly next to the student (CUDA too)
        s_shapes, t_shapes = self.taps.shapes()
        return DistillLoss(self.kd, self.data.num_classes, student_tap_shapes=s_shapes,
                           teacher_tap_shapes=t_shapes)

    def _teacher_logits(self, split: str) -> torch.Tensor | None:
        """Cached teacher logits; given a teacher, evaluation reports the KD loss even for a
        scratch recipe, so KD and scratch students are compared on the same measure."""
        if self.teacher is None:
            return None
        return self.teacher.outputs(self.data, split)

    def _optimizer(self, steps: int) -> tuple[torch.optim.Optimizer, Any]:
        params = list(self.student.parameters()) + list(self.loss_fn.parameters())
        cfg = self.cfg
        # fused: the whole update is one kernel per step; on a small CPU student it took the
        # optimiser from ~0.24 to ~0.13 ms of a ~1.3 ms step (foreach where fused is missing)
        impl = {"fused": True} if _fused_ok(params) else {"foreach": True}
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay,
                                  nesterov=True, **impl)
        else:
            opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **impl)
        if cfg.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        return opt, sched

    # -- training -------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train to epoch ``cfg.epochs`` (from where ``resume`` left off), keep the
        best-validation weights, evaluate val and test.

        ``cfg.threads`` pins torch's CPU threads for this run only: small students gain nothing
        from more threads, and on a busy machine a second spinning thread made steps ~4x slower.
        """
        previous = torch.get_num_threads()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        try:
            return self._fit()
        finally:
            torch.set_num_threads(previous)

    def _fit(self) -> TrainResult:
        cfg, data = self.cfg, self.data
        horizon = cfg.schedule_epochs or cfg.epochs
        seed_everything(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        n_train = len(data.y_train)
        # in-memory validation data moves to the device once for the whole run (pinned, async)
        x_val = data.x_val
        if isinstance(x_val, torch.Tensor):
            x_val = to_device(x_val, self.device, self.channels_last)
        clean = self.kd.uses_teacher and not self.augment.active  # clean logits fit clean data
        t_train = self._teacher_logits("train") if clean else None
        t_train = to_device(t_train, self.device) if t_train is not None else None
        self._t_taps = None if self.augment.active else self.taps.cached_teacher(self.device)
        t_val = self._teacher_logits("val")
        self._unl = UnlabeledInputs.prepare(data, self.teacher, self.kd, self.taps, cfg,
                                            self.device, self.channels_last)
        steps_per_epoch = self._unl.steps(n_train) if self._unl else \
            math.ceil(n_train / cfg.batch_size)
        opt, sched = self._optimizer(horizon * steps_per_epoch)
        track = RunHistory(metric=cfg.metric) if self._resume is None else \
            self._restore(self._resume, opt, sched, gen, horizon)
        self._live = (track, opt, sched, gen, horizon)  # what ``snapshot`` captures
        start, seen = time.perf_counter(), 0
        for epoch in range(track.epoch + 1, cfg.epochs + 1):
            progress = (epoch - 1) / max(1, horizon)
            if self.qat and progress >= FREEZE_AT:
                freeze_observers(self.student)
            with self.taps.enabled():
                train_loss = self._epoch(t_train, gen, opt, sched, progress, epoch)
            seen += self._epoch_samples
            full = evaluate(self.student, x_val, data.y_val, t_val, self.kd.temperature,
                            self.cfg.amp)
            full = {f"val_{k}": v for k, v in full.items()} | {"train_loss": train_loss}
            track.record(epoch, full, self.student)
            metrics = self._epoch_metrics(full)
            for fn in self.callbacks["on_epoch_end"]:
                fn(self, epoch, metrics)
            if self.stop_requested:
                break
        seconds = time.perf_counter() - start
        self._live = None
        if self.keep_state:
            self.state = self._capture(track, opt, sched, gen, horizon)
        return self._finish(track, seconds, seen)

    def _epoch_metrics(self, full: dict[str, Any]) -> dict[str, float]:
        """What an epoch's callbacks get: the scalars they act on, the selection metric
        included (the history keeps every metric, per class too)."""
        keep = ("val_accuracy", f"val_{self.cfg.metric}", "val_nll", "val_kd_loss", "train_loss")
        return {k: full[k] for k in dict.fromkeys(keep) if k in full}

    def _restore(self, state: TrainState, opt: torch.optim.Optimizer, sched: Any,
                 gen: torch.Generator, horizon: int) -> RunHistory:
        """Put the run back where ``state`` stopped (after the fresh set-up, which it replaces)."""
        if state.horizon != horizon:
            raise ConfigError(f"a resumed run keeps its schedule of {state.horizon} epochs, "
                              f"got {horizon}")
        if state.metric != self.cfg.metric:
            raise ConfigError(f"a resumed run keeps its selection metric {state.metric}, "
                              f"got {self.cfg.metric}")
        if state.epoch > self.cfg.epochs:
            raise ConfigError(f"cannot resume a run stopped after epoch {state.epoch} to train "
                              f"only {self.cfg.epochs} epochs")
        self.student.load_state_dict(state.student)
        self.loss_fn.load_state_dict(state.loss_fn)
        opt.load_state_dict(state.optimizer)
        sched.load_state_dict(state.scheduler)
        gen.set_state(state.generator)
        torch.set_rng_state(state.rng)
        if state.cuda_rng and torch.cuda.is_available() \
                and len(state.cuda_rng) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state.cuda_rng)
        self.global_step = state.global_step
        return RunHistory(state.epoch, (state.best[0], state.best[1]), state.best_epoch,
                          state.best_state, list(state.history), self.cfg.metric)

    def snapshot(self) -> TrainState:
        """The state after the epoch just run, from an ``on_epoch_end`` callback (a search
        checkpoints long trials with it); resuming it continues exactly from there."""
        if self._live is None:
            raise TrainingError("snapshot() is only available while fit() runs")
        return self._capture(*self._live)

    def _capture(self, track: RunHistory, opt: torch.optim.Optimizer, sched: Any,
                 gen: torch.Generator, horizon: int) -> TrainState:
        """The state after the last epoch run (before the best weights are put back)."""

        def cpu(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.detach().cpu().clone() for k, v in sd.items()}

        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        return TrainState(track.epoch, horizon, self.global_step, cpu(self.student.state_dict()),
                          cpu(self.loss_fn.state_dict()), opt.state_dict(), sched.state_dict(),
                          gen.get_state(), torch.get_rng_state(), cuda_rng, list(track.best),
                          track.best_epoch, track.best_state, list(track.history),
                          track.metric)

    def _epoch(self, t_logits: torch.Tensor | None, gen: torch.Generator,
               opt: torch.optim.Optimizer, sched: Any, progress: float, epoch: int) -> float:
        self.student.train()
        self.loss_fn.train()
        total, count = 0.0, 0
        use_amp = self.cfg.amp and self.device.type == "cuda"
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else nullcontext()
        params = list(self.student.parameters())  # once: .parameters() walks every module
        self.augment.start_epoch(epoch)
        self._epoch_samples = 0
        steps = pair_batches(self._unl, lambda: self._shuffled_batches(t_logits, gen),
                             len(self.data.y_train), epoch)
        for step, ((xb, yb, tb, fb, ib), unl) in enumerate(steps):
            xb, tb = self.augment(xb, ib, tb)
            if self.channels_last:  # the per-epoch permutation gives NCHW batches back
                xb = xb.contiguous(memory_format=torch.channels_last)
            with amp:
                loss = self._batch_loss(xb, yb, tb, fb, progress, self.global_step)
                if unl is not None and self._unl is not None:  # + label-free terms on them
                    loss = loss + self._unl.loss(unl, self.student, self.loss_fn, self.taps,
                                                 progress, self.global_step)
            self._epoch_samples += len(yb) + (0 if unl is None else len(unl))
            value = loss.item()  # the one host sync per step; doubles as the NaN check
            if not math.isfinite(value):
                raise TrainingError(f"loss became {value} at epoch {epoch} step {step + 1} "
                                    f"(try a lower learning rate)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip > 0:
                clip_gradients(params, self.cfg.grad_clip)
            opt.step()
            sched.step()
            self.global_step += 1
            total += value * len(yb)
            count += len(yb)
        return total / max(1, count)

    def _shuffled_batches(self, t_logits: torch.Tensor | None,
                          gen: torch.Generator) -> Iterator[tuple[Any, ...]]:
        """One shuffled epoch from ``DataSplits.batches`` (in memory: views of the split
        permuted once; streamed: read by loader workers), with the cached teacher logits
        (M, B, K) and teacher taps of each batch picked by its sample indices, and the indices."""
        taps = self._t_taps
        for xb, yb, idx in self.data.batches("train", self.cfg.batch_size, shuffle=True,
                                             generator=gen, device=self.device):
            tb = t_logits[:, idx.to(t_logits.device)] if t_logits is not None else None
            fb = None if taps is None else \
                {g: [t[idx.to(t.device)] for t in ts] for g, ts in taps.items()}
            yield xb, yb, tb, fb, idx

    def _batch_loss(self, xb: torch.Tensor, yb: torch.Tensor, t_batch: torch.Tensor | None,
                    t_taps: Taps | None, progress: float, step: int) -> torch.Tensor:
        """The recipe's loss on one batch; ``t_batch`` is (M, B, K) cached teacher logits and
        ``t_taps`` the cached teacher taps of the batch (None: run the teacher)."""
        if not self.taps:
            loss = self.loss_fn.total(self.student(xb), yb, t_batch, progress=progress, step=step)
        else:
            run = self.taps.run(xb, t_taps)
            loss = self.loss_fn.total(run.pop("logits"), yb, t_batch, progress=progress,
                                      step=step, **run)
        if self.qat and self.kd.qat_weight:
            loss = loss + self.kd.qat_weight * rounding_penalty(self.student)
        return loss

    def _finish(self, track: RunHistory, seconds: float, seen: int) -> TrainResult:
        if track.best_state is not None:
            self.student.load_state_dict(track.best_state)
        # hand back the usual layout: CPU latency and export must not inherit NHWC weights
        self.student.to(memory_format=torch.contiguous_format).eval()
        data, temp = self.data, self.kd.temperature
        # the best epoch's val metrics were measured on exactly these weights: reuse them
        best = track.history[track.best_epoch - 1]
        val = {k[4:]: v for k, v in best.items() if k.startswith("val_")}
        test = evaluate(self.student, data.x_test, data.y_test, self._teacher_logits("test"), temp,
                        self.cfg.amp)
        result = TrainResult(self.student, track.best_epoch, track.epoch, val, test,
                             track.history, seconds, seen / max(seconds, 1e-9), self.state)
        for fn in self.callbacks["on_train_end"]:
            fn(self, track.epoch, result.summary())
        return result


def distill(student: nn.Module, data: DataSplits, teacher: TeacherLike | None = None,
            kd: KDConfig | None = None, cfg: TrainConfig | None = None,
            callbacks: dict[str, list[Callback]] | None = None) -> TrainResult:
    """Convenience wrapper: build a ``Trainer``, attach callbacks, fit."""
    trainer = Trainer(student, data, cfg, kd, teacher)
    for event, fns in (callbacks or {}).items():
        for fn in fns:
            trainer.add_callback(event, fn)
    return trainer.fit()
