"""Transformer KD terms: hidden states, attention maps, embeddings and value relations.

They read the tap groups of section C of the transformer contract (``embedding`` and ``hidden``
``(B, L, D)``, ``attention`` ``(B, H, L, L)`` probabilities, ``values`` ``(B, L, D)``) and the
batch's token mask ``(B, L)`` (True at real tokens; None when every position is valid). Each
term returns a per-sample loss ``(B,)``, so importance weights apply, and has a pure
``compute`` on tensors that the tests check against hand-computed values.

Choices common to all four:
- Averages run over *valid* positions only: padded tokens (mask False) are left out of token
  averages; in attention maps a pair (query i, key j) counts when both are real.
- Layer pairs follow the recipe's ``hint_mapping`` (uniform, bottom_up, top_down through
  ``map_layers``; ``learned``: per student layer, softmax weights over all teacher layers, as in
  ``LearnedMapping``). Pair losses are *averaged* over student layers, so a term's scale does
  not grow with depth.
- Sequence lengths may differ (a student with larger patches sees fewer tokens). Position 0 is
  the CLS token (our transformer prepends one to patch inputs) and is compared as it is; the
  longer model's remaining positions are average-pooled to the shorter's count (as a 2-D grid
  when both counts are squares, image patches; else along the sequence), and pooled attention
  rows are renormalised to sum to 1. Token data has the same length for both (one tokenizer);
  a token mask with different lengths is refused.

Shapes: ``B`` batch, ``L`` tokens, ``D`` width, ``H`` heads, ``R`` relation heads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autokd.distill._term import Batch, Recipe, Shape, Term, TermContext, register_term
from autokd.distill.mapping import map_layers
from autokd.errors import ConfigError

__all__ = ["EmbeddingMSELoss", "HiddenCosineLoss", "MiniLMLoss", "TinyBERTAttentionLoss",
           "attention_kl", "attention_mse", "embedding_mse", "hidden_cosine", "resample_tokens",
           "value_relation"]

_EPS = 1e-12  # floor of student probabilities inside a log (KL stays finite)


# -- sequence alignment and masks ------------------------------------------------------------
def resample_tokens(x: Tensor, n: int, dim: int) -> Tensor:
    """``x`` with ``n`` positions along ``dim``: position 0 (CLS) kept, the rest average-pooled
    (2-D when both counts are squares: a patch grid)."""
    length = x.shape[dim]
    if length == n:
        return x
    head, rest = x.narrow(dim, 0, 1), x.narrow(dim, 1, length - 1).movedim(dim, -1)
    p_in, p_out = length - 1, n - 1
    g_in, g_out = math.isqrt(p_in), math.isqrt(p_out)
    flat = rest.reshape(-1, 1, p_in)
    if g_in * g_in == p_in and g_out * g_out == p_out:
        pooled = F.adaptive_avg_pool2d(flat.reshape(-1, 1, g_in, g_in), g_out)
    else:
        pooled = F.adaptive_avg_pool1d(flat, p_out)
    rest = pooled.reshape(*rest.shape[:-1], p_out).movedim(-1, dim)
    return torch.cat([head, rest], dim=dim)


def _align(s: Tensor, t: Tensor, dims: Sequence[int], mask: Tensor | None,
           rows: bool = False) -> tuple[Tensor, Tensor]:
    """Bring ``s`` and ``t`` to the shorter sequence length along ``dims`` (see module doc);
    ``rows``: renormalise the last dim to sum to 1 (attention rows) after pooling."""
    n_s, n_t = s.shape[dims[0]], t.shape[dims[0]]
    if n_s == n_t:
        return s, t
    if mask is not None:
        raise ConfigError(f"student and teacher see {n_s} and {n_t} tokens of the same "
                          "padded text; token KD terms need equal lengths")
    n = min(n_s, n_t)
    out = []
    for x in (s, t):
        for d in dims:
            x = resample_tokens(x, n, d)
        out.append(x / x.sum(-1, keepdim=True).clamp_min(_EPS) if rows else x)
    return out[0], out[1]


def _valid(mask: Tensor | None, like: Tensor, length: int) -> Tensor:
    """``(B, L)`` float, 1 at real tokens (all ones without a mask)."""
    if mask is None:
        return like.new_ones(like.shape[0], length, dtype=torch.float32)
    return mask.to(device=like.device, dtype=torch.float32)


def _token_mean(per_token: Tensor, valid: Tensor) -> Tensor:
    """``(B, L)`` -> ``(B,)`` mean over valid tokens (0 for a sample with none)."""
    return (per_token * valid).sum(-1) / valid.sum(-1).clamp_min(1.0)


def _head_match(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, H, L, L)`` maps with equal head counts, or both averaged over heads."""
    if s.shape[1] == t.shape[1]:
        return s, t
    return s.mean(1, keepdim=True), t.mean(1, keepdim=True)


