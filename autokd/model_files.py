"""Model files: autokd checkpoints (weights + spec + metadata) and telling TorchScript apart.

Why a module of its own: teachers, trial students, exports and chains all write and read the
same checkpoint format; keeping its I/O here keeps ``autokd.teachers`` about teachers.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autokd._io import atomic_write
from autokd.errors import TeacherError
from autokd.models import build_student
from autokd.quant import is_qat, prepare_qat

__all__ = ["CHECKPOINT_FORMAT", "is_torchscript", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "autokd-model"


def _reason(exc: BaseException) -> str:
    """First line of an error (its type when the message is empty, e.g. ``EOFError()``)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


# -- checkpoints ---------------------------------------------------------------------------
def save_checkpoint(model: nn.Module, path: str | Path, **meta: Any) -> Path:
    """Write weights + architecture spec + metadata; loadable with ``weights_only=True``."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "family": model.family,
        "spec": model.spec,
        "input_shape": list(model.input_shape),
        "num_classes": model.num_classes,
        "quantize": "int8" if is_qat(model) else "none",  # a QAT student has observer buffers
        "state_dict": model.state_dict(),
        "meta": meta,
    }
    path = Path(path)
    _atomic_torch_save(payload, path)
    return path


def load_checkpoint(path: str | Path, trust: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Load an autokd checkpoint (teacher or student) into a model; returns (model, payload)."""
    payload = _torch_load(Path(path), trust)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TeacherError(f"{path} is not an autokd checkpoint")
    try:  # a token student's spec holds its vocab_size, so it rebuilds for token ids
        model = build_student(payload["family"], payload["spec"], tuple(payload["input_shape"]),
                              payload["num_classes"])
        if payload.get("quantize") == "int8":
            prepare_qat(model)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise TeacherError(f"{path} is a damaged autokd checkpoint: {_reason(exc)}") from None
    model.eval()
    return model, payload


def _torch_load(path: Path, trust: bool) -> Any:
    if not path.exists():
        raise TeacherError(f"teacher file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported operand" in str(exc):  # not a pickle at all (e.g. text): no --trust hint
            raise _unreadable(path, pickle.UnpicklingError("unknown pickle opcode")) from None
        if not trust:
            raise TeacherError(f"{path} holds pickled Python objects that could run code; "
                               "refusing to load it without --trust") from None
    except Exception as exc:
        raise _unreadable(path, exc) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: BaseException) -> TeacherError:
    return TeacherError(f"cannot read {path}: truncated, or not a PyTorch checkpoint or "
                        f"TorchScript file ({_reason(exc)})")


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive has a code/ folder; a torch.save zip does not."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.split("/", 1)[-1].startswith("code/") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
