"""Tiny BERT classifiers for the Hugging Face path: a WordPiece tokenizer trained on the texts,
a ``BertConfig`` built without a download, a few epochs of fine-tuning, and a sentiment task
that a bag of words cannot solve.

Why one module: the ``hf_recipe`` benchmark and the tests of ``--teacher hf:DIR`` build their
teachers the same way (``tests/_hf_fixture.py`` imports from here), so a teacher that works in
the tests is the teacher whose numbers the benchmark reports.

The sentiment task (``sentiment``): a sentence is one clause (``the plot was not very good``)
or two clauses of opposite sentiment joined by a contrast word (``the cast was dull but the
music was not bad``). A clause's sentiment is its adjective's, flipped by a negator
(``not``/``never``/``hardly``; an intensifier may sit between them); a contrast sentence takes
the sentiment of the clause after the contrast word. Every adjective and negator appears in
both classes equally often, so word counts alone say little (negation is an XOR, order decides
contrasts); ``noise`` of the labels are flipped, which caps any model near ``1 - noise``.
"""

from __future__ import annotations

import random
from typing import Any

import torch

__all__ = [
    "SPECIAL",
    "bert_config",
    "encode",
    "fine_tune",
    "sentiment",
    "tokenizer",
]

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

POSITIVE = ("great", "superb", "lovely", "excellent", "wonderful", "brilliant", "good", "fine")
NEGATIVE = ("awful", "boring", "terrible", "dreadful", "dull", "poor", "bad", "weak")
NEGATORS = ("not", "never", "hardly")
INTENSIFIERS = ("very", "really", "quite", "truly", "so")
SUBJECTS = ("the film", "the plot", "the acting", "the music", "the story", "the ending",
            "the cast", "the script", "the camera work", "the dialogue")
VERBS = ("was", "is", "seemed", "felt")
OPENERS = ("honestly", "overall", "in the end", "to be fair", "frankly")
CONTRASTS = ("but", "yet", "however")


def _clause(rng: random.Random, polarity: int) -> str:
    """``subject verb [negator] [intensifier] adjective`` whose sentiment is ``polarity``."""
    negated = rng.random() < 0.5
    adjective = POSITIVE if (polarity > 0) != negated else NEGATIVE
    words = [rng.choice(SUBJECTS), rng.choice(VERBS)]
    if negated:
        words.append(rng.choice(NEGATORS))
    if rng.random() < 0.5:
        words.append(rng.choice(INTENSIFIERS))
    words.append(rng.choice(adjective))
    return " ".join(words)


def sentiment(n: int, seed: int, contrast: float = 0.6,
              noise: float = 0.05) -> tuple[list[str], list[int]]:
    """``n`` sentences and labels (1 positive, 0 negative; classes alternate before noise).

    ``contrast`` of them are two opposite clauses joined by a contrast word (the second one
    decides); the rest are one clause. ``noise`` of the labels are then flipped at random.
    """
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        polarity = 1 if label else -1
        if rng.random() < contrast:
            text = f"{_clause(rng, -polarity)} {rng.choice(CONTRASTS)} {_clause(rng, polarity)}"
        else:
            text = _clause(rng, polarity)
        if rng.random() < 0.3:
            text = f"{rng.choice(OPENERS)} {text}"
        texts.append(text)
        labels.append(1 - label if rng.random() < noise else label)
    return texts, labels


def tokenizer(texts: list[str], max_length: int, vocab_size: int = 200) -> Any:
    """A WordPiece tokenizer trained on ``texts``, as a transformers fast tokenizer that adds
    ``[CLS]`` / ``[SEP]`` like BERT's."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size,
                                                             special_tokens=SPECIAL))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=max_length)


def encode(tok: Any, texts: list[str], max_length: int) -> torch.Tensor:
    """Token ids ``(N, max_length)``: padded and truncated as autokd's text data is."""
    out = tok(texts, padding="max_length", truncation=True, max_length=max_length,
              return_tensors="pt")
    return out["input_ids"].long()


def bert_config(num_labels: int = 2, **overrides: Any) -> Any:
    """A small ``BertConfig`` (no download); ``overrides`` change any field."""
    from transformers import BertConfig

    kw = {"vocab_size": 200, "hidden_size": 32, "num_hidden_layers": 4,
          "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
          "num_labels": num_labels, "pad_token_id": 0}
    return BertConfig(**{**kw, **overrides})


def fine_tune(model: Any, x: torch.Tensor, y: torch.Tensor, epochs: int = 6, lr: float = 3e-3,
              batch_size: int = 32, seed: int = 0) -> None:
    """AdamW for ``epochs`` over ``(x, y)``, masking padding (id 0) like the adapter does."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            ids = x[idx]
            out = model(input_ids=ids, attention_mask=(ids != 0).long(), labels=y[idx])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    model.eval()
