"""The one rule for naming a device, shared by training, cost measurement and latency tables.

Why one: three resolvers with different rules meant ``--device cuda:1`` trained on one GPU
while latency tables were keyed for another, and an unknown name failed differently in each.
"""

from __future__ import annotations

import torch

from autokd.errors import ConfigError

__all__ = ["resolve_device", "to_device", "uses_channels_last"]


def resolve_device(name: str | torch.device, what: str = "--device") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``, ``cuda`` and ``cuda:N`` as given.

    Args:
        name: The device the user named.
        what: How the error names the setting (``--device``, ``latency device``, ...).

    Raises:
        ConfigError: An unknown name, or CUDA asked for on a machine without it.
    """
    text = str(name)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unknown {what} {text!r}; known: auto, cpu, cuda, cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{what} {text!r} was asked for but no CUDA device is available")
    return device


def uses_channels_last(device: torch.device, sample: torch.Tensor) -> bool:
    """Channels-last (NHWC) for image batches (N, C, H, W) on CUDA: cuDNN's convolutions
    (and bf16 tensor cores) run faster on it; on CPU the default layout is kept."""
    return device.type == "cuda" and sample.ndim == 4


def to_device(t: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """``t`` on ``device`` once, for a whole run: pinned host memory and an asynchronous copy
    when the target is an accelerator (pageable copies are staged and block the host)."""
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    if t.device == device or device.type == "cpu":
        return t.to(device)
    if t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)