# -- the pure computations -------------------------------------------------------------------
def hidden_cosine(h_s: Tensor, h_t: Tensor, mask: Tensor | None) -> Tensor:
    """``mean_{valid i} 1 − cos(h_T_i, h_S_i)``: ``(B, L, D)`` pairs of equal width -> ``(B,)``."""
    h_s, h_t = _align(h_s.float(), h_t.detach().float(), (1,), mask)
    cos = F.cosine_similarity(h_s, h_t, dim=-1, eps=1e-8)  # (B, L)
    return _token_mean(1.0 - cos, _valid(mask, h_s, h_s.shape[1]))


def embedding_mse(e_s: Tensor, e_t: Tensor, mask: Tensor | None) -> Tensor:
    """``mean_{valid i} mean_d (E_T − E_S)²``: ``(B, L, D)`` of equal width -> ``(B,)``."""
    e_s, e_t = _align(e_s.float(), e_t.detach().float(), (1,), mask)
    return _token_mean((e_t - e_s).pow(2).mean(-1), _valid(mask, e_s, e_s.shape[1]))


def attention_mse(a_s: Tensor, a_t: Tensor, mask: Tensor | None) -> Tensor:
    """``1/H Σ_h MSE(A_h^T, A_h^S)`` over valid (query, key) pairs: ``(B, H, L, L)`` -> ``(B,)``.

    Different head counts compare the head-averaged maps.
    """
    a_s, a_t = _align(a_s.float(), a_t.detach().float(), (2, 3), mask, rows=True)
    a_s, a_t = _head_match(a_s, a_t)
    valid = _valid(mask, a_s, a_s.shape[-1])
    pairs = valid[:, :, None] * valid[:, None, :]  # (B, L, L)
    err = (a_t - a_s).pow(2).mean(1)  # (B, L, L), mean over heads
    return (err * pairs).sum((1, 2)) / pairs.sum((1, 2)).clamp_min(1.0)


def _row_kl(p_t: Tensor, log_p_s: Tensor, mask: Tensor | None) -> Tensor:
    """``KL(p_T ‖ p_S)`` per row over real keys, averaged over heads and real queries."""
    valid = _valid(mask, p_t, p_t.shape[-1])  # (B, L)
    keys = valid[:, None, None, :] > 0  # (B, 1, 1, L)
    terms = torch.where(keys & (p_t > 0), p_t * (p_t.clamp_min(_EPS).log() - log_p_s), 0.0)
    per_query = terms.sum(-1).mean(1)  # (B, L): KL of each query row, mean over heads
    return _token_mean(per_query, valid)


def attention_kl(a_s: Tensor, a_t: Tensor, mask: Tensor | None) -> Tensor:
    """``KL(A_T ‖ A_S)`` of attention distributions ``(B, H, L, L)`` -> ``(B,)`` (rows are
    distributions over keys; different head counts compare head-averaged maps)."""
    a_s, a_t = _align(a_s.float(), a_t.detach().float(), (2, 3), mask, rows=True)
    a_s, a_t = _head_match(a_s, a_t)
    return _row_kl(a_t, a_s.clamp_min(_EPS).log(), mask)


def value_relation(v: Tensor, heads: int, mask: Tensor | None) -> Tensor:
    """Log of ``VR = softmax(V_r V_rᵀ / √d_r)`` per relation head: ``(B, L, D)`` ->
    ``(B, R, L, L)``, padded keys at probability 0 (MiniLM's value relation)."""
    b, length, width = v.shape
    d_r = width // heads
    v = v.float().reshape(b, length, heads, d_r).transpose(1, 2)  # (B, R, L, d_r)
    scores = v @ v.transpose(-1, -2) / math.sqrt(d_r)  # (B, R, L, L)
    if mask is not None:
        keys = mask.to(v.device)[:, None, None, :]
        scores = scores.masked_fill(~keys, torch.finfo(scores.dtype).min)
    return scores.log_softmax(-1)


