"""The supernet search: first-order bilevel DARTS with constraints on the expected cost.

Weights learn on the train split and architecture parameters on the validation split (DARTS,
Liu et al. 2019) under an annealed Gumbel-softmax (FBNet) or plain softmax; every cost limit is
a constraint on the expected cost, enforced by a multiplier that rises while it is violated
(dual ascent), so users set a target, not a penalty weight. The task loss is the recipe's KD
loss from cached teacher outputs, without the terms that need features (the supernet's taps
change shape with its decisions; the retraining of the derived student uses the full recipe).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from autokd.config import TrainConfig
from autokd.data import DataSplits, iterate_batches
from autokd.device import resolve_device
from autokd.distill import DistillLoss, KDConfig
from autokd.errors import ConfigError, TrainingError
from autokd.models.supernet import Supernet
from autokd.nas.cost_model import CostModel
from autokd.nas.options import DartsOptions
from autokd.train import TeacherLike, seed_everything

logger = logging.getLogger(__name__)

__all__ = ["DartsSearch", "SearchResult"]


@dataclass
class SearchResult:
    """What one supernet search found."""

    probabilities: dict[str, list[float]]
    argmax: dict[str, Any]
    expected: dict[str, float]
    multipliers: dict[str, float]
    epochs_run: int
    stop_reason: str
    seconds: float
    skip_cap_hits: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class DartsSearch:
    """First-order bilevel DARTS with cost constraints on the expected cost.

    Args:
        net: The supernet (its relaxation decides softmax or Gumbel).
        cost: Its cost model (exact FLOPs/params; latency when it has a table).
        data: Splits: weights learn on ``train``, alpha on ``val``.
        teacher: Its cached logits give the KD loss (None: the hard loss only).
        kd: The recipe; feature terms are dropped during the search (the supernet's taps change
            shape with its decisions), the retraining uses the full recipe.
        train: Optimiser, learning rate, batch size, seed and device for the weights.
        limits: ``{metric: limit}`` on the expected ``flops`` / ``params`` / ``latency_ms``.
        options: The DARTS options.
        deadline: ``time.monotonic()`` after which the search stops (a time budget).
    """

    def __init__(self, net: Supernet, cost: CostModel, data: DataSplits,
                 teacher: TeacherLike | None, kd: KDConfig, train: TrainConfig,
                 limits: dict[str, float], options: DartsOptions,
                 deadline: float | None = None) -> None:
        missing = sorted(set(limits) - set(cost.metrics))
        if missing:
            raise ConfigError(f"cannot constrain {', '.join(missing)} without a latency table")
        self.net, self.cost, self.data, self.teacher = net, cost, data, teacher
        self.kd = kd.without_features().validate()
        self.train, self.limits, self.options, self.deadline = train, limits, options, deadline
        self.device = resolve_device(train.device)
        self.multipliers = {m: 0.0 for m in limits}
        self.skip_cap_hits = 0
        self.loss_fn = DistillLoss(self.kd, data.num_classes).to(self.device)
        if data.x_unlabeled is not None:
            logger.warning("the DARTS supernet trains on the labelled samples only; the "
                           "unlabelled inputs serve the retrained student")

    # -- set-up -------------------------------------------------------------------------------
    def _teacher_logits(self, split: str) -> Tensor | None:
        if self.teacher is None or not self.kd.uses_teacher:
            return None
        return self.teacher.outputs(self.data, split).to(self.device)  # (M, N, K)

    def _optimizers(self, steps: int) -> tuple[Any, Any, Any]:
        cfg, weights = self.train, self.net.weight_parameters()
        if cfg.optimizer == "sgd":
            opt_w = torch.optim.SGD(weights, lr=cfg.lr, momentum=0.9,
                                    weight_decay=cfg.weight_decay, nesterov=True)
        else:
            opt_w = torch.optim.AdamW(weights, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_w, T_max=max(1, steps))
        opt_a = torch.optim.Adam(self.net.arch_parameters(), lr=self.options.alpha_lr,
                                 betas=(0.5, 0.999), weight_decay=self.options.alpha_weight_decay)
        return opt_w, sched, opt_a

    def _val_batches(self, gen: torch.Generator) -> Iterator[Tensor]:
        while True:
            yield from iterate_batches(len(self.data.x_val), self.train.batch_size,
                                       shuffle=True, generator=gen)

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> SearchResult:
        t0 = time.perf_counter()
        seed_everything(self.train.seed)
        gen = torch.Generator().manual_seed(self.train.seed)
        self.net.to(self.device)
        x, y = self.data.x_train.to(self.device), self.data.y_train.to(self.device)
        xv, yv = self.data.x_val.to(self.device), self.data.y_val.to(self.device)
        t_train, t_val = self._teacher_logits("train"), self._teacher_logits("val")
        epochs = self.options.epochs
        steps = math.ceil(len(x) / self.train.batch_size)
        opt_w, sched, opt_a = self._optimizers(epochs * steps)
        val_batches = self._val_batches(gen)
        warmup = round(self.options.warmup * epochs)
        history, reason, epoch = [], "epochs done", 0
        for epoch in range(1, epochs + 1):
            progress = (epoch - 1) / epochs
            self._anneal(progress)
            for idx in iterate_batches(len(x), self.train.batch_size, shuffle=True, generator=gen):
                self._weight_step(x[idx], y[idx], _rows(t_train, idx), opt_w, sched, progress)
                if epoch > warmup:
                    vdx = next(val_batches)
                    self._alpha_step(xv[vdx], yv[vdx], _rows(t_val, vdx), opt_a, progress)
            history.append(self._epoch_record(epoch, xv, yv))
            reason = self._stop_reason(epoch, warmup, history[-1])
            if reason:
                break
        return self._result(history, reason or "epochs done", epoch, time.perf_counter() - t0)

    def _anneal(self, progress: float) -> None:
        opts = self.options
        self.net.relaxation.tau = opts.tau_start * (opts.tau_end / opts.tau_start) ** progress

    def _loss(self, xb: Tensor, yb: Tensor, tb: Tensor | None, progress: float) -> Tensor:
        loss = self.loss_fn.total(self.net(xb), yb, tb, progress=progress)
        if not torch.isfinite(loss):
            raise TrainingError(f"supernet loss became {loss.item()} (try a lower learning rate)")
        return loss

    def _weight_step(self, xb: Tensor, yb: Tensor, tb: Tensor | None, opt: Any, sched: Any,
                     progress: float) -> None:
        self.net.train()
        with _frozen(self.net.arch_parameters()):
            loss = self._loss(xb, yb, tb, progress)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        if self.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.net.weight_parameters(), self.train.grad_clip)
        opt.step()
        sched.step()

    def _alpha_step(self, xb: Tensor, yb: Tensor, tb: Tensor | None, opt: Any,
                    progress: float) -> None:
        self.net.train()
        alphas = self.net.arch_parameters()
        task = self._loss(xb, yb, tb, progress)
        expected = self.cost.expected(self.net.probabilities())
        penalty = sum((self.multipliers[m] * expected[m] / limit
                       for m, limit in self.limits.items()), torch.zeros((), dtype=torch.float64))
        grads = torch.autograd.grad(task + penalty.to(task.dtype), alphas, allow_unused=True)
        for alpha, grad in zip(alphas, grads):
            alpha.grad = torch.zeros_like(alpha) if grad is None else grad
        opt.step()
        self._update_multipliers(expected)
        if self.options.skip_cap is not None and not any(self.multipliers.values()):
            self.skip_cap_hits += int(self._cap_skips(self.options.skip_cap))

    def _update_multipliers(self, expected: dict[str, Tensor]) -> None:
        """Dual ascent: lambda rises while E[cost] > limit and decays (to 0) below it."""
        eta = self.options.multiplier_lr
        for m, limit in self.limits.items():
            violation = float(expected[m].detach()) / limit - 1.0
            self.multipliers[m] = max(0.0, self.multipliers[m] + eta * violation)

    @torch.no_grad()
    def _cap_skips(self, cap: float) -> bool:
        """Project the depth alpha so that ``P(depth = shallowest) <= cap``.

        The excess moves to the deeper options in proportion to their probabilities, so their
        ranking is kept; returns whether the cap acted.
        """
        if "depth" not in self.net.decisions or len(self.net.decisions["depth"]) < 2:
            return False
        alpha = self.net.alphas["depth"]
        p = alpha.softmax(-1)
        low = self.net.decisions["depth"].index(self.net.depths[0])
        if float(p[low]) <= cap + 1e-9:
            return False
        rest = p.clone()
        rest[low] = 0.0
        if float(rest.sum()) <= 1e-12:  # fully collapsed: spread evenly over deeper options
            rest = torch.ones_like(p)
            rest[low] = 0.0
        p = rest / rest.sum() * (1.0 - cap)
        p[low] = cap
        logp = p.clamp_min(1e-6).log()
        alpha.copy_(logp - logp.mean())
        return True

    # -- bookkeeping --------------------------------------------------------------------------
    @torch.no_grad()
    def _epoch_record(self, epoch: int, xv: Tensor, yv: Tensor) -> dict[str, Any]:
        self.net.eval()
        acc = float((self.net(xv).argmax(1) == yv).float().mean())
        expected = {m: float(v) for m, v in self.cost.expected(self.net.probabilities()).items()}
        return {"epoch": epoch, "supernet_val_accuracy": acc, "entropy": self.entropy(),
                "expected": expected, "multipliers": dict(self.multipliers),
                "derived": self.net.export(self.options.derivation)}

    def entropy(self) -> float:
        """Mean over decisions of H(softmax(alpha)) / log(n options), in [0, 1]."""
        values = []
        for alpha in self.net.alphas.values():
            n = alpha.numel()
            if n > 1:
                p = alpha.detach().softmax(-1)
                values.append(float(-(p * p.clamp_min(1e-12).log()).sum()) / math.log(n))
        return sum(values) / len(values) if values else 0.0

    def _stop_reason(self, epoch: int, warmup: int, record: dict[str, Any]) -> str:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "time budget spent"
        stop = self.options.entropy_stop
        met = all(record["expected"][m] <= limit * 1.01 for m, limit in self.limits.items())
        if stop is not None and epoch >= warmup + 2 and record["entropy"] <= stop and met:
            return f"alpha entropy {record['entropy']:.3f} <= {stop} with the limits met"
        return ""

    def _result(self, history: list[dict[str, Any]], reason: str, epochs: int,
                seconds: float) -> SearchResult:
        probs = {n: [round(float(v), 5) for v in p.detach().cpu()]
                 for n, p in self.net.probabilities().items()}
        expected = history[-1]["expected"] if history else {}
        return SearchResult(probs, self.net.argmax_choice(), expected, dict(self.multipliers),
                            epochs, reason, seconds, self.skip_cap_hits, history)


def _rows(logits: Tensor | None, idx: Tensor) -> Tensor | None:
    return None if logits is None else logits[:, idx.to(logits.device)]  # (M, B, K)


class _frozen:
    """Context: architecture parameters need no gradient during a weight step."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        for p in self.params:
            p.requires_grad_(True)
