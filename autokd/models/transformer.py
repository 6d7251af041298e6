"""Transformer students (``transformer``): a pre-LN encoder over patches or token ids.

Read top to bottom (nanoGPT's layout, an encoder instead of a decoder):

- an embedding turns one sample into a sequence ``(B, L, D)``: non-overlapping ``patch x patch``
  patches of an image (a Conv2d of stride ``patch``) or ``patch``-sample windows of a signal (a
  Conv1d), after a learned CLS token, or token ids (an embedding table; the tokenizer's first
  token is the CLS); plus learned positions;
- ``layers`` pre-LN blocks ``h + attn(ln(h))``, ``h + mlp(ln(h))`` (Vaswani et al. 2017 with
  the norm moved before each sub-layer, as in GPT-2 / ViT);
- a final LayerNorm, then ``pooling``: the CLS position, or the mean over valid positions
  (patches: every non-CLS position; token ids: every non-padding token), and a linear head.

Patch sizes need not divide the input: the right / bottom edge is zero-padded to a whole
number of patches (so one space's patch choices fit 8x8 digits and 40-sample MNIST-1D alike);
a patch larger than the smallest input side is refused, since some patch would be all padding.

Token ids: ``spec["vocab_size"]`` and ``spec["pad_id"]`` (filled from the data's ``TokenInfo``
by ``build_student`` and kept in the spec, so a saved student rebuilds without the data); the
padding mask ``ids != pad_id`` becomes an additive mask of ``finfo.min`` on the padded keys, so
padded keys get probability exactly 0, and a sequence that is all padding still gives finite
numbers (uniform attention) instead of NaN.

Taps (the contract of ``tap_groups`` / ``enable_taps``): ``embed`` (B, L, D); ``blocks.i``
(B, L, D), the residual stream after layer i; ``blocks.i.attn.v`` (B, L, D), the values
before the head split; ``blocks.i.attn.probs`` (B, H, L, L), attention probabilities, only
computed with ``enable_taps({"attention"})`` (the explicit softmax path; otherwise the fused
``F.scaled_dot_product_attention`` runs); ``blocks.i.feature`` (B, D, L), the hidden states
channels first for the feature terms written for CNNs. Like attention probabilities, the
feature probes run only while ``enable_taps`` names ``features`` (the trainer does so for a
recipe that reads them), so inference, export and latency run the bare encoder.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autokd.distill.init import init_transformer
from autokd.errors import ConfigError
from autokd.models._family import Family, TeacherRecipe, register_family
from autokd.models._spec import resolve_spec

__all__ = [
    "FAMILY",
    "POOLINGS",
    "TAP_GROUPS",
    "TRANSFORMER_DEFAULTS",
    "Block",
    "PatchEmbedding",
    "SelfAttention",
    "TokenEmbedding",
    "Transformer",
    "normalise_spec",
    "tap_groups",
]

TRANSFORMER_DEFAULTS: dict[str, Any] = {
    "layers": 2,
    "hidden": 32,  # D, the model width
    "heads": 2,
    "mlp_ratio": 2,  # the MLP's hidden width is mlp_ratio * D
    "dropout": 0.0,
    "patch": 4,  # patch side for images, window for signals; None for token ids
    "pooling": "cls",
    "vocab_size": None,  # token ids only: embedding rows
    "pad_id": None,  # token ids only: the padding id
}
POOLINGS = ("cls", "mean")
TAP_GROUPS = ("features", "embedding", "hidden", "attention", "values")


class Probe(nn.Identity):
    """A named identity: forward hooks on it see a tensor the model does not otherwise emit."""


class TokenEmbedding(nn.Module):
    """Token ids ``(B, L)`` -> ``(B, L, D)``: one learned row per id plus learned positions."""

    def __init__(self, vocab_size: int, pad_id: int, length: int, hidden: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, hidden, padding_idx=pad_id)
        self.pos = nn.Parameter(torch.zeros(1, length, hidden))

    def forward(self, ids: Tensor) -> Tensor:
        return self.tokens(ids) + self.pos  # (B, L, D)


class PatchEmbedding(nn.Module):
    """``(B, C, H, W)`` or ``(B, C, L)`` -> ``(B, 1 + N, D)``: a CLS token, then N patches."""

    def __init__(self, input_shape: tuple[int, ...], patch: int, hidden: int) -> None:
        super().__init__()
        channels, sides = input_shape[0], input_shape[1:]
        # F.pad lists the last dim first: (0, pad_W, 0, pad_H) zero-pads right and bottom
        self.pad = [n for side in reversed(sides) for n in (0, -side % patch)]
        conv = nn.Conv2d if len(sides) == 2 else nn.Conv1d
        self.proj = conv(channels, hidden, patch, stride=patch)
        patches = math.prod(math.ceil(side / patch) for side in sides)
        self.cls = nn.Parameter(torch.zeros(1, 1, hidden))
        self.pos = nn.Parameter(torch.zeros(1, 1 + patches, hidden))

    def forward(self, x: Tensor) -> Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)  # (B, C, H', W'), every side a multiple of the patch
        h = self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)
        cls = self.cls.expand(h.shape[0], -1, -1)  # (B, 1, D)
        return torch.cat([cls, h], dim=1) + self.pos  # (B, 1 + N, D)


class SelfAttention(nn.Module):
    """Multi-head self-attention; separate q/k/v projections so the values can be tapped."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)  # 'values' tap: (B, L, D)
        self.proj = nn.Linear(hidden, hidden)
        self.probs = Probe()  # 'attention' tap: (B, H, L, L), explicit path only
        self.attn_drop = nn.Dropout(dropout)
        self.explicit = False  # True: softmax(QK^T) materialised (attention taps on)

    def forward(self, x: Tensor, valid: Tensor | None) -> Tensor:
        # x: (B, L, D); valid: (B, L) bool, True = a real token (None: all real)
        q, k, v = (self._heads(f(x)) for f in (self.q, self.k, self.v))  # (B, H, L, d) each
        bias = None
        if valid is not None:  # finfo.min, not -inf: an all-padding row stays finite
            bias = (~valid)[:, None, None, :].to(q.dtype) * torch.finfo(q.dtype).min  # (B,1,1,L)
        if self.explicit:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, L, L)
            if bias is not None:
                scores = scores + bias
            att = self.probs(scores.softmax(dim=-1))  # (B, H, L, L), rows sum to 1
            y = self.attn_drop(att) @ v  # (B, H, L, d)
        else:
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        return self.proj(y.transpose(1, 2).flatten(2))  # (B, L, D)

    def _heads(self, t: Tensor) -> Tensor:
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, L, D) -> (B, H, L, d)


