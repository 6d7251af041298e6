"""Augmentation-aware teacher outputs: an online teacher, or an augmentation-replay cache.

Why both: with augmentation the cached teacher logits of the clean image are wrong for the
augmented one. The correct fix runs the teacher on every augmented batch (``online``), which
puts a teacher forward back into every step. The replay cache follows Fast Knowledge
Distillation (Shen & Xing, ECCV 2022): for each training sample K augmentation draws are fixed
in advance and the teacher's logits on them computed once; epoch ``e`` replays draw
``(e - 1 + offset_n) mod K`` of sample ``n`` (a per-sample offset, so one epoch mixes draws),
re-augmenting the clean sample from the stored parameters. The teacher never runs in the trial
loop, and every trial of a search (and every worker process, through the disk file) shares one
cache per (teacher, data split, recipe, K, seed). Only logits are replayed: feature, relation
and attention terms need the teacher's maps of the very batch, so they run the teacher online.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from autokd._io import atomic_write, cache_dir
from autokd.config import TrainConfig
from autokd.data import DataSplits
from autokd.data.augment import Augment, blank_value, epoch_generator, get_augment
from autokd.errors import ConfigError

__all__ = ["BatchAugmenter", "ReplayCache", "ReplayTeacher", "clear_memory_cache",
           "replay_cache"]

logger = logging.getLogger(__name__)
_FORMAT = "autokd-replay-1"
_MEMORY: dict[str, ReplayCache] = {}


class ReplayTeacher(Protocol):
    """What the cache needs from a teacher (``autokd.teachers.Teacher`` has both)."""

    hash: str

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every member, shape (M, N, C)."""
        ...


