"""A tiny fine-tuned BERT classifier and its WordPiece tokenizer, saved with save_pretrained.

The task: a sentence is class 1 when it holds one of the "positive" keywords, class 0 when it
holds a "negative" one; the other words are filler. A 4-layer, 32-wide BERT learns it in a few
seconds on a CPU, far above chance, so a teacher built from it carries real signal.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

POSITIVE = ("great", "superb", "lovely", "excellent")
NEGATIVE = ("awful", "boring", "terrible", "dreadful")
FILLER = ("the", "film", "plot", "actor", "scene", "music", "story", "was", "and", "very",
          "quite", "ending", "camera", "light", "script", "cast", "in", "of", "it", "a")
MAX_LENGTH = 16
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


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
    """A WordPiece tokenizer trained on ``texts``, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=200,
                                                             special_tokens=SPECIAL))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=MAX_LENGTH)


def encode(tok: Any, texts: list[str]) -> torch.Tensor:
    """Token ids ``(N, MAX_LENGTH)``: padded and truncated as autokd's text data is."""
    out = tok(texts, padding="max_length", truncation=True, max_length=MAX_LENGTH,
              return_tensors="pt")
    return out["input_ids"].long()


def bert_config(num_labels: int = 2, **overrides: Any) -> Any:
    from transformers import BertConfig

    kw = {"vocab_size": 200, "hidden_size": 32, "num_hidden_layers": 4,
          "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
          "num_labels": num_labels, "pad_token_id": 0}
    return BertConfig(**{**kw, **overrides})


def fine_tune(model: Any, x: torch.Tensor, y: torch.Tensor, epochs: int = 6) -> None:
    """A few epochs of AdamW on the keyword task (masking padding like the adapter does)."""
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(32):
            ids = x[idx]
            out = model(input_ids=ids, attention_mask=(ids != 0).long(), labels=y[idx])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    model.eval()


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