class MLP(nn.Module):
    """Linear -> GELU -> Linear, ``D -> mlp_ratio * D -> D``."""

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden, width)
        self.act = nn.GELU()
        self.proj = nn.Linear(width, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.act(self.fc(x)))  # (B, L, D)


class Block(nn.Module):
    """One pre-LN encoder layer; its output is the 'hidden' tap ``(B, L, D)``."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = SelfAttention(hidden, heads, dropout)
        self.ln2 = nn.LayerNorm(hidden)
        self.mlp = MLP(hidden, mlp_ratio * hidden)
        self.drop = nn.Dropout(dropout)
        self.feature = Probe()  # 'features' tap: (B, D, L)
        self.features_on = False

    def forward(self, h: Tensor, valid: Tensor | None) -> Tensor:
        h = h + self.drop(self.attn(self.ln1(h), valid))  # (B, L, D)
        h = h + self.drop(self.mlp(self.ln2(h)))  # (B, L, D)
        if self.features_on:
            self.feature(h.transpose(1, 2))  # (B, D, L), channels first like a 1-D CNN
        return h


class Transformer(nn.Module):
    """Embedding -> pre-LN blocks -> LayerNorm -> pool (CLS or mean) -> linear head."""

    family = "transformer"

    def __init__(self, spec: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.spec = normalise_spec(spec)
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        s, hidden = self.spec, self.spec["hidden"]
        self.kind = _check_shape(s, self.input_shape)
        self.pad_id: int | None = s["pad_id"]
        self.vocab_size: int | None = s["vocab_size"]  # cost code feeds token ids when set
        if self.kind == "tokens":
            self.embed: nn.Module = TokenEmbedding(s["vocab_size"], s["pad_id"],
                                                   input_shape[0], hidden)
        else:
            self.embed = PatchEmbedding(self.input_shape, s["patch"], hidden)
        self.drop = nn.Dropout(s["dropout"])
        self.blocks = nn.ModuleList(Block(hidden, s["heads"], s["mlp_ratio"], s["dropout"])
                                    for _ in range(s["layers"]))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, num_classes)
        self.tap_groups = tap_groups(self.spec)
        self.feature_taps = self.tap_groups["features"]
        self.apply(_init_weights)
        if self.kind == "tokens":
            with torch.no_grad():
                self.embed.tokens.weight[s["pad_id"]].zero_()  # padding_idx row stays zero

    def enable_taps(self, groups: set[str]) -> None:
        """Turn on what tapped groups need: the explicit attention path for ``attention``,
        the channels-first probes for ``features``; ``set()`` is the fast path."""
        unknown = sorted(set(groups) - set(TAP_GROUPS))
        if unknown:
            raise ConfigError(f"unknown tap group(s) {', '.join(unknown)}; known: "
                              f"{', '.join(TAP_GROUPS)}")
        for block in self.blocks:
            block.attn.explicit = "attention" in groups
            block.features_on = "features" in groups

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W) image, (B, C, L) signal, or (B, L) int64 token ids
        valid = x != self.pad_id if self.kind == "tokens" else None  # (B, L) bool
        h = self.drop(self.embed(x))  # (B, L, D)
        for block in self.blocks:
            h = block(h, valid)  # (B, L, D)
        h = self.norm(h)
        return self.head(self._pool(h, valid))  # (B, K)

    def _pool(self, h: Tensor, valid: Tensor | None) -> Tensor:
        if self.spec["pooling"] == "cls":
            return h[:, 0]  # (B, D): the learned CLS token, or the tokenizer's first token
        if valid is None:
            return h[:, 1:].mean(dim=1)  # (B, D): every patch, not the CLS
        weights = valid.to(h.dtype).unsqueeze(-1)  # (B, L, 1)
        return (h * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)  # (B, D)


def _init_weights(module: nn.Module) -> None:
    """GPT-2 / BERT initialisation: N(0, 0.02) weights, zero biases, N(0, 0.02) positions."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (TokenEmbedding, PatchEmbedding)):
        nn.init.trunc_normal_(module.pos, std=0.02)
        if isinstance(module, PatchEmbedding):
            nn.init.trunc_normal_(module.cls, std=0.02)


