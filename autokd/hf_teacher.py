"""``--teacher hf:DIR``: a Hugging Face sequence classifier saved with ``save_pretrained``.

Why so careful: a model directory is someone else's files. Nothing is downloaded
(``local_files_only``); weights are read from safetensors, or from a PyTorch file only if it
loads with ``weights_only`` (a pickle that would run code is refused); a model that brings its
own Python code (``auto_map``) loads only with ``--trust``. A directory whose classifier head
would be freshly initialised (a base model, not a fine-tuned classifier) is refused too: its
logits would be noise.

The teacher's directory also serves the rest of the run: it is the tokenizer of ``text:`` data
when no ``--tokenizer`` is given, and the base config of ``hf`` students.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import torch

from autokd.config import DataConfig
from autokd.data import DataSplits
from autokd.errors import TeacherError
from autokd.models.hf import HFClassifier, quiet_transformers, require_transformers
from autokd.space import Param, SearchSpace

__all__ = ["PREFIX", "hf_data_config", "hf_space", "hf_student_spec", "is_hf", "load_hf_teacher",
           "teacher_dir"]

logger = logging.getLogger(__name__)
PREFIX = "hf:"
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def is_hf(source: str) -> bool:
    """Whether a ``--teacher`` value names a Hugging Face directory."""
    return str(source).startswith(PREFIX)


def teacher_dir(sources: list[str] | None) -> str | None:
    """The directory of the first ``hf:`` teacher among ``sources`` (None when there is none)."""
    return next((str(s)[len(PREFIX):] for s in sources or [] if is_hf(s)), None)


# -- what the teacher's directory gives the rest of the run -----------------------------------
def hf_data_config(cfg: DataConfig, sources: list[str] | None) -> DataConfig:
    """``text:`` data with no tokenizer of its own reads with the ``hf:`` teacher's."""
    base = teacher_dir(sources)
    names = {f.name for f in dataclasses.fields(cfg)}
    if (base is None or "tokenizer" not in names or getattr(cfg, "tokenizer", None) is not None
            or not str(cfg.source).startswith("text:")):
        return cfg
    return dataclasses.replace(cfg, tokenizer=base)


def hf_space(space: SearchSpace, sources: list[str] | None) -> SearchSpace:
    """An ``hf`` space with ``base`` fixed to the teacher's directory and ``layers`` kept
    within the teacher's depth; any other space unchanged."""
    if space.family != "hf":
        return space
    base = teacher_dir(sources)
    if base is None:
        raise TeacherError("the hf space builds students from a Hugging Face teacher's config; "
                           "pass --teacher hf:DIR")
    depth = _depth(base)
    params = [_within(p, depth) for p in space.params if p.name != "base"]
    params.insert(0, Param("base", "architecture", "fixed", value=base))
    out = SearchSpace(space.family, params, space.source, space.description)
    out.raw = space.raw
    return out


def hf_student_spec(family: str, spec: dict[str, Any], sources: list[str] | None) -> dict[str, Any]:
    """A single ``hf`` student's spec with ``base`` from the teacher (``autokd distill``)."""
    if family != "hf" or spec.get("base") or spec.get("config"):
        return spec
    base = teacher_dir(sources)
    return {**spec, "base": base} if base else spec


def _depth(base: str) -> int:
    cfg = _read_config(Path(base))
    return int(cfg.get("num_hidden_layers") or cfg.get("n_layers") or cfg.get("num_layers") or 1)


def _within(p: Param, depth: int) -> Param:
    """``layers`` never above the teacher's depth (a 4-layer teacher: at most 4)."""
    if p.name != "layers" or p.group != "architecture":
        return p
    if p.kind == "int":
        return dataclasses.replace(p, low=min(p.low, depth), high=min(p.high, depth))
    if p.kind == "choice":
        keep = tuple(c for c in p.choices if c <= depth) or (depth,)
        return dataclasses.replace(p, choices=keep)
    return p


# -- loading ----------------------------------------------------------------------------------
def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise TeacherError(f"teacher directory not found: {path}")
    if not path.is_dir():
        raise TeacherError(f"hf:{path} must be a directory written by save_pretrained")
    file = path / "config.json"
    if not file.is_file():
        raise TeacherError(f"{path} is not a Hugging Face model directory (no config.json)")
    try:
        raw = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TeacherError(f"cannot read {file}: {exc}") from None
    if not isinstance(raw, dict):
        raise TeacherError(f"{file} is not a Hugging Face config")
    return raw


