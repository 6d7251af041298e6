"""Latency of a forward pass, measured the same way everywhere.

Latency convention: median milliseconds per forward over ``repeats`` timed blocks, each block
long enough (``min_block_s``) that timer resolution does not matter; the coefficient of
variation across blocks says how much to trust it. The glibc allocator is pinned first so the
numbers do not depend on what the process allocated before.

On CUDA each block is timed by a pair of CUDA events recorded on the stream after a
synchronisation (so no earlier work is counted) and read after the end event completes: a
host clock around asynchronous launches measures when work was queued, not when it ran.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from autokd.cost._model import eval_mode, example_input, on_device, sync, torch_threads
from autokd.device import resolve_device
from autokd.errors import ConfigError

__all__ = ["block_timer", "fix_allocator", "measure_latency"]

logger = logging.getLogger("autokd.cost")

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 * 1024**2
_TRIM_THRESHOLD_BYTES = 256 * 1024**2
_MAX_BLOCK_ITERS = 100_000


def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (has ``gnu_get_libc_version``), else None."""
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


@functools.cache
def fix_allocator() -> bool:
    """Pin glibc's malloc thresholds once per process so latency does not depend on history.

    Why: glibc raises its mmap threshold dynamically after large blocks are freed, so the same
    forward pass can be served by ``mmap`` (page faults on every call) or from the heap
    depending on what the process allocated before; trimming adds a second such effect. Fixing
    ``M_MMAP_THRESHOLD`` (32 MiB) and ``M_TRIM_THRESHOLD`` (256 MiB) turns both off.

    Returns:
        True when the thresholds are set, False when the C library is not glibc (or refused).
    """
    libc = _glibc()
    if libc is None:
        logger.debug("not glibc; malloc thresholds left alone")
        return False
    ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) == 1
    ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1
    if not (ok_mmap and ok_trim):
        logger.warning("mallopt refused to pin malloc thresholds; latency may drift")
    return ok_mmap and ok_trim


def _check_latency_args(batch_size: int, warmup: int, repeats: int, min_block_s: float) -> None:
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ConfigError(f"latency batch_size must be an integer >= 1, got {batch_size!r}")
    if not (isinstance(warmup, int) and warmup >= 0):
        raise ConfigError(f"latency warmup must be an integer >= 0, got {warmup!r}")
    if not (isinstance(repeats, int) and repeats >= 1):
        raise ConfigError(f"latency repeats must be an integer >= 1, got {repeats!r}")
    if not (math.isfinite(min_block_s) and min_block_s > 0):
        raise ConfigError(f"latency min_block_s must be > 0, got {min_block_s!r}")


def _time_block(model: nn.Module, x: torch.Tensor, iters: int, device: torch.device) -> float:
    """Seconds per forward, averaged over ``iters`` back-to-back calls."""
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        model(x)
    sync(device)
    return (time.perf_counter() - start) / iters


def _time_block_cuda(model: nn.Module, x: torch.Tensor, iters: int, device: torch.device,
                     event: Callable[..., Any] | None = None) -> float:
    """Seconds per forward from CUDA events around ``iters`` back-to-back calls.

    ``event`` makes the event type replaceable (``torch.cuda.Event`` by default) so the
    logic is testable without a GPU.
    """
    event = event or torch.cuda.Event
    sync(device)  # an empty queue: the start event marks this block's first launch
    start, end = event(enable_timing=True), event(enable_timing=True)
    start.record()
    for _ in range(iters):
        model(x)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / iters  # elapsed_time is in milliseconds


def block_timer(device: torch.device) -> Callable[[nn.Module, torch.Tensor, int, torch.device],
                                                  float]:
    """CUDA events on a GPU, the host's monotonic clock on a CPU."""
    return _time_block_cuda if device.type == "cuda" else _time_block


def _block_iters(
    model: nn.Module, x: torch.Tensor, warmup: int, min_block_s: float, device: torch.device
) -> int:
    """Warm up (at least once) and size a block so it lasts at least ``min_block_s``."""
    fastest = min(_time_block(model, x, 1, device) for _ in range(max(warmup, 1)))
    return max(1, min(_MAX_BLOCK_ITERS, math.ceil(min_block_s / max(fastest, 1e-9))))


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int = 1,
    *,
    warmup: int = 5,
    repeats: int = 7,
    threads: int | None = 1,
    device: str | torch.device = "cpu",
    min_block_s: float = 0.02,
) -> tuple[float, float]:
    """Median wall time of one forward, measured so repeated calls agree.

    Args:
        model: The network; eval mode under ``torch.inference_mode`` while timed, previous
            modes restored. Measured on a copy if it does not live on ``device``.
        input_shape: One sample's shape, without the batch dimension.
        batch_size: Samples per forward.
        warmup: Untimed forwards first (at least one is always run, to size the blocks).
        repeats: Timed blocks; the median is reported.
        threads: torch intra-op threads while timing (previous value restored); None keeps it.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        min_block_s: Each block repeats the forward until it lasts at least this long.

    Returns:
        ``(median milliseconds per forward, coefficient of variation across blocks)``.
    """
    _check_latency_args(batch_size, warmup, repeats, min_block_s)
    fix_allocator()
    dev = resolve_device(device, "cost device")
    net = on_device(model, dev)
    x = example_input(net, input_shape, batch_size, dev)
    with torch_threads(threads), eval_mode(net), torch.inference_mode():
        iters = _block_iters(net, x, warmup, min_block_s, dev)
        timer = block_timer(dev)
        blocks = [timer(net, x, iters, dev) for _ in range(repeats)]
    mean = statistics.fmean(blocks)
    cv = statistics.pstdev(blocks) / mean if mean > 0 else 0.0
    return statistics.median(blocks) * 1e3, cv
