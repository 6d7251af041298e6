"""Artifact formats: one writer and one runner per format, registered in ``FORMATS``.

Why a registry: ``--formats``, the export loop, verification and timing all read the formats
from one table, so a new format is one writer plus one runner registered at the end of this
module. A runner puts its artifact behind the ``nn.Module`` call, so every format is verified
and timed by the same code as the PyTorch student (``autokd.cost.measure_latency``).
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autokd.errors import AutokdError, ConfigError, ExportError, TeacherError
from autokd.quant.onnx_int8 import ONNX_OPSET, PAD_ID_KEY, export_float_onnx
from autokd.quant.onnx_int8 import OrtModel as OnnxModule
from autokd.registry import Registry
from autokd.teachers import is_torchscript, load_checkpoint, save_checkpoint

__all__ = ["ARTIFACT_NAMES", "FORMATS", "ONNX_OPSET", "PAD_ID_KEY", "ArtifactFormat",
           "ExportedProgramModule", "OnnxModule",
           "applicable_formats", "artifact_format", "format_names", "parse_formats",
           "quiet_torch_export", "run_artifact", "sha256_file", "sha256_path", "size_of",
           "write_artifacts"]

Writer = Callable[[nn.Module, Path, dict[str, Any], torch.Tensor], None]
Runner = Callable[[Path, int], nn.Module]


@dataclass(frozen=True)
class ArtifactFormat:
    """How one format is written and run.

    Attributes:
        filename: The artifact's file name inside an export folder.
        write: ``write(model, path, meta, example)``; ``meta`` is plain data about the export,
            ``example`` a (2, *input_shape) batch for tracing.
        run: ``run(path, threads)``: the artifact as an eval-mode module returning logits.
        applies: Whether the format can hold a given student (None: every student).
        default: Whether the default export writes it for a student it fits (None: always);
            e.g. INT8 is written by default only for a student trained for it.
        calibrated: The writer also takes ``calibration=`` (training-split samples).
    """

    filename: str
    write: Writer
    run: Runner
    applies: Callable[[nn.Module], bool] | None = None
    default: Callable[[nn.Module], bool] | None = None
    calibrated: bool = False

    def fits(self, model: nn.Module) -> bool:
        return self.applies is None or self.applies(model)

    def by_default(self, model: nn.Module) -> bool:
        return self.fits(model) and (self.default is None or self.default(model))


FORMATS: Registry[ArtifactFormat] = Registry("artifact format")


def format_names() -> tuple[str, ...]:
    """Every registered format in registration order: the default export, in that order."""
    return tuple(FORMATS.in_order())


def parse_formats(formats: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Known format names from ``"pt,onnx"`` or a sequence, deduplicated, in the given order.

    Raises:
        ConfigError: An unknown name, or no name at all.
    """
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = tuple(dict.fromkeys(f.strip().lower() for f in items if f.strip()))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise ConfigError(f"unknown format(s) {', '.join(bad) or '(none)'}; known: "
                          f"{', '.join(format_names())}")
    return out


def applicable_formats(formats: tuple[str, ...] | None, model: nn.Module) -> tuple[str, ...]:
    """The formats to write for ``model``: its defaults (``formats`` None), else ``formats``.

    Raises:
        ExportError: A format named explicitly cannot hold this student.
    """
    if formats is None:
        return tuple(f for f in format_names() if FORMATS.get(f).by_default(model))
    bad = [f for f in formats if not FORMATS.get(f).fits(model)]
    if bad:
        family = getattr(model, "family", type(model).__name__)
        fit = [f for f in format_names() if FORMATS.get(f).fits(model)]
        raise ExportError(f"format(s) {', '.join(bad)} cannot hold a {family} student; "
                          f"known for it: {', '.join(fit)}")
    return formats


@contextlib.contextmanager
def quiet_torch_export() -> Iterator[None]:
    """torch.jit and the TorchScript-based ONNX exporter warn that they are deprecated; a
    traced Hugging Face model logs misleading config chatter (``loss_type=None``)."""
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks in HF models
        if "transformers" in sys.modules:  # an hf student or teacher is in play
            from autokd.models.hf import quiet_transformers

            stack.enter_context(quiet_transformers())
        yield


# -- writers ---------------------------------------------------------------------------------
def _write_pt(model: nn.Module, path: Path, meta: dict[str, Any], example: torch.Tensor) -> None:
    save_checkpoint(model, path, **meta)
    path.chmod(0o644)  # written via a private temp file; the export is meant to be shared


def _write_torchscript(model: nn.Module, path: Path, meta: dict[str, Any],
                       example: torch.Tensor) -> None:
    with quiet_torch_export(), torch.no_grad():
        traced = torch.jit.trace(model, example)  # no data-dependent control flow in students
        traced.save(str(path))


def _write_onnx(model: nn.Module, path: Path, meta: dict[str, Any], example: torch.Tensor) -> None:
    """Legacy (TorchScript-based) exporter: needs no onnxscript, and keeps a dynamic batch."""
    import onnx

    with quiet_torch_export():
        export_float_onnx(model, example, path)
    onnx.checker.check_model(str(path))


