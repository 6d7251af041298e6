"""The shapes data takes in this layer: what a source returns and what ``load_data`` returns.

Why a module of its own: sources, validation, splitting and batching all speak about the same
kinds, split names and result type; keeping them here lets each of those modules depend on this
one instead of on each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from autokd.errors import DataError

__all__ = ["KINDS", "NDIM", "SPLITS", "UNLABELED", "DataSplits", "RawData", "TokenInfo"]

KINDS = ("image", "signal", "tabular", "tokens")
SPLITS = ("train", "val", "test")
#: The name of the unlabelled inputs (``DataSplits.x_unlabeled``) where a split name is asked
#: for (teacher-output caches); it has no labels, so it is never one of ``SPLITS``.
UNLABELED = "unlabeled"
#: Rank of the feature array of each kind: ``(N, F)``, ``(N, C, L)``, ``(N, C, H, W)``.
NDIM = {"tabular": 2, "signal": 3, "image": 4, "tokens": 2}

#: ``(X, y, kind, meta)`` as a source returns it, before any check. ``meta`` may hold
#: ``class_names``, ``scale`` (multiplied into X before normalising), ``identity`` (dict for the
#: split hash), ``predefined`` ({split: indices}), ``feature_names``, ``encoding`` and
#: ``generated``.
RawData = tuple[np.ndarray, np.ndarray, str, dict]


@dataclass(frozen=True)
class TokenInfo:
    """What a model needs to read token-id data (``kind == "tokens"``, ``x`` int64 ``(N, L)``).

    Why a record on the data: a token student's embedding size and padding come from the
    tokenizer, which only the data knows; builders read it from here (and keep it in their
    spec, so a saved student rebuilds without the data).

    Attributes:
        vocab_size: Number of token ids (embedding rows).
        pad_id: The id that fills sequences to ``max_length``; ``x != pad_id`` is the mask.
        max_length: ``L``, every sequence's length after padding or truncation.
        tokenizer: A short description (``wordpiece:4000`` or the tokenizer file's sha256).
        cls_id: The id the tokenizer puts first (``[CLS]``), None when it adds none.
    """

    vocab_size: int
    pad_id: int
    max_length: int
    tokenizer: str
    cls_id: int | None = None


@dataclass
class DataSplits:
    """Normalised train/val/test tensors plus what is needed to reproduce and describe them.

    Streamed data (larger than the memory budget) holds, in place of each ``x_*`` tensor, an
    ``autokd.data.stream.ImageSplit`` view that reads and normalises rows on demand. Code that
    walks a split goes through :meth:`batches` / :meth:`head`, which work the same either way.

    Two optional parts (``autokd.data.scarce``): ``x_unlabeled`` holds extra inputs without
    labels (normalised like train), used only through a teacher's outputs; and when the
    student sees only some columns (LUPI), ``x_*`` hold the student's columns and
    ``teacher_view`` the same splits with every column. Whatever feeds a teacher asks
    :meth:`for_teacher` for its data, so a teacher never sees the student's narrower view.
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    num_classes: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    split_hash: str
    class_names: list[str]
    normalizer: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    tokens: TokenInfo | None = None  # set for kind "tokens" only
    x_unlabeled: torch.Tensor | None = None  # extra inputs without labels (teacher outputs only)
    teacher_view: DataSplits | None = None  # every column, when the student sees a subset

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x, y)`` of one split; a typo raises instead of silently using train."""
        if which not in SPLITS:
            raise DataError(f"unknown split {which!r}; known: {', '.join(SPLITS)}")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def inputs(self, which: str) -> torch.Tensor:
        """The features of a split or of the unlabelled inputs (``UNLABELED``), no labels."""
        if which == UNLABELED:
            if self.x_unlabeled is None:
                raise DataError("this data has no unlabelled inputs (DataConfig.unlabeled)")
            return self.x_unlabeled
        return self.split(which)[0]

    def for_teacher(self) -> DataSplits:
        """The view a teacher sees: every column (``teacher_view``), else this data itself."""
        return self.teacher_view if self.teacher_view is not None else self

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_on_device"}

    @property
    def streaming(self) -> bool:
        """True when the features stay on disk and are read per batch."""
        return not isinstance(self.x_train, torch.Tensor)

    def batches(
        self,
        which: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(x, y, index)`` batches of one split, ``index`` being the samples' positions in it.

        The order is ``torch.randperm(n, generator=generator)`` (or ``0..n-1``) whether the data
        is in memory or streamed, so the same seed gives the same batches on both paths; the
        index lets cached per-sample values (teacher logits) follow the batch.
        """
        from autokd.data.batches import split_batches
        from autokd.device import to_device

        x, y = self.split(which)
        if device is not None and isinstance(x, torch.Tensor) and torch.device(device) != x.device:
            cache = self.__dict__.setdefault("_on_device", {})  # one copy per device, not epoch
            key = (which, str(device))
            if key not in cache:
                target = torch.device(device)  # pinned host memory, asynchronous copy
                cache[key] = (to_device(x, target), to_device(y, target))
            x, y = cache[key]
        return split_batches(x, y, batch_size, shuffle=shuffle, generator=generator,
                             device=device)

    def chunks(self, which: str, size: int) -> Iterator[torch.Tensor]:
        """The features of a split or of ``UNLABELED`` in order, ``size`` rows at a time."""
        if which != UNLABELED:
            yield from (xb for xb, _, _ in self.batches(which, size))
            return
        x = self.inputs(which)
        yield from (x[i:i + size] for i in range(0, len(x), size))

    def head(self, which: str, n: int) -> torch.Tensor:
        """The first ``n`` samples of a split as a tensor (shape probes, export examples)."""
        return self.split(which)[0][:n]

    def sizes(self) -> dict[str, int]:
        """Samples per split, in ``SPLITS`` order."""
        return {s: int(self.split(s)[1].shape[0]) for s in SPLITS}

    def describe(self) -> dict[str, Any]:
        """A JSON/YAML-safe summary, for reports and for checking a resumed study's data."""
        return {
            "name": self.name,
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "sizes": self.sizes(),
            "split_hash": self.split_hash,
        } | ({"skipped_files": self.meta["skipped_files"]} if "skipped_files" in self.meta
             else {}) | ({"tokens": dataclasses.asdict(self.tokens)} if self.tokens else {}) \
            | {k: self.meta[k] for k in ("labels", "unlabeled", "student_features", "data_free")
               if k in self.meta}

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Invert ``apply_normalizer``: raw (encoded) features ``(x * std + mean) / scale``.

        Why: a scikit-learn teacher was fit by its user on raw features, so it must see them.
        Token ids are never normalised, so they are their own raw form.
        """
        if self.kind == "tokens":
            return x
        mean = torch.as_tensor(self.normalizer["mean"], dtype=torch.float64)
        std = torch.as_tensor(self.normalizer["std"], dtype=torch.float64)
        scale = float(self.normalizer.get("scale", 1.0))
        return ((x.double() * std + mean) / scale).float()
