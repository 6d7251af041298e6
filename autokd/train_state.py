"""Where a training run stands: the best epoch so far, and a state to continue it from.

Why a module of its own: a multi-fidelity search trains a candidate for a few epochs and, if it
is promising, continues the same run later, possibly in another process; the trainer keeps its
progress in a ``RunHistory`` and hands out a ``TrainState`` that can be saved and resumed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autokd._io import atomic_write
from autokd.errors import TrainingError

__all__ = ["RunHistory", "TrainState"]


@dataclass
class TrainState:
    """A run stopped after ``epoch``: everything needed to continue it exactly.

    Why all of it: continuing must give the same student as training straight through, so the
    optimiser, LR schedule, data-order generator and global RNG travel with the weights (the
    student's and the loss's learned projections), and so do the best epoch so far, its weights
    and the history (the student kept is the best over the whole run, not over the last part).
    """

    epoch: int
    horizon: int  # epochs the schedules span; a resumed run must keep it
    global_step: int
    student: dict[str, torch.Tensor]
    loss_fn: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    generator: torch.Tensor
    rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None
    best: list[float]  # [val metric, val NLL] of the best epoch
    best_epoch: int
    best_state: dict[str, torch.Tensor] | None
    history: list[dict[str, Any]]
    metric: str = "accuracy"  # what picks the best epoch; a resumed run must keep it

    def save(self, path: str | Path) -> Path:
        """Write atomically (a killed worker never leaves half a checkpoint to resume from)."""
        payload = {"format": _STATE_FORMAT,
                   **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}
        return atomic_write(path, lambda tmp: torch.save(payload, tmp))

    @classmethod
    def load(cls, path: str | Path) -> TrainState:
        """Read a saved state with ``weights_only`` (a checkpoint can never run code)."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != _STATE_FORMAT:
            raise TrainingError(f"{path} is not an autokd training state")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in names})


_STATE_FORMAT = "autokd-train-state-1"


@dataclass
class RunHistory:
    """The epochs run so far, the best of them and its weights (what a resumed run carries on).

    The best epoch is the one with the highest ``val_<metric>``, ties broken by lower NLL.
    """

    epoch: int = 0
    best: tuple[float, float] = (-1.0, math.inf)  # (val metric, val NLL)
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    metric: str = "accuracy"  # the validation metric that picks the best epoch

    def record(self, epoch: int, metrics: dict[str, Any], model: nn.Module) -> None:
        self.epoch = epoch
        self.history.append({"epoch": epoch, **metrics})
        key = (metrics[f"val_{self.metric}"], -metrics["val_nll"])
        if key > (self.best[0], -self.best[1]):
            self.best, self.best_epoch = (key[0], -key[1]), epoch
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