# -- layer pairing ---------------------------------------------------------------------------
class _LayerPairs(Term):
    """A term over mapped (student, teacher) layers of one tap group; ``learned`` mapping:
    ``loss = mean_l Σ_j softmax(w_l)_j · pair(l, j)`` with learned logits ``w`` (zeros first)."""

    kind: ClassVar[str] = "feature"

    def __init__(self, n_student: int, n_teacher: int, mapping: str) -> None:
        super().__init__()
        self.mapping_name = mapping
        if mapping == "learned":
            self.logits = nn.Parameter(torch.zeros(n_student, n_teacher))
            self.pairs: list[tuple[int, int]] = []
        else:
            self.register_parameter("logits", None)
            self.pairs = list(enumerate(map_layers(n_student, n_teacher, mapping)))

    @classmethod
    def label(cls, weight: float, kd: Recipe) -> str:
        return f"{cls.name}={weight}:{kd.hint_mapping}"

    def weights(self) -> Tensor:
        """Learned mapping weights ``(L_S, L_T)``, rows summing to 1."""
        if self.logits is None:
            raise ConfigError(f"{self.name} uses the fixed {self.mapping_name} mapping")
        return self.logits.softmax(-1)

    def combine(self, pair: Callable[[int, int], Tensor]) -> Tensor:
        """The per-sample loss ``(B,)`` from ``pair(student layer, teacher layer) -> (B,)``."""
        if self.logits is None:
            return torch.stack([pair(i, j) for i, j in self.pairs]).mean(0)
        w = self.weights()
        n_s, n_t = w.shape
        per_layer = [sum(w[i, j] * pair(i, j) for j in range(n_t)) for i in range(n_s)]
        return torch.stack(per_layer).mean(0)  # type: ignore[arg-type]


def _shapes(ctx: TermContext, name: str, group: str, rank: int) -> tuple[list[Shape], list[Shape]]:
    s, t = ctx.tap_shapes(name, group)
    if any(len(x) != rank for x in (*s, *t)):
        raise ConfigError(f"KD term {name!r} needs {group!r} taps of per-sample rank {rank}, "
                          f"got student {s[0]} and teacher {t[0]}")
    return s, t


@register_term("hidden_cos")
class HiddenCosineLoss(_LayerPairs):
    """DistilBERT's cosine loss, Sanh et al. 2019, "DistilBERT, a distilled version of BERT".

    ``L(x) = mean_pairs mean_{valid i} (1 − cos(h_T_i, φ_l(h_S_i)))`` on hidden states
    ``(B, L, D)``. DistilBERT aligns the last hidden states of student and teacher; here every
    student layer is paired with a teacher layer by the recipe's ``hint_mapping`` (the top-down
    pair of a single-layer student is DistilBERT's). ``φ_l`` is a learned linear map
    ``D_S -> D_T`` when widths differ (identity when they are equal, as in DistilBERT).
    """

    needs_taps: ClassVar[tuple[str, ...]] = ("hidden",)

    def __init__(self, student_shapes: Sequence[Shape], teacher_shapes: Sequence[Shape],
                 mapping: str = "uniform") -> None:
        super().__init__(len(student_shapes), len(teacher_shapes), mapping)
        widths = {t[-1] for t in teacher_shapes}
        if len(widths) != 1:
            raise ConfigError(f"hidden_cos needs one teacher width, got {sorted(widths)}")
        d_t = widths.pop()
        self.proj = nn.ModuleList(nn.Identity() if s[-1] == d_t else nn.Linear(s[-1], d_t)
                                  for s in student_shapes)

    @classmethod
    def create(cls, ctx: TermContext) -> Term:
        s, t = _shapes(ctx, cls.name, "hidden", 2)
        return cls(s, t, ctx.kd.hint_mapping)

    def forward(self, batch: Batch) -> Tensor:
        return self.compute(*batch.taps("hidden"), batch.mask)

    def compute(self, student: Sequence[Tensor], teacher: Sequence[Tensor],
                mask: Tensor | None) -> Tensor:
        """Hidden states per layer, ``(B, L, D)`` each -> ``(B,)``."""
        projected = [phi(h) for phi, h in zip(self.proj, student, strict=True)]
        return self.combine(lambda i, j: hidden_cosine(projected[i], teacher[j], mask))


