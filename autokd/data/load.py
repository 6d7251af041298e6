"""``load_data``: one source, validated, split, normalised (or tokenized) on train and hashed.

Why one entry point: every later stage (teacher, training, cost, report) must see the same
tensors for the same configuration and be able to tell whether two runs used the same split,
so all of them load through here and get a :class:`DataSplits` carrying a ``split_hash``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from autokd.config import DataConfig, from_dict, to_dict
from autokd.data.normalize import apply_normalizer, fit_normalizer
from autokd.data.scarce import attach_unlabeled, restrict_columns, shrink_train
from autokd.data.schema import SPLITS, DataSplits, TokenInfo
from autokd.data.sources import file_forms, read_source
from autokd.data.splits import split_hash, split_indices
from autokd.data.stream import (
    ImageSplit,
    default_workers,
    fit_uint8_normalizer,
    materialise,
    memory_budget,
)
from autokd.data.validate import check_features, encode_labels
from autokd.errors import DataError

__all__ = ["load_data"]

# One logger name for the whole data layer, so log lines and filters read ``autokd.data``.
logger = logging.getLogger("autokd.data")


def load_data(cfg: DataConfig | str = "digits", **overrides: Any) -> DataSplits:
    """Load a source, split it, normalise it on train only and hash the split.

    Text (kind ``tokens``) arrives as raw strings and is tokenized after the split, with a
    tokenizer fitted on the train texts only; token ids are never normalised. Scarce labels,
    unlabelled inputs and the student's columns (``autokd.data.scarce``) apply after the
    split: the normaliser is fitted on the (shrunk) labelled train split.

    Args:
        cfg: a ``DataConfig``, or a source string (shorthand for ``DataConfig(source=...)``).
        **overrides: ``DataConfig`` fields replacing those of ``cfg`` (``seed=1``, ...).

    Raises:
        DataError: the source is unknown or its data is unusable (the message says why).
        ConfigError: an override is not a ``DataConfig`` field or a fraction is out of range.
    """
    cfg = _resolve_config(cfg, overrides)
    x, y, kind, meta = read_source(cfg)
    texts = kind == "tokens" and np.asarray(x).ndim == 1  # raw strings, tokenized below
    x = np.asarray(x) if texts else check_features(x, kind, cfg.source)
    y, class_names = encode_labels(y, cfg.source, meta.get("class_names"))
    if len(x) != len(y):
        raise DataError(f"{cfg.source}: X has {len(x)} samples but y has {len(y)}")
    parts = split_indices(y, class_names, cfg, meta.get("predefined"))
    parts, left_out = shrink_train(parts, y, class_names, cfg, meta)  # scarce labels
    tokens: TokenInfo | None = None
    if texts:
        x, tokens = _tokenize(x, parts, cfg, meta)
    normalizer = {} if kind == "tokens" else _fit_normalizer(x, kind, parts, meta)
    digest = split_hash(meta, x, y, class_names, cfg, parts)
    splits = _assemble(cfg, kind, x, y, parts, class_names, normalizer, digest, meta)
    splits.tokens = tokens
    if cfg.unlabeled is not None:
        attach_unlabeled(splits, cfg, x, parts, left_out, meta)
    if cfg.student_features is not None:
        splits = restrict_columns(splits, cfg.student_features)
    logger.info(
        "loaded %s (%s): sizes %s, %d classes, split %s",
        splits.name,
        kind,
        splits.sizes(),
        splits.num_classes,
        splits.split_hash,
    )
    return splits


def _fit_normalizer(x: np.ndarray, kind: str, parts: dict[str, np.ndarray],
                    meta: dict) -> dict[str, Any]:
    scale = float(meta.get("scale", 1.0))
    if "memmap_path" in meta:  # a decoded image cache: never copy it whole as floats
        normalizer = fit_uint8_normalizer(x, parts["train"], scale)
    else:
        normalizer = fit_normalizer(x[parts["train"]], kind, scale)
    if "encoding" in meta:
        normalizer["encoding"] = meta["encoding"]
    return normalizer


def _tokenize(texts: np.ndarray, parts: dict[str, np.ndarray], cfg: DataConfig,
              meta: dict) -> tuple[np.ndarray, TokenInfo]:
    """Token ids from a tokenizer fitted on the train texts; the split hash covers it."""
    from autokd.data.tokenize import tokenize_texts

    out = tokenize_texts(texts, parts["train"], cfg)
    meta["identity"] = {**meta.get("identity", {"source": cfg.source}), **out.identity}
    meta["tokenizer_json"] = out.tokenizer_json
    return out.ids, out.info


def _resolve_config(cfg: DataConfig | str, overrides: dict[str, Any]) -> DataConfig:
    """One validated ``DataConfig`` from either spelling, so the steps below see only one."""
    if isinstance(cfg, str):
        base: dict[str, Any] = {"source": cfg}
    elif isinstance(cfg, DataConfig):
        base = to_dict(cfg)
    else:
        raise DataError(f"load_data needs a DataConfig or a source string, not {type(cfg)}")
    resolved = from_dict(DataConfig, {**base, **overrides}).validate()
    if not isinstance(resolved.source, str) or not resolved.source.strip():
        forms = " / ".join(file_forms())
        raise DataError(f"data source is empty; use a name such as 'digits' or {forms}")
    return resolved


def _assemble(
    cfg: DataConfig,
    kind: str,
    x: np.ndarray,
    y: np.ndarray,
    parts: dict[str, np.ndarray],
    names: list[str],
    normalizer: dict[str, Any],
    digest: str,
    meta: dict,
) -> DataSplits:
    """Normalise once, cut the tensors per split and keep only the meta worth reporting."""
    tensors: dict[str, Any] = {}
    if "memmap_path" in meta:
        tensors = _mapped_features(cfg, x, parts, normalizer, meta)
    elif kind == "tokens":  # ids, never normalised
        tensors = {f"x_{name}": torch.from_numpy(np.ascontiguousarray(x[parts[name]],
                                                                      dtype=np.int64))
                   for name in SPLITS}
    else:
        xn = apply_normalizer(x, normalizer)
        for name in SPLITS:
            tensors[f"x_{name}"] = torch.from_numpy(np.ascontiguousarray(xn[parts[name]]))
    for name in SPLITS:
        tensors[f"y_{name}"] = torch.from_numpy(y[parts[name]])
    fields = ("identity", "feature_names", "generated", "skipped_files", "streaming",
              "tokenizer_json", "labels")
    keep = {k: meta[k] for k in fields if k in meta}
    keep["predefined_splits"] = sorted(meta.get("predefined") or ())
    return DataSplits(
        name=cfg.source,
        kind=kind,
        input_shape=tuple(int(d) for d in x.shape[1:]),
        num_classes=len(names),
        split_hash=digest,
        class_names=list(names),
        normalizer=normalizer,
        meta=keep,
        **tensors,
    )


def _mapped_features(
    cfg: DataConfig,
    x: np.ndarray,
    parts: dict[str, np.ndarray],
    normalizer: dict[str, Any],
    meta: dict,
) -> dict[str, Any]:
    """In memory when the float32 tensors fit the budget, else a streaming view per split."""
    need = 4 * int(np.prod(x.shape))  # float32 bytes of every split together
    budget = memory_budget(cfg)
    if need <= budget:
        return {f"x_{s}": materialise(x, parts[s], normalizer) for s in SPLITS}
    workers = default_workers(cfg)
    logger.info("streaming %s from %s: %.1f MiB as float32 exceeds the memory budget of "
                "%.1f MiB (%d loader workers)", cfg.source, meta["memmap_path"], need / 2**20,
                budget / 2**20, workers)
    meta["streaming"] = {"budget_bytes": budget, "float32_bytes": need, "workers": workers}
    return {f"x_{s}": ImageSplit(meta["memmap_path"], parts[s], normalizer, workers)
            for s in SPLITS}
