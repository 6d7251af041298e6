"""Texts to fixed-length token ids: a tokenizer trained on the train split, or the user's own.

Why after the split: a vocabulary learnt from validation or test text leaks which words those
splits hold (a test-only word would get an id of its own), so ``load_data`` splits first and
hands only the train texts to :func:`train_tokenizer`; val/test texts meet that vocabulary as
unseen text does later (``[UNK]`` or sub-words).

The trained tokenizer is BERT's recipe with Hugging Face ``tokenizers``: ``BertNormalizer``
(clean, lowercase, strip accents), ``BertPreTokenizer`` (split on whitespace and punctuation),
a WordPiece (default) or BPE model, ``[PAD]`` = 0, ``[UNK]``, ``[CLS]``, ``[SEP]`` and a
post-processor writing ``[CLS] ... [SEP]``.

Why it need not be stored: later commands of a study (report, export) reload the data from the
study's config, so they must get the same tokenizer again. Training is deterministic except
for one thing: the WordPiece trainer numbers the ``##`` sub-word alphabet in hash-map order,
which differs from run to run. :func:`train_tokenizer` renumbers the WordPiece vocabulary
(special tokens first, then the rest sorted), so the same train texts and options always give
the same JSON. The split hash covers that JSON, so a tokenizer that ever came out otherwise
would be refused by a study, never silently used.

``tokenizers`` is an optional extra (``autokd[text]``), imported only when text is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autokd.config import DataConfig
from autokd.data.schema import TokenInfo
from autokd.errors import DataError

__all__ = ["SPECIAL_TOKENS", "Tokenized", "load_tokenizer", "tokenize_texts", "train_tokenizer"]

# One logger name for the whole data layer, so log lines and filters read ``autokd.data``.
logger = logging.getLogger("autokd.data")

#: The special tokens of a trained tokenizer, with ids 0..3 in this order.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
_MISSING = "text data needs the tokenizers package: pip install 'autokd[text]'"
_PAD_NAMES = ("[PAD]", "<pad>")


@dataclass(frozen=True)
class Tokenized:
    """Token ids of every sample plus what describes and reproduces them.

    Attributes:
        ids: ``(N, max_length)`` int64, padded with ``info.pad_id`` on the right.
        info: The record models read (vocabulary size, pad and CLS ids, length).
        tokenizer_json: The tokenizer serialised as ``tokenizers`` writes it (before the
            length settings), for saving next to an exported student.
        identity: What the split hash must cover: the tokenizer's sha256, the length and,
            when trained here, the training options.
    """

    ids: np.ndarray
    info: TokenInfo
    tokenizer_json: str
    identity: dict[str, Any]


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise DataError(_MISSING) from None
    return tokenizers


def tokenize_texts(texts: np.ndarray, train: np.ndarray, cfg: DataConfig) -> Tokenized:
    """Ids of all ``texts`` from a tokenizer fitted on ``texts[train]`` (or ``cfg.tokenizer``)."""
    if cfg.tokenizer:
        _warn_unused_options(cfg)
        tok, pad_hint = load_tokenizer(cfg.tokenizer)
        identity: dict[str, Any] = {}
    else:
        tok, pad_hint = train_tokenizer(texts[train].tolist(), cfg.tokenizer_kind,
                                        cfg.vocab_size), None
        identity = {"trained": {"kind": cfg.tokenizer_kind, "vocab_size": cfg.vocab_size}}
    serialised = tok.to_str()
    digest = hashlib.sha256(serialised.encode()).hexdigest()
    where = cfg.tokenizer or "the trained tokenizer"
    pad_id, pad_token = _pad_token(tok, pad_hint, where)
    cls_id = _first_special_id(tok)
    room = tok.num_special_tokens_to_add(False)
    if cfg.max_length <= room:
        raise DataError(f"max_length {cfg.max_length} leaves no room for text: {where} adds "
                        f"{room} special tokens per sample; use a larger max_length")
    tok.enable_truncation(cfg.max_length, direction="right")
    tok.enable_padding(direction="right", pad_id=pad_id, pad_token=pad_token,
                       length=cfg.max_length)
    ids = np.asarray([e.ids for e in tok.encode_batch(texts.tolist())], dtype=np.int64)
    vocab = max(tok.get_vocab(with_added_tokens=True).values()) + 1  # ids may have gaps
    described = (f"{cfg.tokenizer_kind}:{cfg.vocab_size}" if not cfg.tokenizer
                 else f"sha256:{digest}")
    info = TokenInfo(vocab_size=vocab, pad_id=pad_id, max_length=cfg.max_length,
                     tokenizer=described, cls_id=cls_id)
    identity |= {"tokenizer": digest, "max_length": cfg.max_length}
    logger.info("tokenized %d texts: vocabulary %d, %s, max_length %d (%.1f%% fill it; "
                "longer ones are cut)", len(ids), vocab, described, cfg.max_length,
                100.0 * _full_share(ids, pad_id))
    return Tokenized(ids, info, serialised, identity)


def train_tokenizer(texts: Sequence[str], kind: str = "wordpiece", vocab_size: int = 4000) -> Any:
    """A BERT-style ``tokenizers.Tokenizer`` learnt from ``texts``; the same texts and options
    give the same JSON (see :func:`_wordpiece` for the one step that needs help)."""
    tk = _tokenizers()
    normalizer = tk.normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
    if kind == "wordpiece":
        model, decoder = _wordpiece(texts, vocab_size, normalizer, pre_tokenizer, tk)
    elif kind == "bpe":
        trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size,
                                         special_tokens=list(SPECIAL_TOKENS), show_progress=False)
        model, decoder = _trained_model(tk.models.BPE(unk_token="[UNK]"), trainer, texts,
                                        normalizer, pre_tokenizer, tk), None
    else:
        raise DataError(f"unknown tokenizer_kind {kind!r}; known: bpe, wordpiece")
    tok = tk.Tokenizer(model)
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    if decoder is not None:
        tok.decoder = decoder
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = tk.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def _trained_model(model: Any, trainer: Any, texts: Sequence[str], normalizer: Any,
                   pre_tokenizer: Any, tk: Any) -> Any:
    """Train ``model`` on ``texts`` and return it (the caller builds a clean tokenizer)."""
    tok = tk.Tokenizer(model)
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok.model


def _wordpiece(texts: Sequence[str], vocab_size: int, normalizer: Any, pre_tokenizer: Any,
               tk: Any) -> tuple[Any, Any]:
    """A WordPiece model trained deterministically, renumbered canonically.

    Why the detour: the trainer (BPE with a ``##`` prefix) gives each ``##c`` sub-word of the
    alphabet the next free id while it walks a hash map of words, so ids, and on count ties
    even the merges, differ from run to run (huggingface/tokenizers#1794). Declaring every
    ``##c`` up front, sorted, as a reserved token fixes their ids before that walk; the
    reserved list is then dropped (only the four real special tokens are added back), and the
    vocabulary is renumbered: special tokens 0..3, the rest sorted. WordPiece encodes by
    longest match on the set of tokens, so renumbering changes no segmentation.
    """
    continuing = sorted({f"##{c}" for text in texts
                         for word, _ in pre_tokenizer.pre_tokenize_str(
                             normalizer.normalize_str(text)) for c in word[1:]})
    reserved = [*SPECIAL_TOKENS, *continuing]
    trainer = tk.trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=reserved,
                                           show_progress=False)
    model = _trained_model(tk.models.WordPiece(unk_token="[UNK]"), trainer, texts,
                           normalizer, pre_tokenizer, tk)
    vocab = tk.Tokenizer(model).get_vocab(with_added_tokens=False)
    rest = sorted(t for t in vocab if t not in SPECIAL_TOKENS)
    ordered = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *rest])}
    return tk.models.WordPiece(ordered, unk_token="[UNK]"), tk.decoders.WordPiece()


def load_tokenizer(path: str) -> tuple[Any, str | None]:
    """A ``tokenizer.json`` (or a directory holding one) and the pad token named beside it.

    A ``save_pretrained`` directory keeps the pad token in ``tokenizer_config.json`` (or
    ``special_tokens_map.json``) rather than in the JSON's padding settings, so it is read
    from there when present.
    """
    tk = _tokenizers()
    given = Path(path).expanduser()
    if not given.exists():
        raise DataError(f"tokenizer not found: {path!r}")
    file = given / "tokenizer.json" if given.is_dir() else given
    if not file.is_file():
        raise DataError(f"no tokenizer.json in {path!r}; give a tokenizer.json or a directory "
                        "a fast tokenizer was saved to (save_pretrained)")
    try:
        tok = tk.Tokenizer.from_str(file.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for bad JSON
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{str(file)!r} is not a tokenizer.json that tokenizers can read "
                        f"({reason})") from None
    return tok, _pad_hint(file.parent)


def _pad_hint(folder: Path) -> str | None:
    """``pad_token`` of ``tokenizer_config.json`` / ``special_tokens_map.json``, if any."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get("pad_token")
        except (OSError, ValueError, AttributeError):
            continue
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str) and value:
            return value
    return None


def _pad_token(tok: Any, hint: str | None, where: str) -> tuple[int, str]:
    """The id and text that fill sequences: the padding settings, the named pad, ``[PAD]``."""
    if tok.padding is not None:
        return int(tok.padding["pad_id"]), str(tok.padding["pad_token"])
    for name in [*([hint] if hint else []), *_PAD_NAMES]:
        found = tok.token_to_id(name)
        if found is not None:
            return int(found), name
    raise DataError(f"{where} has no pad token (no padding settings, no pad_token beside it, "
                    f"no {' or '.join(_PAD_NAMES)} token); add one, e.g. "
                    "tokenizer.add_special_tokens({'pad_token': '[PAD]'}), and save it again")


def _first_special_id(tok: Any) -> int | None:
    """The id the post-processor puts first (``[CLS]``, ``<s>``), None when it adds none."""
    enc = tok.encode("a")
    return int(enc.ids[0]) if enc.ids and enc.special_tokens_mask[0] else None


def _full_share(ids: np.ndarray, pad_id: int) -> float:
    """Share of samples that fill every position (those longer than that were cut)."""
    return float((ids[:, -1] != pad_id).mean()) if len(ids) else 0.0


def _warn_unused_options(cfg: DataConfig) -> None:
    defaults = DataConfig()
    unused = [f"{name}={getattr(cfg, name)!r}" for name in ("vocab_size", "tokenizer_kind")
              if getattr(cfg, name) != getattr(defaults, name)]
    if unused:
        logger.warning("%s ignored: the tokenizer %s is used as it is", ", ".join(unused),
                       cfg.tokenizer)