@register_term("tinybert_attn")
class TinyBERTAttentionLoss(_LayerPairs):
    """TinyBERT's attention loss, Jiao et al. 2020, "TinyBERT: Distilling BERT for NLU".

    ``L(x) = mean_pairs 1/H Σ_h MSE(A_h^T, A_h^S)`` on attention maps ``(B, H, L, L)`` over
    real (query, key) pairs (DESIGN.md §2). We compare attention *probabilities*: TinyBERT's
    code used the unnormalised scores, which Hugging Face models do not return. When head
    counts differ the head-averaged maps are compared. Layer pairs follow ``hint_mapping``.
    """

    needs_taps: ClassVar[tuple[str, ...]] = ("attention",)

    @classmethod
    def create(cls, ctx: TermContext) -> Term:
        s, t = _shapes(ctx, cls.name, "attention", 3)
        return cls(len(s), len(t), ctx.kd.hint_mapping)

    def forward(self, batch: Batch) -> Tensor:
        return self.compute(*batch.taps("attention"), batch.mask)

    def compute(self, student: Sequence[Tensor], teacher: Sequence[Tensor],
                mask: Tensor | None) -> Tensor:
        """Attention maps per layer, ``(B, H, L, L)`` each -> ``(B,)``."""
        return self.combine(lambda i, j: attention_mse(student[i], teacher[j], mask))


@register_term("embed_mse")
class EmbeddingMSELoss(Term):
    """TinyBERT's embedding-layer loss, Jiao et al. 2020: ``MSE(E_T, E_S W_e)``.

    ``L(x) = mean_{valid i} mean_d (E_T_i − E_S_i W_e)²`` on the embedding output ``(B, L, D)``
    (token or patch embedding plus positions, the input of layer 0); ``W_e`` is a learned
    ``D_S × D_T`` matrix when widths differ, the identity when they are equal.
    """

    kind: ClassVar[str] = "feature"
    needs_taps: ClassVar[tuple[str, ...]] = ("embedding",)

    def __init__(self, student_width: int, teacher_width: int) -> None:
        super().__init__()
        self.proj = nn.Identity() if student_width == teacher_width else \
            nn.Linear(student_width, teacher_width, bias=False)

    @classmethod
    def create(cls, ctx: TermContext) -> Term:
        s, t = _shapes(ctx, cls.name, "embedding", 2)
        return cls(s[0][-1], t[0][-1])

    def forward(self, batch: Batch) -> Tensor:
        s, t = batch.taps("embedding")
        return self.compute(s[0], t[0], batch.mask)

    def compute(self, student: Tensor, teacher: Tensor, mask: Tensor | None) -> Tensor:
        """``(B, L, D_S)``, ``(B, L, D_T)`` -> ``(B,)``."""
        return embedding_mse(self.proj(student), teacher, mask)


@register_term("minilm")
class MiniLMLoss(Term):
    """MiniLM, Wang et al. 2020, "MiniLM: Deep Self-Attention Distillation".

    ``L(x) = KL(A_T ‖ A_S) + KL(VR_T ‖ VR_S)`` on the *last* layer of each model (MiniLM's
    choice, so ``hint_mapping`` does not apply): ``A`` the attention distributions over keys,
    ``VR = softmax(V_r V_rᵀ / √d_r)`` the value relation of the value projection ``V (B, L, D)``
    split into ``R`` relation heads. KL is per query row, averaged over heads and real queries;
    padded keys have probability 0. Widths and head counts may differ (the point of MiniLM):
    ``R`` is the student's head count when it divides both widths, else 1 (relation heads as
    in MiniLMv2); attention maps of different head counts are compared head-averaged.
    """

    kind: ClassVar[str] = "feature"
    needs_taps: ClassVar[tuple[str, ...]] = ("attention", "values")

    def __init__(self, relation_heads: int = 1) -> None:
        super().__init__()
        self.relation_heads = relation_heads

    @classmethod
    def create(cls, ctx: TermContext) -> Term:
        s_att, _ = _shapes(ctx, cls.name, "attention", 3)
        s_val, t_val = _shapes(ctx, cls.name, "values", 2)
        heads, d_s, d_t = s_att[-1][0], s_val[-1][-1], t_val[-1][-1]
        return cls(heads if d_s % heads == 0 and d_t % heads == 0 else 1)

    def forward(self, batch: Batch) -> Tensor:
        s_att, t_att = batch.taps("attention")
        s_val, t_val = batch.taps("values")
        return self.compute(s_att[-1], t_att[-1], s_val[-1], t_val[-1], batch.mask)

    def compute(self, a_s: Tensor, a_t: Tensor, v_s: Tensor, v_t: Tensor,
                mask: Tensor | None) -> Tensor:
        """Last-layer attention ``(B, H, L, L)`` and values ``(B, L, D)`` -> ``(B,)``."""
        v_s, v_t = _align(v_s, v_t.detach(), (1,), mask)
        r = self.relation_heads
        vr_t = value_relation(v_t, r, mask).exp()
        vr = _row_kl(vr_t, value_relation(v_s, r, mask), mask)
        return attention_kl(a_s, a_t, mask) + vr
