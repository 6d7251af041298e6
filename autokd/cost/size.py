"""Size of a student: parameters and serialized bytes."""

from __future__ import annotations

import io

import torch
from torch import nn

__all__ = ["count_params", "serialized_bytes"]


def count_params(model: nn.Module) -> int:
    """Number of parameters, frozen ones included, buffers (BN running stats) excluded.

    Why frozen ones count: they ship with the student. Why buffers do not: they are not
    learned weights, and ``serialized_bytes`` already accounts for them. Shared parameters are
    counted once (``nn.Module.parameters`` de-duplicates).
    """
    return sum(p.numel() for p in model.parameters())


def serialized_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what a checkpoint of the student weighs.

    Includes buffers and pickle overhead, so it is always a little more than 4 bytes per
    float32 parameter.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
