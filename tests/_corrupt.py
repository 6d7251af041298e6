"""Artifact files with one weight tensor changed on disk, for tests of export verification.

Why real files: a parity check only proves something if it has refused a file whose weights
differ from the student's. Each corrupter opens the written artifact with its own runtime's
tools, negates the largest floating-point weight tensor (a sign flip, as a bad writer or disk
would make it) and saves it back, so the file still loads and runs, only wrongly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from autokd.export.formats import quiet_torch_export

__all__ = ["CORRUPTERS", "corrupt", "corrupting"]


def _largest_float(tensors: dict[str, torch.Tensor]) -> str:
    floats = {k: v for k, v in tensors.items() if v.is_floating_point()}
    return max(floats, key=lambda k: (floats[k].numel(), k))


def _pt(path: Path) -> None:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state = payload["state_dict"]
    name = _largest_float(state)
    state[name] = -state[name]
    torch.save(payload, path)


def _torchscript(path: Path) -> None:
    with quiet_torch_export():
        module = torch.jit.load(str(path), map_location="cpu")
    state = module.state_dict()  # views of the module's own tensors
    with torch.no_grad():
        state[_largest_float(state)].neg_()
    module.save(str(path))


def _pt2(path: Path) -> None:
    program = torch.export.load(str(path))
    state = program.state_dict
    with torch.no_grad():
        state[_largest_float(state)].neg_()
    torch.export.save(program, str(path))


def _onnx(path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    floats = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    init = max(floats, key=lambda i: (int(numpy_helper.to_array(i).size), i.name))
    init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), init.name))
    onnx.save(proto, str(path))


CORRUPTERS: dict[str, Callable[[Path], None]] = {
    "pt": _pt, "torchscript": _torchscript, "pt2": _pt2, "onnx": _onnx}


def corrupt(path: Path, fmt: str) -> None:
    """Negate the largest float weight tensor inside the ``fmt`` artifact at ``path``."""
    CORRUPTERS[fmt](path)


def corrupting(spec: Any, fmt: str) -> Any:
    """``spec`` (an ``ArtifactFormat``) whose writer corrupts the file it has just written:
    before verification, the card and its sha256 ever see it."""
    def write(model: Any, path: Path, meta: Any, example: Any, **kw: Any) -> None:
        spec.write(model, path, meta, example, **kw)
        corrupt(path, fmt)

    return dataclasses.replace(spec, write=write)
