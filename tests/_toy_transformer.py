"""A tiny pre-LN transformer over token ids that exposes tap groups (tests only).

It follows the tap-group contract the transformer KD terms read: ``tap_groups`` names module
paths per group (``features``, ``embedding``, ``hidden``, ``attention``, ``values``) and
``enable_taps`` switches the attention probabilities on (otherwise the fused
``scaled_dot_product_attention`` runs and the ``attention`` probes never fire). It also keeps
a log of ``enable_taps`` calls so tests can see the trainer toggle them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autokd.data import DataSplits
from autokd.data.schema import TokenInfo

PAD = 0


class _Layer(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.q, self.k, self.v = (nn.Linear(width, width) for _ in range(3))
        self.attn = nn.Identity()  # tap: (B, H, L, L) probabilities, only when enabled
        self.out = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.probs = False

    def forward(self, x: Tensor, keys: Tensor) -> Tensor:
        b, length, width = x.shape
        h = self.ln1(x)

        def split(t: Tensor) -> Tensor:
            return t.reshape(b, length, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))  # (B, H, L, d)
        bias = torch.zeros(b, 1, 1, length).masked_fill(~keys[:, None, None, :], float("-inf"))
        if self.probs:
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
            y = self.attn(scores.softmax(-1)) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.out(y.transpose(1, 2).reshape(b, length, width))
        return x + self.mlp(self.ln2(x))


class ToyTransformer(nn.Module):
    """Embedding + positions, ``depth`` pre-LN layers, mean over real tokens, linear head."""

    def __init__(self, vocab: int, length: int, width: int, heads: int, depth: int,
                 classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width, padding_idx=PAD)
        self.pos = nn.Parameter(torch.randn(1, length, width) * 0.1)
        self.embedding = nn.Identity()  # tap: (B, L, D)
        self.layers = nn.ModuleList(_Layer(width, heads) for _ in range(depth))
        self.probes = nn.ModuleList(nn.Identity() for _ in range(depth))  # (B, D, L)
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, classes)
        self.features_on = False
        self.enable_log: list[set[str]] = []
        self.tap_groups = {
            "features": [f"probes.{i}" for i in range(depth)],
            "embedding": ["embedding"],
            "hidden": [f"layers.{i}" for i in range(depth)],
            "attention": [f"layers.{i}.attn" for i in range(depth)],
            "values": [f"layers.{i}.v" for i in range(depth)],
        }
        self.feature_taps = self.tap_groups["features"]

    def enable_taps(self, groups: set[str]) -> None:
        self.enable_log.append(set(groups))
        for layer in self.layers:
            layer.probs = "attention" in groups
        self.features_on = "features" in groups

    def forward(self, x: Tensor) -> Tensor:
        keys = x != PAD  # (B, L)
        h = self.embedding(self.embed(x) + self.pos)
        for layer, probe in zip(self.layers, self.probes, strict=True):
            h = layer(h, keys)
            if self.features_on:
                probe(h.transpose(1, 2))
        valid = keys.unsqueeze(-1).float()
        pooled = (self.norm(h) * valid).sum(1) / valid.sum(1).clamp_min(1.0)
        return self.head(pooled)


def token_data(n: int = 96, length: int = 8, vocab: int = 12, seed: int = 0) -> DataSplits:
    """Padded token sequences (lengths 2..L); the class says whether token 3 outnumbers 4."""

    def make(count: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        x = torch.randint(1, vocab, (count, length), generator=gen)
        lengths = torch.randint(2, length + 1, (count,), generator=gen)
        x[torch.arange(length)[None, :] >= lengths[:, None]] = PAD
        y = ((x == 3).sum(1) > (x == 4).sum(1)).long()
        return x, y

    gen = torch.Generator().manual_seed(seed)
    (xtr, ytr), (xva, yva), (xte, yte) = make(n, gen), make(n // 2, gen), make(n // 2, gen)
    info = TokenInfo(vocab_size=vocab, pad_id=PAD, max_length=length, tokenizer="toy")
    return DataSplits("toy-tokens", "tokens", (length,), 2, xtr, ytr, xva, yva, xte, yte,
                      f"toy-{n}-{length}-{vocab}-{seed}", ["no", "yes"], {}, tokens=info)
