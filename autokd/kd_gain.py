"""KD gain of the front's students over training from scratch, once or over N seeds.

``--baseline`` trains one scratch twin per Pareto member: same spec, recipe-tuned learning rate
and the trial's seed. Its gain is biased towards KD twice: the member was chosen because its
validation accuracy was high (its seed was lucky), and the learning rate was tuned for the KD
loss. ``--baseline-seeds N`` re-trains both arms on N fresh seeds (none of them a search
trial's seed) and gives scratch its own learning rate, picked from a small grid around the KD
one by the *validation* score of the first seed; the gain is then the mean of the N paired test
differences with a 95 % t interval (``autokd.paired``).

Every finished run is written to the study at once (``BASELINE_ATTR``), so a killed baseline
run resumes where it stopped. Layout of one member's entry::

    {"val_accuracy", "test_accuracy",               # the single twin (--baseline)
     "repeats": {"seeds": [...], "lr": KD lr, "scratch_lr": chosen,
                 "lr_grid": {factor: scores}, "kd": {seed: scores}, "scratch": {seed: scores}}}
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import optuna

from autokd.config import SearchSettings, TrainConfig
from autokd.data import DataSplits
from autokd.distill import KDConfig
from autokd.errors import ConfigError
from autokd.front import pareto_front
from autokd.pipeline import run_distillation
from autokd.record import BASELINE_ATTR, TrialRecord
from autokd.teachers import Teacher

__all__ = ["LR_FACTORS", "check_seeds", "pick_lr", "repeat_seeds", "run_baselines"]

#: scratch's learning rates: the KD learning rate times these
LR_FACTORS = (0.3, 1.0, 3.0)
#: repeat seeds start far above the search's trial seeds (the search's seed + trial number)
SEED_BASE = 1_000_000

Scores = dict[str, Any]

logger = logging.getLogger(__name__)


def check_seeds(n: int) -> int:
    """``n`` if it is a usable seed count: 0 (off) or >= 2 (one seed has no spread)."""
    if isinstance(n, bool) or not isinstance(n, int) or n == 1 or n < 0:
        raise ConfigError(f"--baseline-seeds: expected an integer >= 2 (seeds per arm), got "
                          f"{n!r}")
    return n


def repeat_seeds(trial_seed: int, n: int) -> list[int]:
    """The N seeds both arms are trained with; none equals a search trial's seed."""
    return [SEED_BASE + 1000 * trial_seed + i for i in range(n)]


def run_baselines(study: optuna.Study, data: DataSplits, teacher: Teacher,
                  settings: SearchSettings, seeds: int = 0) -> None:
    """Each Pareto student's scratch twin (same spec, budget and seed), and with ``seeds``
    the N-seed repeats of both arms; what the study already holds is not trained again."""
    baseline = dict(study.user_attrs.get(BASELINE_ATTR, {}))
    for t in pareto_front(study):
        key, rec = str(t.number), TrialRecord.of(t)
        entry = dict(baseline.get(key) or {})

        def save(entry: dict[str, Any] = entry, key: str = key) -> None:
            baseline[key] = entry
            study.set_user_attr(BASELINE_ATTR, baseline)

        train = _train_config(settings, rec)
        kd = KDConfig(**(rec.recipe or {}))
        if "test_accuracy" not in entry:
            entry.update(_scores(data, teacher, rec, kd.scratch(), train, settings))
            save()
        if seeds:
            _repeat(entry, save, data, teacher, rec, kd, train, settings, seeds)


def _repeat(entry: dict[str, Any], save: Callable[[], None], data: DataSplits,
            teacher: Teacher, rec: TrialRecord, kd: KDConfig, train: TrainConfig,
            settings: SearchSettings, n: int) -> None:
    rep = entry.setdefault("repeats", {})
    if kd.assistant != "none":  # re-training would need the trial's assistant chain
        rep["skipped"] = "taught through an assistant; not re-trained"
        save()
        return
    seeds = repeat_seeds(train.seed, n)
    rep.update(seeds=seeds, lr=train.lr, metric=settings.metric)
    for arm in ("lr_grid", "kd", "scratch"):
        rep.setdefault(arm, {})
    first = seeds[0]
    for factor in LR_FACTORS:  # scratch's lr, chosen on validation only
        if f"{factor:g}" not in rep["lr_grid"]:
            cfg = dataclasses.replace(train, seed=first, lr=train.lr * factor)
            rep["lr_grid"][f"{factor:g}"] = _scores(data, teacher, rec, kd.scratch(), cfg,
                                                    settings)
            save()
    factor = pick_lr(rep["lr_grid"], settings.metric)
    rep["scratch_lr"] = train.lr * float(factor)
    rep["scratch"][str(first)] = rep["lr_grid"][factor]
    for seed in seeds:
        for arm, recipe, lr in (("kd", kd, train.lr), ("scratch", kd.scratch(), rep["scratch_lr"])):
            if str(seed) not in rep[arm]:
                cfg = dataclasses.replace(train, seed=seed, lr=lr)
                rep[arm][str(seed)] = _scores(data, teacher, rec, recipe, cfg, settings)
                save()
    save()


def pick_lr(grid: dict[str, Scores], metric: str = "accuracy") -> str:
    """The grid factor whose first-seed scratch run scored best on validation (ties: the KD
    learning rate, then the smaller one); test scores are never read."""
    def key(factor: str) -> tuple[float, bool, float]:
        scores = grid[factor]
        val = scores.get(f"val_{metric}", scores.get("val_accuracy"))
        return (float(val if val is not None else -1.0), float(factor) == 1.0, -float(factor))
    return max(grid, key=key)


def _train_config(settings: SearchSettings, rec: TrialRecord) -> TrainConfig:
    train = TrainConfig(**{**dataclasses.asdict(settings.train), **(rec.train or {}),
                           "seed": rec.get("seed", settings.train.seed)})
    if settings.epochs is not None:
        train.epochs = settings.epochs
    return train


def _scores(data: DataSplits, teacher: Teacher, rec: TrialRecord, kd: KDConfig,
            train: TrainConfig, settings: SearchSettings) -> Scores:
    logger.info("baseline: %s student of trial spec %s, seed %d, lr %.3g",
                "scratch" if not kd.uses_teacher else "KD", rec.spec, train.seed, train.lr)
    cost = dataclasses.replace(settings.cost, latency=False)  # costs are the trial's; not read
    m = run_distillation(data, teacher, rec.family, rec.spec, kd, train, cost).metrics()
    keys = {"val_accuracy", "test_accuracy", f"val_{settings.metric}",
            f"test_{settings.metric}"}
    return {k: m[k] for k in sorted(keys) if m.get(k) is not None}