def _write_pt2(model: nn.Module, path: Path, meta: dict[str, Any], example: torch.Tensor) -> None:
    """A ``torch.export`` program with a dynamic batch: TorchScript's successor (torch.jit is
    deprecated), loadable without autokd by ``torch.export.load(path).module()``."""
    batch = torch.export.Dim("batch", min=1)
    with quiet_torch_export(), torch.no_grad():
        program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))


def write_artifacts(model: nn.Module, folder: Path, formats: tuple[str, ...],
                    meta: dict[str, Any], example: torch.Tensor,
                    calibration: torch.Tensor | None = None) -> dict[str, Path]:
    """Write each format into ``folder``; an exporter's failure becomes one line.

    ``calibration``: training-split samples for formats that calibrate (``int8`` of a float
    student); ignored by the others.

    Raises:
        ExportError: A writer failed (the exporter's own message, first line).
    """
    out = {}
    for fmt in formats:
        spec = FORMATS.get(fmt)
        path = folder / spec.filename
        try:
            if spec.calibrated:
                spec.write(model, path, meta, example, calibration=calibration)  # type: ignore[call-arg]
            else:
                spec.write(model, path, meta, example)
        except AutokdError:
            raise
        except Exception as exc:  # noqa: BLE001 - exporter failures are the user's answer: one line
            raise ExportError(f"{fmt} export failed: {str(exc).splitlines()[0][:200]}") from None
        out[fmt] = path
    return out


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (artifacts may be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_path(path: str | Path) -> str:
    """sha256 of a file, or of a folder artifact: its files' relative names and hashes."""
    p = Path(path)
    if not p.is_dir():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(f"{f.relative_to(p).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def size_of(path: str | Path) -> int:
    """Bytes of a file, or of every file in a folder artifact."""
    p = Path(path)
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() \
        else p.stat().st_size


# -- runners ---------------------------------------------------------------------------------
def _run_pt(path: Path, threads: int = 1) -> nn.Module:
    """An autokd checkpoint, loaded as weights only; its metadata on ``model.autokd_meta``."""
    try:
        model, payload = load_checkpoint(path)
    except TeacherError as exc:
        reason = "it holds pickled Python objects" if "pickled" in str(exc) else str(exc)
        raise ExportError(f"{path} is not a loadable autokd student checkpoint: {reason}") from None
    model.autokd_meta = payload.get("meta") or {}
    return model.eval()


def _run_torchscript(path: Path, threads: int = 1) -> nn.Module:
    with quiet_torch_export():
        return torch.jit.load(str(path), map_location="cpu").eval()


class ExportedProgramModule(nn.Module):
    """A loaded ``torch.export`` program behind a plain module.

    Why a holder: the program's module refuses ``.eval()`` (it is exported in eval mode), and
    verification and timing call it on every model; the program is kept out of the child
    modules so ``eval()`` never reaches it.
    """

    def __init__(self, program: Any) -> None:
        super().__init__()
        self._run = [program.module()]  # a list: not registered as a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run[0](x)


def _run_pt2(path: Path, threads: int = 1) -> nn.Module:
    with quiet_torch_export():
        return ExportedProgramModule(torch.export.load(str(path))).eval()


def run_artifact(path: Path, fmt: str, threads: int = 1) -> nn.Module:
    """A callable module for any artifact; load failures become one ``ExportError`` line."""
    try:
        return FORMATS.get(fmt).run(path, threads)
    except AutokdError:
        raise
    except Exception as exc:  # noqa: BLE001 - any runtime's load error: one line
        raise ExportError(f"cannot load {path}: {str(exc).splitlines()[0][:200]}") from None


def artifact_format(path: Path) -> str:
    """``onnx``, ``int8`` (``*.int8.onnx``), ``pt2``, ``torchscript`` or ``pt`` (an autokd
    checkpoint), by suffix and content."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "int8" if path.name.lower().endswith(".int8.onnx") and "int8" in FORMATS \
            else "onnx"
    if suffix == ".pt2":
        return "pt2"
    if suffix not in (".pt", ".pth"):
        raise ExportError(f"{path.name}: unknown artifact type; expected a .pt autokd "
                          "checkpoint, a .torchscript.pt, .pt2 or .onnx file")
    return "torchscript" if is_torchscript(path) else "pt"


def _not_hf(model: nn.Module) -> bool:
    """Hugging Face students deploy through their own formats (``hf``, ``hf_onnx``)."""
    return getattr(model, "family", None) != "hf"


# -- the formats, in the order they are written, verified, timed and listed ------------------
FORMATS.register("pt", ArtifactFormat("student.pt", _write_pt, _run_pt))
FORMATS.register("torchscript",
                 ArtifactFormat("student.torchscript.pt", _write_torchscript, _run_torchscript))
FORMATS.register("pt2", ArtifactFormat("student.pt2", _write_pt2, _run_pt2, _not_hf))
FORMATS.register("onnx", ArtifactFormat("student.onnx", _write_onnx, OnnxModule))
ARTIFACT_NAMES = {name: FORMATS.get(name).filename for name in format_names()}
