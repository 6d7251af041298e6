"""A small token-id dataset built by hand (``kind == "tokens"``), for tests of token students.

Each sequence is ``[CLS] w_1 .. w_n [PAD] ..`` with ``n`` from 2 to ``L - 1``; the label says
whether the marker token occurs, so a transformer can learn it and padding is everywhere. One
test sequence has no padding at all.
"""

from __future__ import annotations

import torch

from autokd.data import DataSplits
from autokd.data.schema import TokenInfo

__all__ = ["CLS", "LENGTH", "MARKER", "PAD", "VOCAB", "token_ids", "token_splits"]

VOCAB, PAD, CLS, MARKER, LENGTH = 40, 0, 1, 7, 12


def token_ids(n: int, seed: int, length: int = LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` padded id sequences ``(n, length)`` int64 and their labels ``(n,)``."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (n, length), generator=gen)
    ids[:, 0] = CLS
    lengths = torch.randint(3, length + 1, (n,), generator=gen)  # real tokens incl. CLS
    ids[torch.arange(length)[None, :] >= lengths[:, None]] = PAD
    ids[ids == MARKER] = MARKER + 1
    y = torch.randint(0, 2, (n,), generator=gen)
    pos = (torch.rand(n, generator=gen) * (lengths - 1).float()).long() + 1  # a real position
    ids[y == 1, pos[y == 1]] = MARKER
    return ids, y


def token_splits(n_train: int = 96, n_eval: int = 32, seed: int = 0) -> DataSplits:
    """Train / val / test token splits with the ``TokenInfo`` a tokenizer would give."""
    parts = [token_ids(n, seed + i) for i, n in enumerate((n_train, n_eval, n_eval))]
    x_test = parts[2][0]
    gen = torch.Generator().manual_seed(seed + 9)
    x_test[0] = torch.randint(2, VOCAB, (LENGTH,), generator=gen)  # full length, no padding
    x_test[0, 0] = CLS
    info = TokenInfo(vocab_size=VOCAB, pad_id=PAD, max_length=LENGTH, tokenizer="hand:40",
                     cls_id=CLS)
    return DataSplits(
        name="tokens", kind="tokens", input_shape=(LENGTH,), num_classes=2,
        x_train=parts[0][0], y_train=parts[0][1], x_val=parts[1][0], y_val=parts[1][1],
        x_test=x_test, y_test=parts[2][1], split_hash=f"tokens-{seed}",
        class_names=["absent", "present"], normalizer={}, tokens=info)
