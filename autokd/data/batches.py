"""Batches over in-memory tensors: index batches for the training loops, a seeded DataLoader.

Why separate from loading: batching is what training asks for every epoch, long after the data
was loaded, and it has its own failure modes (a float batch size, a mismatched pair).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from autokd.errors import DataError

__all__ = ["iterate_batches", "make_loader"]


def iterate_batches(
    n: int,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield index tensors covering ``range(n)`` once per call, in batches.

    Why not a DataLoader: our datasets fit in memory, so indexing whole tensors with a batch of
    indices (``x[idx]``) avoids the per-sample ``__getitem__`` and collate cost entirely. With
    ``shuffle`` and no ``generator`` the global torch RNG is used.
    """
    n, batch_size = _as_int(n, "n"), _as_int(batch_size, "batch_size")
    if n < 0:
        raise DataError(f"iterate_batches needs n >= 0, got {n}")
    if batch_size < 1:
        raise DataError(f"batch_size must be an integer >= 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    return (order[i : i + batch_size] for i in range(0, stop, batch_size))


def _as_int(value: Any, name: str) -> int:
    """Accept any integer type (``np.int64``, 0-d tensors) but never a silently truncated float."""
    try:
        return operator.index(value)
    except TypeError:
        raise DataError(f"{name} must be an integer, got {value!r}") from None


def make_loader(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool, seed: int
) -> DataLoader:
    """A seeded ``DataLoader`` over ``(x, y)``: for data too large to index whole, or to compare.

    The generator is private to the loader so its order depends on ``seed`` alone, not on
    whatever else consumed the global RNG.
    """
    if len(x) != len(y):
        raise DataError(f"make_loader: x has {len(x)} samples but y has {len(y)}")
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(
        TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=generator
    )
