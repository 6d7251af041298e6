"""The MNIST-1D paper's own baseline set-up, as a plain torch loop, for ``mnist1d_sanity.py``.

Why a separate loop: to tell "autokd trains worse" from "autokd measures something else", the
published numbers must first be reproduced the published way, then moved one setting at a time
towards autokd's way. Set-up as in the mnist1d repository (notebooks/models.py, train.py and
the classification notebook that produced the benchmark figure, Greydanus 2020):

- data: the package's ``make_dataset`` with its default arguments (5000 samples, data seed 42,
  first 4000 train / last 1000 test, normalised once over all 5000; no validation split). The
  figure used the frozen ``mnist1d_data.pkl`` download; nothing is downloaded here, so the
  same generator at the same seed stands in for it.
- models: logistic regression (40 -> 10); MLP 40 -> 100 -> 100 -> 10 whose second hidden layer
  is added to the first (``h = h + relu(W2 h)``); CNN of three 1-D convolutions with 25
  channels (kernel 5, then 3 and 3; stride 2, padding 1; lengths 40 -> 19 -> 10 -> 5), ReLU,
  flattened (125 features) into one linear layer: 5210 parameters.
- training: Adam, lr 1e-2, no weight decay, batch 100 taken in order (sample ``step*100 mod
  n`` onwards, no shuffling), steps 0..6000 (6001 updates), test accuracy after the last step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["PaperRecipe", "build", "paper_data", "train_steps"]


@dataclass(frozen=True)
class PaperRecipe:
    """The published optimiser settings (steps are counted as the published loop does)."""

    steps: int = 6000
    batch_size: int = 100
    lr: float = 1e-2
    weight_decay: float = 0.0
    eval_every: int = 250


class PaperMLP(nn.Module):
    """40 -> 100 -> 100 -> 10 with the second hidden layer added to the first (``residual``);
    ``residual=False`` is the plain stack autokd's ``mlp`` family builds."""

    def __init__(self, d_in: int = 40, hidden: int = 100, classes: int = 10,
                 residual: bool = True) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, hidden), nn.Linear(hidden, hidden)
        self.out, self.residual = nn.Linear(hidden, classes), residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x.flatten(1)).relu()
        g = self.fc2(h).relu()
        return self.out(h + g if self.residual else g)


class PaperCNN(nn.Module):
    """Three stride-2 1-D convolutions (25 channels) and a linear layer on the flattened map;
    ``head='gap'`` averages over length instead, as autokd's ``cnn1d`` family does."""

    def __init__(self, length: int = 40, channels: int = 25, classes: int = 10,
                 head: str = "flatten") -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        )
        size = length
        for k in (5, 3, 3):
            size = (size + 2 - k) // 2 + 1
        self.head = head
        self.out = nn.Linear(channels * size if head == "flatten" else channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x.reshape(x.shape[0], 1, -1))  # (B, C, L')
        return self.out(h.flatten(1) if self.head == "flatten" else h.mean(-1))


def build(name: str, seed: int, **options: Any) -> nn.Module:
    """``logistic`` | ``mlp`` | ``cnn``, initialised under ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    if name == "logistic":
        return nn.Sequential(nn.Flatten(), nn.Linear(40, 10))
    return PaperMLP(**options) if name == "mlp" else PaperCNN(**options)


def paper_data(seed: int = 42, num_samples: int = 5000) -> dict[str, torch.Tensor]:
    """The package's default cut: first 80 % train, rest test, as the paper used them.

    ``make_dataset`` reseeds the global ``random`` and numpy generators, so their states are
    put back afterwards (later draws of the caller stay as they were).
    """
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed, args.num_samples = seed, num_samples
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x_train": torch.as_tensor(raw["x"], dtype=torch.float32),
        "y_train": torch.as_tensor(raw["y"], dtype=torch.long),
        "x_test": torch.as_tensor(raw["x_test"], dtype=torch.float32),
        "y_test": torch.as_tensor(raw["y_test"], dtype=torch.long),
    }


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(-1) == y).float().mean())


def train_steps(model: nn.Module, data: dict[str, torch.Tensor],
                recipe: PaperRecipe = PaperRecipe()) -> dict[str, Any]:
    """The published loop: in-order batches, Adam, test accuracy after the last step.

    Also returns the test-accuracy curve every ``eval_every`` steps (the paper's figure plots
    it) and its maximum, so a reader can see how far "final" is from "best on test".
    """
    x, y = data["x_train"], data["y_train"]
    opt = torch.optim.Adam(model.parameters(), recipe.lr, weight_decay=recipe.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    curve: list[tuple[int, float]] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(recipe.steps + 1):
        start = (step * recipe.batch_size) % len(x)
        xb, yb = x[start:start + recipe.batch_size], y[start:start + recipe.batch_size]
        model.train()
        loss = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if recipe.eval_every and step % recipe.eval_every == 0:
            model.eval()
            curve.append((step, _accuracy(model, data["x_test"], data["y_test"])))
    model.eval()
    return {
        "test_accuracy": _accuracy(model, data["x_test"], data["y_test"]),
        "train_accuracy": _accuracy(model, x, y),
        "max_test_accuracy_on_curve": max(a for _, a in curve) if curve else None,
        "curve_every_1000": [(s, round(a, 4)) for s, a in curve if s % 1000 == 0],
        "params": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.perf_counter() - t0, 2),
        "cpu_seconds": round(time.process_time() - c0, 2),
    }
