"""Export formats of ``hf`` students: what Hugging Face tooling deploys.

- ``hf_onnx`` (``student.hf.onnx``): inputs ``input_ids`` and ``attention_mask`` (dynamic batch
  and sequence length), output ``logits``; the padding id is in the model's metadata so
  autokd's runner can build the mask from ids alone and verify it like every other format.
- ``hf`` (``hf_model/``): a ``save_pretrained`` directory (config, safetensors weights, class
  names as ``id2label``) with the teacher's tokenizer beside it, loadable by
  ``AutoModelForSequenceClassification`` / ``AutoTokenizer`` / ``pipeline``.

Both apply to ``hf`` students only; the default export writes them next to pt/TorchScript/ONNX.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autokd.errors import ExportError
from autokd.export.formats import (
    FORMATS,
    ONNX_OPSET,
    PAD_ID_KEY,
    ArtifactFormat,
    OnnxModule,
    quiet_torch_export,
)
from autokd.models.hf import HFClassifier, quiet_transformers, require_transformers

__all__ = ["HF_DIR", "HF_ONNX", "is_hf_student"]

logger = logging.getLogger(__name__)
HF_ONNX, HF_DIR = "student.hf.onnx", "hf_model"


def is_hf_student(model: nn.Module) -> bool:
    return isinstance(model, HFClassifier)


class _TwoInputs(nn.Module):
    """``(input_ids, attention_mask) -> logits``: the signature HF deployments call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          return_dict=True).logits


def _write_hf_onnx(model: nn.Module, path: Path, meta: dict[str, Any],
                   example: torch.Tensor) -> None:
    import onnx

    wrapper = _TwoInputs(model.model).eval()  # eval: export restores the wrapper's mode
    mask = (example != model.pad_id).long()
    axes = {"input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}}
    with quiet_torch_export(), torch.no_grad():
        torch.onnx.export(wrapper, (example, mask), str(path), dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes=axes, opset_version=ONNX_OPSET)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = PAD_ID_KEY, str(model.pad_id)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))
    model.eval()


def _labelled_config(model: HFClassifier, meta: dict[str, Any]) -> None:
    """Class names as ``id2label`` and the data's padding id, so pipelines read them."""
    config = model.model.config
    names = meta.get("class_names") or []
    if len(names) == config.num_labels:
        config.id2label = {i: str(n) for i, n in enumerate(names)}
        config.label2id = {str(n): i for i, n in enumerate(names)}
    config.pad_token_id = model.pad_id


def _write_hf_dir(model: nn.Module, path: Path, meta: dict[str, Any],
                  example: torch.Tensor) -> None:
    _labelled_config(model, meta)
    with quiet_transformers():
        model.model.save_pretrained(str(path))
    base = (getattr(model, "spec", None) or {}).get("base")
    if not base or not Path(str(base)).is_dir():
        logger.warning("the hf student's base directory %s is gone: %s has no tokenizer", base,
                       path)
        return
    transformers = require_transformers(ExportError)
    try:
        with quiet_transformers():
            tok = transformers.AutoTokenizer.from_pretrained(str(base), local_files_only=True)
            tok.save_pretrained(str(path))
    except (OSError, ValueError) as exc:
        logger.warning("no tokenizer copied from %s: %s", base, str(exc).splitlines()[0])


def _run_hf_dir(path: Path, threads: int = 1) -> nn.Module:
    """The directory loaded as transformers loads it (no download, safetensors only)."""
    transformers = require_transformers(ExportError)
    with quiet_transformers():
        hf_model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True, use_safetensors=True)
    pad = hf_model.config.pad_token_id
    return HFClassifier(hf_model.eval(), pad if pad is not None else 0).eval()


FORMATS.register("hf_onnx", ArtifactFormat(HF_ONNX, _write_hf_onnx, OnnxModule, is_hf_student))
FORMATS.register("hf", ArtifactFormat(HF_DIR, _write_hf_dir, _run_hf_dir, is_hf_student))
