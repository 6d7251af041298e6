"""Unlabelled inputs in the distillation loop: which batches, and the loss they add.

Why a module of its own: unlabelled inputs (``DataSplits.x_unlabeled``, ``--unlabeled``)
reach training only through the teacher's cached outputs, and only through the recipe's terms
that read no labels (``DistillLoss.unlabeled_total``). The trainer pairs each labelled batch
(the whole recipe) with an unlabelled one; an epoch is one pass over the larger of the two
sets, the smaller one cycling, so a small labelled set does not cut a large pool short. The
unlabelled order is fixed by (seed, epoch) alone, so a stopped and resumed run draws what a
straight run drew without any state of its own. A recipe without a teacher term ignores them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from autokd.config import TrainConfig
from autokd.data import DataSplits
from autokd.data.augment import epoch_generator
from autokd.data.schema import UNLABELED
from autokd.device import to_device
from autokd.distill import DistillLoss, KDConfig
from autokd.errors import ConfigError
from autokd.train_taps import TapPlan, Taps

__all__ = ["UnlabeledInputs", "check_unlabeled", "pair_batches"]

logger = logging.getLogger("autokd.train")
_SALT = 0x0A11  # keeps the unlabelled order's draws apart from augmentation's
B = TypeVar("B")


def check_unlabeled(data: DataSplits, kd: KDConfig, cfg: TrainConfig) -> None:
    """Refuse what is not combined (yet): augmented batches next to unlabelled ones, whose
    teacher outputs are those of the clean inputs."""
    if data.x_unlabeled is not None and kd.uses_teacher and cfg.augment != "none":
        raise ConfigError("unlabelled inputs (--unlabeled) are not combined with "
                          "augmentation; use augment none")


@dataclass
class UnlabeledInputs:
    """Unlabelled inputs on the run's device with the teacher's cached outputs for them."""

    x: torch.Tensor  # (N_u, ...)
    logits: torch.Tensor  # (M, N_u, K)
    taps: Taps | None  # cached teacher taps of the recipe's groups; None: the teacher runs
    batch_size: int
    seed: int

    @classmethod
    def prepare(cls, data: DataSplits, teacher: Any, kd: KDConfig, taps: TapPlan,
                cfg: TrainConfig, device: torch.device,
                channels_last: bool) -> UnlabeledInputs | None:
        """The run's unlabelled inputs, or None without them or without a teacher term."""
        if data.x_unlabeled is None:
            return None
        if not kd.uses_teacher or teacher is None:
            logger.info("unlabelled inputs unused: the recipe reads no teacher")
            return None
        logits = to_device(teacher.outputs(data, UNLABELED), device)
        x = to_device(data.x_unlabeled, device, channels_last)
        return cls(x, logits, taps.cached_teacher(device, UNLABELED), cfg.batch_size, cfg.seed)

    def steps(self, n_labelled: int) -> int:
        """Optimiser steps per epoch: one pass over the larger set."""
        return math.ceil(max(n_labelled, len(self.x)) / self.batch_size)

    def pair(self, labelled_epoch: Callable[[], Iterator[B]], n_labelled: int,
             epoch: int) -> Iterator[tuple[B, torch.Tensor]]:
        """Each labelled batch with the indices of an unlabelled batch; ``labelled_epoch()``
        starts a new shuffled pass over the labelled set when it runs out."""
        bs, n_u = self.batch_size, len(self.x)
        steps = self.steps(n_labelled)
        draw = epoch_generator(self.seed + _SALT, epoch)
        order = torch.cat([torch.randperm(n_u, generator=draw)
                           for _ in range(math.ceil(steps * bs / n_u))])  # (>= steps * bs,)
        labelled = labelled_epoch()
        for step in range(steps):
            batch = next(labelled, None)
            if batch is None:  # the labelled set is the smaller one: a new pass over it
                labelled = labelled_epoch()
                batch = next(labelled)
            yield batch, order[step * bs:(step + 1) * bs].to(self.x.device)

    def loss(self, idx: torch.Tensor, student: nn.Module, loss_fn: DistillLoss, taps: TapPlan,
             progress: float, step: int) -> torch.Tensor:
        """The label-free part of the recipe on the unlabelled samples ``idx``."""
        xu, tu = self.x[idx], self.logits[:, idx]
        if not taps:
            return loss_fn.unlabeled_total(student(xu), tu, progress=progress, step=step)
        cached = None if self.taps is None else {g: [t[idx] for t in ts]
                                                 for g, ts in self.taps.items()}
        run = taps.run(xu, cached)
        return loss_fn.unlabeled_total(run.pop("logits"), tu, progress=progress, step=step,
                                       **run)


def pair_batches(unlabeled: UnlabeledInputs | None, labelled_epoch: Callable[[], Iterator[B]],
                 n_labelled: int, epoch: int) -> Iterator[tuple[B, torch.Tensor | None]]:
    """One epoch's steps: labelled batches, each with unlabelled indices (or None)."""
    if unlabeled is None:
        yield from ((b, None) for b in labelled_epoch())
    else:
        yield from unlabeled.pair(labelled_epoch, n_labelled, epoch)
