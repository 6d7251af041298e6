"""Peak memory of one forward at batch 1: CUDA's own counter, or an estimate on CPU."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from autokd.cost._model import eval_mode, example_input, model_tensors, on_device, sync
from autokd.device import resolve_device

__all__ = ["measure_peak_memory"]


def _storage_key(t: torch.Tensor) -> tuple[int, int] | None:
    try:
        storage = t.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError):  # sparse / meta tensors have no storage
        return None


def _distinct_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views share one)."""
    storages = {key for key in map(_storage_key, tensors) if key is not None}
    return sum(nbytes for _, nbytes in storages)


def _flat_tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _flat_tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _flat_tensors(item)


def _cpu_peak_estimate(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of params + buffers + input + every distinct module output of one forward.

    Outputs are de-duplicated by storage, so views, in-place ops and a container returning
    its last child's output add nothing; the tensors are kept alive until the end so freed
    addresses cannot be reused and hide an allocation.
    """
    kept: list[torch.Tensor] = [x, *model_tensors(model)]

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        kept.extend(_flat_tensors(output))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return _distinct_bytes(kept)


def _cuda_peak(model: nn.Module, x: torch.Tensor, device: torch.device) -> int:
    """Forward's CUDA peak above what was allocated before it, plus the model's own tensors.

    Subtracting the baseline keeps tensors the process holds for other reasons (a teacher,
    cached data) out of the student's number.
    """
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    model(x)
    sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    return peak - before + _distinct_bytes(model_tensors(model))


def measure_peak_memory(
    model: nn.Module, input_shape: tuple[int, ...], device: str | torch.device = "cpu"
) -> int:
    """Peak memory of one eval forward at batch 1, in bytes.

    On CUDA it is measured (``torch.cuda.max_memory_allocated``, see ``_cuda_peak``). On CPU
    there is no allocator counter, so it is an estimate from forward hooks: parameters,
    buffers, the input and every distinct module output, all assumed alive at once. That is
    what an executor without buffer reuse holds, so it is an upper bound for module-level
    activations; intermediates created inside a module's ``forward`` are not seen.
    """
    dev = resolve_device(device, "cost device")
    net = on_device(model, dev)
    x = example_input(net, input_shape, 1, dev)
    with eval_mode(net), torch.inference_mode():
        if dev.type == "cuda":
            return _cuda_peak(net, x, dev)
        return _cpu_peak_estimate(net, x)
