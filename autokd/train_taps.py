"""Which intermediate activations a training run hooks, and how it reads them per batch.

Why a module of its own: feature-level KD terms read *tap groups* (``features`` of CNN/MLP
students; ``embedding``, ``hidden``, ``attention``, ``values`` of transformers). The run hooks
exactly the union the recipe's terms name (``KDConfig.tap_groups``), on the student and on the
teacher, switches on what a model computes only on demand (``enable_taps``: attention
probabilities) while training, and reads the teacher's from a train-split cache when it fits.

How a model is found to have a group (``autokd.distill.hooks.model_tap_groups``): its
``tap_groups`` attribute (``group -> module paths``), else ``{"features": feature_taps}``; a
teacher object may answer ``tap_groups`` itself (``autokd.teachers.Teacher`` does, from its
first member).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from autokd.data import DataSplits
from autokd.device import to_device
from autokd.distill import KDConfig
from autokd.distill.hooks import TapHooks, model_tap_groups, taps_enabled
from autokd.errors import ConfigError

__all__ = ["TapPlan", "Taps", "split_taps", "teacher_data", "token_mask"]

Taps = dict[str, list[torch.Tensor]]  # tap group -> one tensor per tapped module
Shapes = dict[str, list[tuple[int, ...]]]


def teacher_data(teacher: Any, data: DataSplits) -> DataSplits:
    """The data a teacher reads (``Teacher.view``: every column under --student-features);
    a teacher-like object without ``view`` reads ``data.for_teacher()``."""
    view = getattr(teacher, "view", None)
    return view(data) if callable(view) else data.for_teacher()


def token_mask(data: DataSplits, xb: torch.Tensor) -> torch.Tensor | None:
    """``(B, L)`` True at real tokens for token data (``x != pad_id``), else None."""
    return None if data.tokens is None else xb != data.tokens.pad_id


@torch.no_grad()
def split_taps(module: nn.Module, groups: dict[str, list[str]], x: torch.Tensor, limit: float,
               batch: int = 512) -> Taps | None:
    """``module``'s outputs at every path of ``groups`` over all of ``x``, on the CPU: one
    ``(N, ...)`` tensor per path; None when they would take more than ``limit`` bytes (the
    size of one sample's taps times N, measured on a 1-sample forward first)."""
    was_training = module.training
    module.eval()
    device = next(iter(module.parameters()), torch.empty(0)).device
    try:
        with TapHooks(module, groups, groups, "teacher") as hooks, taps_enabled(module, groups):
            module(x[:1].to(device))
            per_sample = sum(t[0].numel() * t.element_size()
                             for ts in hooks.taps.values() for t in ts)
            if per_sample * len(x) > limit:
                return None
            chunks = []
            for i in range(0, len(x), batch):
                module(x[i:i + batch].to(device))
                chunks.append({g: [t.detach().cpu() for t in ts] for g, ts in hooks.taps.items()})
    finally:
        module.train(was_training)
    return {g: [torch.cat(parts) for parts in zip(*(c[g] for c in chunks), strict=True)]
            for g in groups}


class TapPlan:
    """The tap groups of one run on its student and teacher; empty when the recipe reads none.

    Args:
        kd: The recipe; its terms name the groups.
        student: The student network.
        teacher: The run's teacher (``module``, ``feature_taps``, optional ``tap_groups`` and
            ``tap_outputs``); None means no groups (nothing to compare with).
        data: The data (its ``tokens`` give the padding mask).

    Raises:
        ConfigError: If the recipe needs taps and the teacher is not a network, or student or
            teacher lacks a group (the message names it).
    """

    def __init__(self, kd: KDConfig, student: nn.Module, teacher: Any,
                 data: DataSplits) -> None:
        self.groups: set[str] = kd.tap_groups() if teacher is not None else set()
        self.student, self.teacher, self.data = student, teacher, data
        self.student_groups: dict[str, list[str]] = {}
        self.teacher_groups: dict[str, list[str]] = {}
        if not self.groups:
            return
        if teacher.module is None:
            raise ConfigError("feature, relation and attention losses need a teacher that is an "
                              "nn.Module with feature taps (an autokd checkpoint or module:function)")
        self.student_groups = model_tap_groups(student)
        groups = getattr(teacher, "tap_groups", None)
        self.teacher_groups = dict(groups) if groups is not None else \
            model_tap_groups(teacher.module, teacher.feature_taps)
        for who, have in (("teacher", self.teacher_groups), ("student", self.student_groups)):
            missing = sorted(self.groups - set(have))
            if missing:
                hint = ("; a teacher's taps come from an autokd checkpoint or module:function"
                        if who == "teacher" else "")
                raise ConfigError(
                    f"this KD recipe reads the {who}'s {', '.join(map(repr, missing))} taps, and "
                    f"the {who} has none (its tap groups: {', '.join(sorted(have)) or 'none'})"
                    f"{hint}")

    def __bool__(self) -> bool:
        return bool(self.groups)

    def shapes(self) -> tuple[Shapes, Shapes]:
        """Per-sample shapes of each group, student's and teacher's (2-sample forwards)."""
        return (self._shapes(self.student, self.student_groups, "student", self.data),
                self._shapes(self.teacher.module, self.teacher_groups, "teacher",
                             teacher_data(self.teacher, self.data)))

    def _shapes(self, model: nn.Module, groups: dict[str, list[str]], who: str,
                data: DataSplits) -> Shapes:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        with TapHooks(model, groups, self.groups, who) as hooks, \
                taps_enabled(model, self.groups), torch.no_grad():
            model(data.head("train", 2).to(device))
            shapes = {g: [tuple(t.shape[1:]) for t in ts] for g, ts in hooks.taps.items()}
        model.train(was_training)
        return shapes

    @contextmanager
    def enabled(self) -> Iterator[None]:
        """Student and teacher compute the recipe's groups inside; their fast path after."""
        with ExitStack() as stack:
            if self.groups:
                stack.enter_context(taps_enabled(self.student, self.groups))
                stack.enter_context(taps_enabled(self.teacher.module, self.groups))
            yield

    def cached_teacher(self, device: torch.device, split: str = "train") -> Taps | None:
        """The teacher's taps over a whole split (train, or the unlabelled inputs), on
        ``device``, or None.

        Without augmentation a teacher's taps are a fixed function of each sample, so computing
        them once replaces a teacher forward per batch (3.5x slower KD here). Too large a cache
        (see ``Teacher.tap_outputs``) gives None: the teacher then runs per batch.
        """
        if not self.groups or not hasattr(self.teacher, "tap_outputs"):
            return None
        taps = self.teacher.tap_outputs(self.data, split, self.groups)
        if taps is None:
            return None
        return {g: [to_device(t, device) for t in ts] for g, ts in taps.items()}

    def run(self, xb: torch.Tensor, teacher_taps: Taps | None) -> dict[str, Any]:
        """One batch through the student (hooked) and, without cached ``teacher_taps``, the
        teacher: ``DistillLoss`` keyword arguments plus ``logits`` (the student's)."""
        if teacher_taps is None:
            if teacher_data(self.teacher, self.data) is not self.data:
                raise ConfigError("the teacher reads other columns than the student "
                                  "(--student-features), so its taps must be cached: raise "
                                  "AUTOKD_FEATURE_CACHE_MB")
            teacher = self.teacher.module
            with TapHooks(teacher, self.teacher_groups, self.groups, "teacher") as hooks, \
                    torch.no_grad():
                teacher(xb)
                teacher_taps = hooks.taps
        with TapHooks(self.student, self.student_groups, self.groups, "student") as hooks:
            logits = self.student(xb)
            student_taps = hooks.taps
        return {"logits": logits, "student_taps": student_taps, "teacher_taps": teacher_taps,
                "mask": token_mask(self.data, xb)}
