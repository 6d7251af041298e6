"""``--strategy darts``: search the space by gradient, one supernet per trial.

Each DARTS run is one trial of the study:

1. A trial is claimed like any other (``BaseController.next_trial``: exact budget, worker,
   heartbeats; an interrupted run is re-queued and, if it had derived its student, only
   retrained). The recipe, training and regulariser params (everything DARTS does not
   relax) are fixed for the run: the space's first choice / midpoint (``kd="fixed"``, the
   default, so runs at different targets differ only in their target) or sampled by the
   study's own sampler (``kd="sample"``: the outer Optuna loop over KD hyperparameters).
2. A supernet of the space's architecture decisions is trained first-order bilevel (DARTS,
   Liu et al. 2019) under an annealed Gumbel-softmax (FBNet; plain softmax on request):
   weights on the train split, alpha on the validation split; the task loss
   is the recipe's KD loss from cached teacher outputs, and every cost limit (the run's target
   plus ``--max-flops/--max-params/--max-latency-ms``) is a constraint on the expected cost,
   enforced by a multiplier that rises while it is violated (dual ascent), so users set a
   target, not a penalty weight.
3. The architecture is derived (argmax of each exclusive decision; for the nested ones, depth
   and widths, each stage / channel is kept when its probability is at least 1/2, see
   ``Supernet.marginal_choice``; ``derivation="argmax"`` takes the plain argmax), repaired
   greedily if it breaks a limit, checked with a real latency measurement when latency is
   limited, then pinned into the trial's params through ``suggest_*`` (same names and
   distributions as Optuna trials), so ``SearchSpace.from_params(trial.params)`` rebuilds it.
4. ``Objective.evaluate`` retrains the derived student with distillation and records exactly
   the attributes every other trial has, plus the ``darts_*`` and ``predicted_*`` ones.

Collapse guard: weights train alone for a warm-up, and while no cost constraint is active
(every multiplier is 0) the depth alpha is projected so that the probability of skipping
every optional stage stays <= ``skip_cap`` (default 1/2: the task loss alone, which favours
parameter-free skips while the blocks are undertrained, cannot make the collapsed network
the derived one; P-DARTS caps skips for the same reason; a cost target may still ask for the
shallowest network, since then the multiplier is active). The search also stops early once
every decision is nearly certain (mean normalised alpha entropy <= ``entropy_stop``) and the
expected cost meets the limits (DARTS+ stops early for the same reason).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from torch import Tensor, nn

from autokd.config import KDConfig, TrainConfig
from autokd.controllers.base import Budget, ProgressFn, count_done
from autokd.controllers.distributed import in_flight
from autokd.controllers.optuna_search import OptunaController, create_sampler
from autokd.cost import measure_latency
from autokd.data import DataSplits, iterate_batches
from autokd.distill.losses import DistillLoss
from autokd.errors import ConfigError, SpaceError, TrainingError
from autokd.latency_table import CostModel, LatencyTable, TableSettings, get_table
from autokd.models import build_student
from autokd.models.supernet import RELAXABLE, RELAXATIONS, Relaxation, Supernet
from autokd.objective import Objective, SearchSettings
from autokd.space import Param, SearchSpace
from autokd.train import TeacherLike, resolve_device, seed_everything

__all__ = [
    "DEFAULT_TARGETS",
    "DartsOptions",
    "DartsSampler",
    "SearchResult",
    "DartsSearch",
    "DartsController",
    "derive",
    "space_decisions",
    "open_for_search",
    "make_controller",
]

logger = logging.getLogger(__name__)
DEFAULT_TARGETS = (0.05, 0.1, 0.25, 0.5)
TARGET_METRICS = ("auto", "flops", "params", "latency")
_METRIC_KEY = {"flops": "flops", "params": "params", "latency": "latency_ms"}
_LIMITS = {"max_flops": "flops", "max_params": "params", "max_latency_ms": "latency_ms"}
_MAX_REPAIRS = 64


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


@dataclass
class DartsOptions:
    """What ``--strategy darts`` takes (``SearchConfig.strategy_options``).

    Attributes:
        targets: Cost targets as fractions of the teacher's cost, one DARTS run each; further
            runs take geometric midpoints between neighbouring targets; None:
            ``DEFAULT_TARGETS``.
        target_metric: ``flops``, ``params``, ``latency``, or ``auto`` (latency when
            ``--max-latency-ms`` or the latency objective is used, else FLOPs).
        relaxation: ``gumbel`` (Gumbel-softmax with an annealed temperature, FBNet/GDAS; the
            default: its alphas end nearly one-hot, so the derived student costs what the
            expected cost said) or ``softmax`` (DARTS; its alphas stay broad here, and the
            derived student came out 2-10x cheaper than the constrained expected cost).
        epochs: Supernet search epochs per run.
        batch_size: Supernet batch size (None: the run's training batch size).
        warmup: Fraction of the epochs that train weights only.
        alpha_lr: Adam learning rate of the architecture parameters.
        alpha_weight_decay: Their weight decay (DARTS uses 1e-3; 0 here, so that alpha can
            become decisive within a short search).
        multiplier_lr: Dual-ascent step of each constraint multiplier per alpha step.
        tau_start: Gumbel temperature at the start, annealed exponentially to ``tau_end``.
        tau_end: Gumbel temperature at the end (low, so that the mode of alpha, which is what
            is derived, costs about what the constrained expectation costs).
        gumbel_hard: Straight-through one-hot samples (GDAS); only the sampled path runs.
        skip_cap: Cap on ``P(depth = shallowest)``, the probability that every optional stage
            is skipped, while no cost constraint is active (None: no cap).
        entropy_stop: Stop when the mean normalised alpha entropy falls to this (None: never).
        kd: ``fixed`` (recipe and training params from the space's first choice / midpoint)
            or ``sample`` (the study's sampler samples them per run).
        derivation: ``marginal`` (default: keep each stage / channel whose probability is at
            least 1/2, see ``Supernet.marginal_choice``) or ``argmax`` per decision.
        repair: Repair a derived architecture that breaks a limit (greedy, least alpha lost).
        latency_checks: Real measurements (and re-derivations) allowed per run under a
            latency limit.
    """

    targets: list[float] | None = None
    target_metric: str = "auto"
    relaxation: str = "gumbel"
    epochs: int = 16
    batch_size: int | None = None
    warmup: float = 0.25
    alpha_lr: float = 0.2
    alpha_weight_decay: float = 0.0
    multiplier_lr: float = 0.5
    tau_start: float = 5.0
    tau_end: float = 0.1
    gumbel_hard: bool = False
    skip_cap: float | None = 0.5
    entropy_stop: float | None = 0.15
    kd: str = "fixed"
    derivation: str = "marginal"
    repair: bool = True
    latency_checks: int = 3

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> DartsOptions:
        """Build from ``strategy_options``; unknown keys raise with the known ones."""
        optional = {f.name for f in dataclasses.fields(cls) if "None" in str(f.type)}
        # None switches an optional feature off (skip_cap, entropy_stop), else means default
        raw = {k: v for k, v in (raw or {}).items() if v is not None or k in optional}
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"unknown darts option(s) {', '.join(unknown)}; known: "
                              f"{', '.join(known)}")
        if isinstance(raw.get("targets"), str):
            raw["targets"] = parse_targets(raw["targets"])
        return cls(**raw).validate()

    def validate(self) -> DartsOptions:
        if self.targets is not None:
            self.targets = [float(t) for t in self.targets]
            if not self.targets or any(not math.isfinite(t) or t <= 0 for t in self.targets):
                raise ConfigError(f"--targets must be positive fractions, got {self.targets}")
        _one_of("target metric", self.target_metric, TARGET_METRICS)
        _one_of("relaxation", self.relaxation, RELAXATIONS)
        _one_of("darts kd mode", self.kd, ("fixed", "sample"))
        _one_of("derivation", self.derivation, ("marginal", "argmax"))
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"--darts-epochs must be a positive integer, got {self.epochs!r}")
        checks = [("warmup", self.warmup, 0.0, 0.9), ("alpha_lr", self.alpha_lr, 1e-6, 10.0),
                  ("multiplier_lr", self.multiplier_lr, 0.0, 100.0),
                  ("tau_start", self.tau_start, 1e-3, 100.0),
                  ("tau_end", self.tau_end, 1e-3, 100.0)]
        for name, value, low, high in checks:
            if not low <= float(value) <= high:
                raise ConfigError(f"darts option {name} must be in [{low}, {high}], got {value}")
        if self.skip_cap is not None and not 0.0 <= self.skip_cap <= 1.0:
            raise ConfigError(f"darts option skip_cap must be in [0, 1], got {self.skip_cap}")
        return self

    def target_for(self, run: int) -> float:
        """The given targets in order, then geometric midpoints between neighbours, level by
        level, so that more runs fill the gaps of the front instead of repeating a target."""
        sequence = list(self.targets or DEFAULT_TARGETS)
        while len(sequence) <= run:
            points = sorted(set(sequence))
            middles = [math.sqrt(a * b) for a, b in itertools.pairwise(points)]
            if not middles:  # one target: repeat it (other seeds)
                return sequence[run % len(sequence)]
            sequence += middles
        return sequence[run]


def _one_of(what: str, value: str, known: Sequence[str]) -> None:
    if value not in known:
        raise ConfigError(f"unknown {what} {value!r}; known: {', '.join(known)}")


def parse_targets(text: str) -> list[float]:
    """``"0.05,0.1,0.25"`` -> ``[0.05, 0.1, 0.25]`` (one clear error otherwise)."""
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"bad --targets {text!r}: expected fractions like 0.05,0.1,0.25") \
            from None


# ---------------------------------------------------------------------------------------------
# Recording a derived architecture as an ordinary trial
# ---------------------------------------------------------------------------------------------


class DartsSampler(optuna.samplers.BaseSampler):
    """The study's sampler, except that held parameter names take pinned values.

    Why: a DARTS run decides the architecture itself; pinning it and letting the space's own
    ``sample(trial)`` call ``suggest_*`` records the same names and distributions as an
    Optuna trial. Held names never go through relative (multivariate) sampling, whose values
    would win over a pin.
    """

    def __init__(self, base: optuna.samplers.BaseSampler) -> None:
        self.base = base
        self.held: set[str] = set()
        self.pins: dict[str, Any] = {}

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        space = self.base.infer_relative_search_space(study, trial)
        return {k: v for k, v in space.items() if k not in self.held}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        out = self.base.sample_relative(study, trial, search_space)
        return {k: v for k, v in out.items() if k not in self.held}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if param_name in self.pins:
            return self.pins[param_name]
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


def space_decisions(space: SearchSpace) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """The space's relaxable decisions (``{name: options}``) and its fixed architecture values.

    Raises:
        SpaceError: For a family without a supernet or a conditional architecture decision.
    """
    relaxable = RELAXABLE.get(space.family)
    if relaxable is None:
        raise SpaceError(f"--strategy darts has no supernet for family {space.family!r}; "
                         f"known: {', '.join(sorted(RELAXABLE))}")
    decisions, fixed = {}, {}
    for p in space.group("architecture"):
        if p.kind == "fixed":
            fixed[p.name] = p.value
        elif p.name in relaxable and p.kind in ("choice", "int"):
            if p.when:
                raise SpaceError(f"--strategy darts cannot relax the conditional architecture "
                                 f"parameter {p.name!r} ({space.source}); make it unconditional")
            decisions.update(_expand(space, p))
    return decisions, fixed


def _expand(space: SearchSpace, p: Param) -> dict[str, list[Any]]:
    """One decision, or one per stage (``widths_0`` ...) up to the deepest depth."""
    if not p.per_stage:
        return {p.name: p.options()}
    depth = next(q for q in space.params if q.name == p.per_stage)
    return {f"{p.name}_{i}": p.options() for i in range(max(depth.options()))}


def _midpoint(p: Param) -> Any:
    """The value a fixed-recipe run uses: first choice, or the (geometric) middle of a range."""
    if p.kind == "fixed":
        return p.value
    if p.kind == "choice":
        return p.choices[0]
    low, high = float(p.low), float(p.high)
    mid = math.sqrt(low * high) if p.log else (low + high) / 2
    if p.step:
        mid = low + round((mid - low) / p.step) * p.step
    return round(mid) if p.kind == "int" else float(mid)


# ---------------------------------------------------------------------------------------------
# The supernet search
# ---------------------------------------------------------------------------------------------


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
        self.kd = dataclasses.replace(kd, hint_weight=0.0, relation_weight=0.0,
                                      attention_weight=0.0).validate()
        self.train, self.limits, self.options, self.deadline = train, limits, options, deadline
        self.device = resolve_device(train.device)
        self.multipliers = {m: 0.0 for m in limits}
        self.skip_cap_hits = 0
        self.loss_fn = DistillLoss(self.kd, data.num_classes).to(self.device)

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
        loss, _ = self.loss_fn(self.net(xb), yb, tb, progress=progress)
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


# ---------------------------------------------------------------------------------------------
# Derivation
# ---------------------------------------------------------------------------------------------


def _excess(costs: dict[str, float], limits: dict[str, float]) -> float:
    return sum(max(0.0, costs[m] / limit - 1.0) for m, limit in limits.items() if m in costs)


def derive(net: Supernet, cost: CostModel, limits: dict[str, float], repair: bool = True,
           rule: str = "marginal") -> tuple[dict[str, Any], list[str]]:
    """The derived architecture (``rule``), greedily repaired until it meets ``limits``.

    Each repair step changes the one decision whose change lowers the total relative excess
    over the limits at the least loss of log-probability per unit of excess removed.

    Returns:
        The full choice and the changes made (``"widths_1: 48 -> 24"``).
    """
    choice, changes = net.choice(rule), []
    if not repair or not limits:
        return choice, changes
    logp = {n: torch.log_softmax(a.detach().double(), -1).cpu() for n, a in net.alphas.items()}
    for _ in range(_MAX_REPAIRS):
        excess = _excess(cost.of_choice(choice), limits)
        if excess <= 0:
            break
        move = _best_move(net, cost, limits, logp, choice, excess)
        if move is None:
            logger.warning("no architecture in the space meets %s; keeping the cheapest found",
                           limits)
            break
        name, value = move
        changes.append(f"{name}: {choice[name]} -> {value}")
        choice[name] = value
    return choice, changes


def _best_move(net: Supernet, cost: CostModel, limits: dict[str, float],
               logp: dict[str, Tensor], choice: dict[str, Any],
               excess: float) -> tuple[str, Any] | None:
    best, best_score = None, math.inf
    for name, options in net.decisions.items():
        current = logp[name][options.index(choice[name])]
        for j, value in enumerate(options):
            if value == choice[name]:
                continue
            gain = excess - _excess(cost.of_choice({**choice, name: value}), limits)
            if gain <= 1e-12:
                continue
            score = float(current - logp[name][j]) / gain
            if score < best_score:
                best, best_score = (name, value), score
    return best


# ---------------------------------------------------------------------------------------------
# The controller
# ---------------------------------------------------------------------------------------------


class DartsController(OptunaController):
    """One DARTS run (supernet search + retraining of its student) per trial."""

    def __init__(self, study: optuna.Study, objective: Objective, budget: Budget,
                 progress: ProgressFn | None, options: DartsOptions) -> None:
        super().__init__(study, objective, budget, progress)
        objective.strategy = "darts"
        self.options, self.space = options, objective.space
        self.settings: SearchSettings = objective.settings
        if not isinstance(study.sampler, DartsSampler):
            study.sampler = DartsSampler(study.sampler)
        self.sampler: DartsSampler = study.sampler
        self.decisions, self.fixed_arch = space_decisions(self.space)
        self.target_metric = self._target_metric()
        self.sampler.held = self._held_names()
        self._cost: CostModel | None = None

    # -- set-up -------------------------------------------------------------------------------
    def _target_metric(self) -> str:
        metric = self.options.target_metric
        if metric == "auto":
            s = self.settings
            metric = "latency" if s.max_latency_ms is not None or "latency" in s.objectives \
                else "flops"
        if (metric == "latency" or self.settings.max_latency_ms is not None) \
                and not self.settings.cost.latency:
            raise ConfigError("DARTS latency targets and limits need latency measurement; "
                              "drop --no-latency")
        return _METRIC_KEY[metric]

    def _held_names(self) -> set[str]:
        held = set(self.decisions)
        if self.options.kd == "fixed":
            held |= {p.name for p in self.space.params}
        return held

    def cost_model(self, net: Supernet) -> CostModel:
        """Built once per controller: exact FLOPs/params, plus the device's latency table."""
        if self._cost is None:
            table = self._latency_table(net) if self.settings.cost.latency else None
            self._cost = CostModel(net, table)
        return self._cost

    def _latency_table(self, net: Supernet) -> LatencyTable:
        cfg = self.settings.cost
        settings = TableSettings.from_cost(cfg)
        return get_table(net, self.space.name, cfg.device, cfg.threads, settings)

    # -- budget -------------------------------------------------------------------------------
    def _runs_done(self) -> int:
        """Finished runs: a run whose student broke a hard limit still spent a search."""
        infeasible = sum(1 for t in self._darts_trials((TrialState.COMPLETE,))
                         if t.user_attrs.get("infeasible"))
        return count_done(self.study) + infeasible

    def budget_left(self) -> bool:
        if self.budget.seconds is not None:
            return super().budget_left()
        return self._runs_done() < (self.budget.trials or 0)

    def _slot_free(self) -> bool:
        if self.budget.trials is None:
            return True
        return self._runs_done() + len(in_flight(self.study)) < self.budget.trials

    def _darts_trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False, states=states)
                if t.user_attrs.get("strategy") == "darts"]

    # -- runs ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            target = self.options.target_for(len(self._darts_trials()))
            trial = self.next_trial()
            if trial is None:
                break
            self.run_trial(trial, functools.partial(self._one_run, target=target))
            self._after_trial()
            self.check_failures()

    def _one_run(self, trial: optuna.Trial, target: float) -> Any:
        """One DARTS run in a claimed trial; failures before training get a ``fail_reason``."""
        try:
            return self._evaluate(trial, target)
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except Exception as exc:
            if "fail_reason" not in trial.user_attrs:
                trial.set_user_attr("fail_reason", f"darts: {type(exc).__name__}: {exc}"[:300])
            logger.warning("darts run in trial %d failed: %s", trial.number, exc)
            raise
        finally:
            self.sampler.pins = {}

    def _evaluate(self, trial: optuna.Trial, target: float) -> Any:
        trial.set_user_attr("strategy", "darts")
        original = self._retry_of(trial)
        if original is not None:  # re-queued after an interrupt: retrain the same student
            cand = self.space.sample(trial)
            extra = {k: v for k, v in original.user_attrs.items()
                     if k.startswith(("darts_", "predicted_"))}
            return self.objective.evaluate(trial, cand, extra)
        values = self._run_params(trial)
        kd, train = self._recipe(values, trial)
        net = self._supernet(values, trial.number)
        cost = self.cost_model(net)
        limits = self._limits(target, cost, net)
        deadline = self.started + self.budget.seconds if self.budget.seconds else None
        result = DartsSearch(net, cost, self.objective.data, self.objective.teacher, kd, train,
                             limits, self.options, deadline).run()
        choice, repairs, checks = self._derive(net, cost, limits)
        self.sampler.pins.update(net.active(choice))
        cand = self.space.sample(trial)
        self._check_params(trial, cand.spec)
        extra = self._attrs(target, limits, result, net, cost, choice, repairs, checks)
        return self.objective.evaluate(trial, cand, extra)

    def _retry_of(self, trial: optuna.Trial) -> FrozenTrial | None:
        """The interrupted run this trial retries, if that run had derived its student."""
        number = trial.user_attrs.get("retry_of")
        if number is None:
            return None
        original = self.study.get_trials(deepcopy=False)[int(number)]
        if "darts_alpha" not in original.user_attrs:
            return None  # interrupted during its supernet search: search again
        try:
            self.space.from_params(original.params)  # its params name a whole student
        except SpaceError:
            return None
        return original

    def _run_params(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest everything DARTS does not relax (pinned to the midpoint in fixed mode)."""
        values: dict[str, Any] = {}
        for p in self.space.params:
            if p.name in self.decisions or p.per_stage or not p.active(values):
                continue  # relaxed, per-stage on the depth, or conditional on a relaxed value
            if self.options.kd == "fixed":
                self.sampler.pins[p.name] = _midpoint(p)
            values[p.name] = p.suggest(trial)
        return values

    def _recipe(self, values: dict[str, Any], trial: optuna.Trial) -> tuple[KDConfig, TrainConfig]:
        kd_keys = {f.name for f in dataclasses.fields(KDConfig)}
        groups = {p.name: p.group for p in self.space.params}
        kd = KDConfig(**{k: v for k, v in values.items()
                         if groups[k] == "distillation" and k in kd_keys}).validate()
        overrides = {k: v for k, v in values.items() if groups[k] == "training"}
        train = dataclasses.replace(self.settings.train, **overrides)
        train.seed = self.settings.train.seed + trial.number
        if self.options.batch_size is not None:
            train.batch_size = self.options.batch_size
        return kd, train.validate()

    def _supernet(self, values: dict[str, Any], seed: int) -> Supernet:
        arch = {p.name for p in self.space.group("architecture")}
        fixed = {**self.fixed_arch, **{k: v for k, v in values.items() if k in arch}}
        relax = Relaxation(self.options.relaxation, self.options.tau_start,
                           self.options.gumbel_hard, seed=self.settings.train.seed + seed)
        data = self.objective.data
        return Supernet(self.space.family, self.decisions, fixed, data.input_shape,
                        data.num_classes, relax, seed=self.settings.train.seed + seed)

    def _limits(self, target: float, cost: CostModel, net: Supernet) -> dict[str, float]:
        """The run's target (fraction of the teacher's cost) and the user's hard limits."""
        limits = {metric: float(getattr(self.settings, key)) for key, metric in _LIMITS.items()
                  if getattr(self.settings, key) is not None}
        metric = self.target_metric
        reference = self.objective.teacher_profile.get(metric)
        if not reference:
            largest = {n: max(opts) if not isinstance(opts[0], str) else opts[0]
                       for n, opts in net.decisions.items()}
            reference = cost.of_choice(largest)[metric]
            logger.warning("the teacher has no measurable %s; DARTS targets are fractions of "
                           "the largest architecture's (%g)", metric, reference)
        limits[metric] = min(limits.get(metric, math.inf), target * float(reference))
        return limits

    def _derive(self, net: Supernet, cost: CostModel,
                limits: dict[str, float]) -> tuple[dict[str, Any], list[str], list[dict]]:
        """Derive and repair; under a latency limit, check it by real measurement."""
        opts = self.options
        choice, repairs = derive(net, cost, limits, opts.repair, opts.derivation)
        checks: list[dict[str, float]] = []
        if "latency_ms" not in limits or not self.options.repair:
            return choice, repairs, checks
        target = limits["latency_ms"]
        for _ in range(self.options.latency_checks):
            measured = self._measure(net, choice)
            checks.append({"predicted_ms": cost.of_choice(choice)["latency_ms"],
                           "measured_ms": measured, "table_limit_ms": limits["latency_ms"]})
            if measured <= target:
                break
            limits = {**limits, "latency_ms": limits["latency_ms"] * target / measured}
            choice, more = derive(net, cost, limits, True, opts.derivation)
            repairs = repairs + more
        return choice, repairs, checks

    def _measure(self, net: Supernet, choice: dict[str, Any]) -> float:
        cfg = self.settings.cost
        model = build_student(net.family, net.spec_for(choice), net.input_shape, net.num_classes)
        ms, _cv = measure_latency(model, net.input_shape, 1, warmup=cfg.warmup,
                                  repeats=cfg.repeats, threads=cfg.threads, device=cfg.device,
                                  min_block_s=getattr(cfg, "min_block_s", 0.02))
        return ms

    def _check_params(self, trial: optuna.Trial, spec: dict[str, Any]) -> None:
        """The recorded params must rebuild the same student (the contract with reports)."""
        rebuilt = self.space.from_params(trial.params).spec
        if rebuilt != spec:
            raise SpaceError(f"darts params {trial.params} rebuild {rebuilt}, not {spec}")

    def _attrs(self, target: float, limits: dict[str, float], result: SearchResult,
               net: Supernet, cost: CostModel, choice: dict[str, Any], repairs: list[str],
               checks: list[dict]) -> dict[str, Any]:
        predicted = cost.of_choice(choice)
        return {
            "darts_alpha": result.probabilities,
            "darts_choices": {n: list(opts) for n, opts in net.decisions.items()},
            "darts_search_seconds": result.seconds,
            "darts_target": target,
            "darts_target_metric": self.target_metric,
            "darts_limits": limits,
            "darts_expected": result.expected,
            "darts_multipliers": result.multipliers,
            "darts_epochs_run": result.epochs_run,
            "darts_stop_reason": result.stop_reason,
            "darts_relaxation": self.options.relaxation,
            "darts_skip_cap_hits": result.skip_cap_hits,
            "darts_argmax": net.active(result.argmax),
            "darts_repairs": repairs,
            "darts_latency_checks": checks,
            "darts_history": _compact_history(result.history),
            "darts_options": dataclasses.asdict(self.options),
            "predicted_flops": predicted["flops"],
            "predicted_params": predicted["params"],
            "predicted_latency_ms": predicted.get("latency_ms"),
        }


def _compact_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("epoch", "supernet_val_accuracy", "entropy", "expected", "multipliers")
    return [{k: h[k] for k in keep} for h in history]


# ---------------------------------------------------------------------------------------------
# Strategy entry points (see autokd.controllers.STRATEGIES)
# ---------------------------------------------------------------------------------------------


def open_for_search(name: str, url: str, cfg: Any, settings: SearchSettings) -> optuna.Study:
    """Create or resume the study; the study's sampler runs the outer loop (recipe params)."""
    from autokd.study import open_study

    DartsOptions.from_dict(cfg.strategy_options)  # fail on a bad option before any work
    if cfg.pruner != "none":
        raise ConfigError("--strategy darts records one trial per supernet search; Optuna's "
                          "pruners do not apply (keep --pruner none)")
    multi = len(settings.directions) > 1
    sampler = DartsSampler(create_sampler(cfg.sampler, cfg.seed, multi))
    return open_study(name, url, directions=settings.directions, sampler=sampler,
                      pruner=optuna.pruners.NopPruner())


def make_controller(study: optuna.Study, objective: Objective, budget: Budget,
                    progress: ProgressFn | None, cfg: Any) -> DartsController:
    return DartsController(study, objective, budget, progress,
                           DartsOptions.from_dict(cfg.strategy_options))
