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

__all__ = ["iterate_batches", "make_loader", "split_batches"]


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


def split_batches(
    x: Any,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(x, y, index)`` batches over a tensor or a streamed split, in one shared order.

    In memory the split is permuted once and batches are views (cheaper than gathering each
    batch); streamed, the same order's slices are read by the split's loader workers. The
    index is on ``device`` in memory and on the CPU when streamed.
    """
    batch_size = _as_int(batch_size, "batch_size")
    if batch_size < 1:
        raise DataError(f"batch_size must be an integer >= 1, got {batch_size}")
    n = len(y)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)  # (N,)
    dev = torch.device(device) if device is not None else None
    if isinstance(x, torch.Tensor):
        yield from _tensor_batches(x, y, order if shuffle else None, batch_size, dev)
        return
    pin = dev is not None and dev.type == "cuda"
    for i, xb in enumerate(x.batches(order, batch_size, pin_memory=pin)):
        idx = order[i * batch_size:(i + 1) * batch_size]
        if dev is not None:
            xb = xb.to(dev, non_blocking=pin)
        yield xb, y[idx].to(dev) if dev is not None else y[idx], idx


def _tensor_batches(
    x: torch.Tensor, y: torch.Tensor, order: torch.Tensor | None, batch_size: int,
    device: torch.device | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Views of the split permuted by ``order`` (None: in place, no copy)."""
    if device is not None:
        x, y = x.to(device), y.to(device)
    index = torch.arange(len(y), device=y.device) if order is None else order.to(y.device)
    xs, ys = (x, y) if order is None else (x[index], y[index])  # (N, ...), (N,)
    for i in range(0, len(index), batch_size):
        j = i + batch_size
        yield xs[i:j], ys[i:j], index[i:j]