@dataclass
class ReplayCache:
    """K fixed augmentation draws per training sample and the teacher's logits on them."""

    params: torch.Tensor  # (K, N, D) the draws' parameters
    logits: torch.Tensor  # (M, K, N, C) teacher logits on the re-augmented samples
    offset: torch.Tensor  # (N,) long, each sample's first draw

    @property
    def k(self) -> int:
        return self.params.shape[0]

    def draws(self, epoch: int, idx: torch.Tensor) -> torch.Tensor:
        """Which of the K draws samples ``idx`` (B,) replay in ``epoch`` (1-based), (B,)."""
        return (epoch - 1 + self.offset[idx]) % self.k

    def to(self, device: torch.device) -> ReplayCache:
        return ReplayCache(self.params.to(device), self.logits.to(device), self.offset.to(device))

    def batch(self, epoch: int, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters (B, D) and teacher logits (M, B, C) of the samples ``idx`` in ``epoch``."""
        idx = idx.to(self.offset.device)
        k = self.draws(epoch, idx)
        return self.params[k, idx], self.logits[:, k, idx]


def clear_memory_cache() -> None:
    """Forget in-memory caches (tests; the disk copies stay)."""
    _MEMORY.clear()


def _key(teacher: ReplayTeacher, data: DataSplits, aug: Augment, k: int, seed: int) -> str:
    recipe = hashlib.sha256(aug.key().encode()).hexdigest()[:10]
    return f"{teacher.hash}-{data.split_hash}-{aug.name}-{recipe}-k{k}-s{seed}"


def replay_cache(teacher: ReplayTeacher, data: DataSplits, aug: Augment, k: int,
                 seed: int = 0) -> ReplayCache:
    """The replay cache of the train split, computed once (memory, then disk, then teacher).

    The disk file sits next to the teacher-output cache and is written atomically, so parallel
    workers either read a whole file or compute their own identical copy.
    """
    key = _key(teacher, data, aug, k, seed)
    if key not in _MEMORY:
        path = cache_dir() / "replay" / f"{key}.pt"
        cache = _read(path, k, len(data.y_train))
        if cache is None:
            cache = _build(teacher, data, aug, k, seed)
            payload = {"format": _FORMAT, "params": cache.params, "logits": cache.logits,
                       "offset": cache.offset}
            atomic_write(path, lambda tmp: torch.save(payload, tmp))
        _MEMORY[key] = cache
    return _MEMORY[key]


def _read(path: Path, k: int, n: int) -> ReplayCache | None:
    if not path.exists():
        return None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        cache = ReplayCache(raw["params"], raw["logits"], raw["offset"])
        if raw.get("format") != _FORMAT or cache.params.shape[:2] != (k, n) \
                or cache.logits.shape[1:3] != (k, n) or cache.offset.shape != (n,):
            raise ValueError("shapes do not match the data")
        return cache
    # a corrupt or stale entry is rebuilt, never trusted; torch.load on a damaged file raises
    # anything from UnpicklingError to IndexError
    except Exception as exc:  # noqa: BLE001
        logger.warning("ignoring unreadable replay cache %s (%s)", path, exc)
        return None


@torch.no_grad()
def _build(teacher: ReplayTeacher, data: DataSplits, aug: Augment, k: int,
           seed: int) -> ReplayCache:
    """Teacher calls per draw over the train split in chunks, each re-augmented with that
    draw (chunks: a streamed split is never held whole in memory)."""
    n, shape = len(data.y_train), tuple(data.x_train.shape[1:])
    gen = torch.Generator().manual_seed(int(seed))
    params = torch.stack([aug.draw(n, shape, gen) for _ in range(k)])  # (K, N, D)
    offset = torch.randint(0, k, (n,), generator=gen)
    fill = blank_value(data.normalizer)
    chunks: list[torch.Tensor] = []
    for xb, _, idx in data.batches("train", 1024):
        chunks.append(torch.stack([teacher.logits(aug.apply(xb, params[i][idx], fill)).float()
                                   for i in range(k)], 1))  # (M, K, B, C)
    logits = torch.cat(chunks, 2)  # (M, K, N, C)
    logger.info("replay cache: %d draws of %d samples", k, n)
    return ReplayCache(params, logits, offset)


class BatchAugmenter:
    """What the trainer asks once per batch: the augmented batch and its teacher logits.

    Draws of the online mode come from a generator fixed by (seed, epoch) and are indexed by
    sample, so a run stopped and resumed reproduces a straight run without extra state.
    """

    def __init__(self, cfg: TrainConfig, data: DataSplits, teacher: Any,
                 uses_teacher: bool, device: torch.device) -> None:
        self.aug = get_augment(cfg.augment, data.kind)
        self.active = self.aug.active
        self.mode = cfg.aug_teacher if (uses_teacher and teacher is not None) else "none"
        self.seed, self.device, self.teacher = cfg.seed, device, teacher
        self.shape = tuple(data.x_train.shape[1:])  # a streamed split answers shape too
        self.n = len(data.y_train)
        self.fill = blank_value(data.normalizer) if self.active else 0.0
        self.cache: ReplayCache | None = None
        self._epoch, self._table = 0, torch.empty(0)
        if self.active and self.mode == "online":
            _check_online(teacher)
        if self.active and self.mode == "replay":
            shared = replay_cache(teacher, data, self.aug, cfg.replay_k, cfg.replay_seed)
            self.cache = shared.to(device)  # one copy per run on the device, indexed per batch

    def start_epoch(self, epoch: int) -> None:
        """Fix this epoch's draws (online and scratch; replay reads its cache)."""
        self._epoch = epoch
        if self.active and self.cache is None:
            table = self.aug.draw(self.n, self.shape, epoch_generator(self.seed, epoch))
            self._table = table.to(self.device)  # (N, D)

    def __call__(self, xb: torch.Tensor, idx: torch.Tensor,
                 t_batch: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(augmented xb, teacher logits (M, B, C) for it); unchanged when inactive."""
        if not self.active:
            return xb, t_batch
        if self.cache is not None:
            params, logits = self.cache.batch(self._epoch, idx)  # (B, D), (M, B, C)
            return self.aug.apply(xb, params, self.fill), logits
        xa = self.aug.apply(xb, self._table[idx], self.fill)
        if self.mode != "online":
            return xa, None
        with torch.no_grad():
            return xa, self.teacher.logits(xa).to(xb.device)


def _check_online(teacher: Any) -> None:
    members = getattr(teacher, "members", [teacher])
    if any(getattr(m, "module", None) is None for m in members):
        raise ConfigError("aug_teacher: online runs the teacher on every augmented batch and "
                          "needs a PyTorch teacher; this one is not an nn.Module (e.g. "
                          "scikit-learn): use aug_teacher: replay")