def _check_shape(spec: dict[str, Any], input_shape: tuple[int, ...]) -> str:
    """The input kind (``tokens``, ``image``, ``signal``), checked against the spec."""
    if spec["vocab_size"] is not None:
        if len(input_shape) != 1:
            raise ConfigError(f"transformer with a vocabulary needs token ids shaped (L,), got "
                              f"{input_shape}")
        return "tokens"
    if len(input_shape) not in (2, 3):
        raise ConfigError(f"transformer needs (C, H, W) images, (C, L) signals or token ids; "
                          f"got shape {input_shape} without a vocabulary")
    if spec["patch"] > min(input_shape[1:]):
        raise ConfigError(f"transformer patch {spec['patch']} is larger than the input "
                          f"{input_shape}; pick a patch <= {min(input_shape[1:])}")
    return "image" if len(input_shape) == 3 else "signal"


def _int(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"transformer {key} must be an integer in {low}..{high}, got {value!r}")
    return value


def normalise_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Validate ``spec``; token specs (``vocab_size`` set) have ``patch`` None (unused)."""
    s = resolve_spec("transformer", dict(spec), TRANSFORMER_DEFAULTS)
    s["layers"] = _int("layers", s["layers"], 1, 48)
    s["heads"] = _int("heads", s["heads"], 1, 64)
    s["hidden"] = _int("hidden", s["hidden"], 1, 8192)
    if s["hidden"] % s["heads"]:
        raise ConfigError(f"transformer hidden {s['hidden']} must be a multiple of heads "
                          f"{s['heads']}")
    s["mlp_ratio"] = _int("mlp_ratio", s["mlp_ratio"], 1, 16)
    dropout = s["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
            or not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"transformer dropout must be in [0, 1), got {dropout!r}")
    s["dropout"] = float(dropout)
    if s["pooling"] not in POOLINGS:
        raise ConfigError(f"transformer pooling must be one of {', '.join(POOLINGS)}, got "
                          f"{s['pooling']!r}")
    if s["vocab_size"] is None:
        if s["pad_id"] is not None:
            raise ConfigError("transformer pad_id is for token ids; give vocab_size too")
        s["patch"] = _int("patch", s["patch"], 1, 1024)
        return s
    s["vocab_size"] = _int("vocab_size", s["vocab_size"], 2, 10_000_000)
    if s["pad_id"] is None:
        raise ConfigError("transformer token input needs pad_id with vocab_size")
    s["pad_id"] = _int("pad_id", s["pad_id"], 0, s["vocab_size"] - 1)
    s["patch"] = None
    return s


def tap_groups(spec: dict[str, Any]) -> dict[str, list[str]]:
    """Module paths of every tap group (module docstring), in layer order."""
    n = range(spec["layers"])
    return {"features": [f"blocks.{i}.feature" for i in n], "embedding": ["embed"],
            "hidden": [f"blocks.{i}" for i in n],
            "attention": [f"blocks.{i}.attn.probs" for i in n],
            "values": [f"blocks.{i}.attn.v" for i in n]}


def _feature_taps(spec: dict[str, Any]) -> list[str]:
    return tap_groups(spec)["features"]


FAMILY = register_family(Family(
    name="transformer",
    build=Transformer,
    defaults=TRANSFORMER_DEFAULTS,
    normalise=normalise_spec,
    inputs=("image", "signal", "tokens"),
    default_for=("tokens",),
    feature_taps=_feature_taps,
    teacher=TeacherRecipe({"layers": 6, "hidden": 64, "heads": 4, "mlp_ratio": 4, "patch": 4,
                           "dropout": 0.1}, epochs=60, lr=1e-3),
    teacher_init=init_transformer,
))