def _weights(path: Path) -> tuple[list[Path], bool]:
    """The weight files and whether they are safetensors (preferred when both exist)."""
    safe = sorted(path.glob("*.safetensors"))
    if safe:
        return safe, True
    files = sorted(f for pattern in _WEIGHTS[1:] for f in path.glob(pattern))
    if not files:
        raise TeacherError(f"{path} holds no model weights (model.safetensors or "
                           "pytorch_model.bin)")
    for f in files:  # transformers reads these with weights_only too; refuse with one line
        try:
            torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError:
            raise TeacherError(f"{f} holds pickled Python objects that could run code; "
                               "refusing it (save the model with safetensors)") from None
        except Exception as exc:  # noqa: BLE001 - a damaged file: one line
            raise TeacherError(f"cannot read {f}: {str(exc).splitlines()[0][:160]}") from None
    return files, False


def _digest(path: Path, files: list[Path]) -> str:
    """Hash of the config and weights, so changed weights never reuse cached outputs."""
    h = hashlib.sha256()
    for f in [path / "config.json", *files]:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _pad_id(transformers: Any, path: Path, config: Any) -> int:
    """The tokenizer's padding id (what the data pads with), else the config's, else 0."""
    try:
        with quiet_transformers():
            tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if tok.pad_token_id is not None:
            return int(tok.pad_token_id)
    except Exception as exc:  # noqa: BLE001 - no or unreadable tokenizer: fall back to the config
        logger.debug("no tokenizer in %s: %s", path, exc)
    return int(config.pad_token_id) if getattr(config, "pad_token_id", None) is not None else 0


def _from_pretrained(transformers: Any, path: Path, safetensors: bool, trust: bool) -> Any:
    auto = transformers.AutoModelForSequenceClassification
    try:
        with quiet_transformers():
            model, info = auto.from_pretrained(
                str(path), local_files_only=True, use_safetensors=safetensors,
                trust_remote_code=trust, dtype=torch.float32, output_loading_info=True)
    except Exception as exc:  # noqa: BLE001 - transformers' own errors: one line
        raise TeacherError(f"cannot load the Hugging Face model in {path}: "
                           f"{str(exc).strip().splitlines()[0][:200]}") from None
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise TeacherError(f"{path} is not a fine-tuned sequence classifier: its weights lack "
                           f"{', '.join(sorted(missing)[:3])}")
    return model.eval()


def _check_data(path: Path, config: Any, data: DataSplits | None) -> None:
    if data is None:
        return
    if data.kind != "tokens" or data.tokens is None:
        raise TeacherError(f"hf:{path} reads token ids, but {data.name} is {data.kind} data; "
                           "use --dataset text:FILE")
    if int(config.num_labels) != data.num_classes:
        raise TeacherError(f"hf:{path} classifies {config.num_labels} labels, but "
                           f"{data.name} has {data.num_classes} classes")
    if data.tokens.vocab_size > int(config.vocab_size):
        raise TeacherError(f"the data's tokenizer has {data.tokens.vocab_size} ids but "
                           f"hf:{path} embeds {config.vocab_size}; tokenise with the teacher's "
                           "tokenizer (leave out --tokenizer)")


def load_hf_teacher(text: str, trust: bool = False,
                    data: DataSplits | None = None) -> tuple[HFClassifier, str]:
    """The adapter around ``hf:DIR``'s model (eval mode) and a digest of its files.

    Raises:
        TeacherError: Missing or unreadable directory, remote code without ``trust``, pickled
            weights, a base model without a trained classifier, or data it cannot read.
    """
    path = Path(text[len(PREFIX):] if is_hf(text) else text)
    raw = _read_config(path)
    if "auto_map" in raw and not trust:
        raise TeacherError(f"hf:{path} runs its own Python code (trust_remote_code); pass "
                           "--trust if you trust it")
    transformers = require_transformers(TeacherError)
    files, safetensors = _weights(path)
    model = _from_pretrained(transformers, path, safetensors, trust)
    _check_data(path, model.config, data)
    pad = _pad_id(transformers, path, model.config)
    if data is not None and data.tokens is not None and data.tokens.pad_id != pad:
        logger.warning("hf:%s pads with id %d, the data with %d; the data's id is used",
                       path, pad, data.tokens.pad_id)
        pad = data.tokens.pad_id
    return HFClassifier(model, pad).eval(), _digest(path, files)
