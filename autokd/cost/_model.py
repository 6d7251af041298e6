"""Small helpers every cost measurement shares: shapes, example inputs, modes, threads."""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import operator
from collections.abc import Iterator

import torch
from torch import nn

from autokd.errors import ConfigError

__all__ = ["check_shape", "eval_mode", "example_input", "model_tensors", "on_device", "sync",
           "torch_threads"]

logger = logging.getLogger("autokd.cost")


def check_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Reject shapes that would only fail later inside a trace with an obscure message."""
    try:
        shape = tuple(operator.index(d) for d in input_shape)  # accepts numpy ints, Size
    except TypeError:
        shape = ()
    if not shape or min(shape) <= 0:
        raise ConfigError(
            f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}"
        )
    return shape


def model_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    return itertools.chain(model.parameters(), model.buffers())


def example_input(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    device: torch.device | None = None,
) -> torch.Tensor:
    """A fixed random input on the model's device and in its floating dtype.

    A model with an integer ``vocab_size`` attribute reads token ids: it gets int64 ids in
    ``[0, vocab_size)`` (costs depend on the shape, not on which ids or how much padding).
    """
    ref = next(model_tensors(model), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    if device is None:
        device = ref.device if ref is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    shape = (batch_size, *check_shape(input_shape))
    vocab = getattr(model, "vocab_size", None)
    if isinstance(vocab, int) and not isinstance(vocab, bool):
        return torch.randint(0, vocab, shape, generator=gen).to(device)
    return torch.randn(shape, generator=gen, dtype=dtype).to(device)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the block, then every submodule's own flag back (they may differ)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Pin intra-op threads for the block; None leaves the current setting alone."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """The model itself if it already lives on ``device``, else a moved copy (never mutate)."""
    if all(t.device.type == device.type for t in model_tensors(model)):
        return model
    logger.debug("measuring a copy of the model moved to %s", device)
    return copy.deepcopy(model).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
