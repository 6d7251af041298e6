"""A tiny fine-tuned BERT classifier and its WordPiece tokenizer, saved with save_pretrained.

The task: a sentence is class 1 when it holds one of the "positive" keywords, class 0 when it
holds a "negative" one; the other words are filler. A 4-layer, 32-wide BERT learns it in a few
seconds on a CPU, far above chance, so a teacher built from it carries real signal. The
tokenizer, config and fine-tuning are the ``hf_recipe`` benchmark's (``benchmarks/_hf_task.py``).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _hf_task
from _hf_task import bert_config, fine_tune

__all__ = ["MAX_LENGTH", "bert_config", "encode", "save_teacher", "sentences", "tokenizer"]

POSITIVE = ("great", "superb", "lovely", "excellent")
NEGATIVE = ("awful", "boring", "terrible", "dreadful")
FILLER = ("the", "film", "plot", "actor", "scene", "music", "story", "was", "and", "very",
          "quite", "ending", "camera", "light", "script", "cast", "in", "of", "it", "a")
MAX_LENGTH = 16


def sentences(n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` sentences of 2..19 words: some are truncated to MAX_LENGTH tokens, most padded."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(1, 18))]
        # early enough to survive truncation to MAX_LENGTH tokens
        words.insert(rng.randint(0, min(len(words), 8)), rng.choice(POSITIVE if label else NEGATIVE))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def tokenizer(texts: list[str]) -> Any:
    """A WordPiece tokenizer trained on ``texts`` that pads and cuts to MAX_LENGTH."""
    return _hf_task.tokenizer(texts, MAX_LENGTH)


def encode(tok: Any, texts: list[str]) -> torch.Tensor:
    """Token ids ``(N, MAX_LENGTH)``: padded and truncated as autokd's text data is."""
    return _hf_task.encode(tok, texts, MAX_LENGTH)


def save_teacher(root: Path, n: int = 320) -> dict[str, Any]:
    """Train and save the teacher + tokenizer in ``root``; returns the data it used."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    texts, labels = sentences(n, seed=0)
    tok = tokenizer(texts)
    x, y = encode(tok, texts), torch.tensor(labels)
    model = AutoModelForSequenceClassification.from_config(bert_config())
    fine_tune(model, x[: n * 3 // 4], y[: n * 3 // 4])
    model.save_pretrained(str(root))
    tok.save_pretrained(str(root))
    return {"texts": texts, "labels": labels, "x": x, "y": y, "tokenizer": tok}
