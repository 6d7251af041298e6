"""Transformer KD terms against hand-computed values: masks, head/width mismatch, mappings.

Every expected number below is worked out by hand from the term's formula (noted beside it),
never read back from the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from autokd.distill import TERMS, DistillLoss, KDConfig
from autokd.distill._term import Batch, TermContext
from autokd.distill.transformer import (
    EmbeddingMSELoss,
    HiddenCosineLoss,
    MiniLMLoss,
    TinyBERTAttentionLoss,
    attention_kl,
    attention_mse,
    embedding_mse,
    hidden_cosine,
    resample_tokens,
    value_relation,
)
from autokd.errors import ConfigError

T = torch.tensor
MASK_FIRST = T([[True, False]])  # one sample, token 1 padded


def _ctx(mapping: str = "uniform", **groups: tuple[list, list]) -> TermContext:
    kd = KDConfig(hint_mapping=mapping)
    return TermContext(kd, 2, student_tap_shapes={g: s for g, (s, _) in groups.items()},
                       teacher_tap_shapes={g: t for g, (_, t) in groups.items()})


# -- the pure formulas -----------------------------------------------------------------------
def test_hidden_cosine_by_hand() -> None:
    h_s = T([[[1.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2)
    h_t = T([[[1.0, math.sqrt(3.0)], [1.0, 0.0]]])
    # token 0: cos 60° = 0.5 -> 0.5; token 1: orthogonal -> 1; mean 0.75
    assert hidden_cosine(h_s, h_t, None).tolist() == pytest.approx([0.75])
    assert hidden_cosine(h_s, h_t, MASK_FIRST).tolist() == pytest.approx([0.5])  # token 0 only
    assert hidden_cosine(h_s, h_t, ~MASK_FIRST).tolist() == pytest.approx([1.0])


def test_embedding_mse_by_hand() -> None:
    e_s, e_t = T([[[1.0, 2.0], [3.0, 4.0]]]), T([[[1.0, 0.0], [0.0, 0.0]]])
    # token 0: (0 + 4)/2 = 2; token 1: (9 + 16)/2 = 12.5; mean 7.25
    assert embedding_mse(e_s, e_t, None).tolist() == pytest.approx([7.25])
    assert embedding_mse(e_s, e_t, MASK_FIRST).tolist() == pytest.approx([2.0])


def test_attention_mse_by_hand_and_over_valid_pairs() -> None:
    a_s = T([[[[1.0, 0.0], [0.5, 0.5]]]])  # (1, H=1, 2, 2)
    a_t = T([[[[0.5, 0.5], [0.5, 0.5]]]])
    # squared errors .25 .25 0 0 over 4 pairs -> 0.125
    assert attention_mse(a_s, a_t, None).tolist() == pytest.approx([0.125])
    # only pair (0, 0) is real -> 0.25
    assert attention_mse(a_s, a_t, MASK_FIRST).tolist() == pytest.approx([0.25])
    # a second head that matches exactly halves the head average: (0.125 + 0) / 2
    two_s, two_t = torch.cat([a_s, a_t], 1), torch.cat([a_t, a_t], 1)
    assert attention_mse(two_s, two_t, None).tolist() == pytest.approx([0.0625])
    # 1 student head vs 2 teacher heads: the teacher's heads are averaged first
    t2 = T([[[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]])  # mean: equal to a_s
    assert attention_mse(a_s, t2, None).tolist() == pytest.approx([0.0])


def test_attention_mse_counts_a_pair_only_when_query_and_key_are_real() -> None:
    a_s = T([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]])
    a_t = T([[[[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.0, 0.0, 1.0]]]])
    # token 2 padded: the 2x2 real pairs have errors .25 .0625 / .0625 .25 -> 0.625 / 4
    mask = T([[True, True, False]])
    assert attention_mse(a_s, a_t, mask).tolist() == pytest.approx([0.15625])


def test_attention_kl_by_hand_with_padded_keys() -> None:
    a_s = T([[[[0.25, 0.75], [0.25, 0.75]]]])
    a_t = T([[[[0.5, 0.5], [0.5, 0.5]]]])
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # = 0.5 ln(4/3)
    assert attention_kl(a_s, a_t, None).tolist() == pytest.approx([kl])
    # key 1 padded: both models put probability 1 on key 0 -> 0; query 1 is left out
    a_s_m, a_t_m = T([[[[1.0, 0.0], [0.3, 0.7]]]]), T([[[[1.0, 0.0], [0.9, 0.1]]]])
    assert attention_kl(a_s_m, a_t_m, MASK_FIRST).tolist() == pytest.approx([0.0], abs=1e-9)
    assert attention_kl(a_s_m, a_t_m, None).item() > 0.1  # without the mask it counts
    # a teacher that leaves mass on a padded key: that key is left out of the sum
    a_s_p, a_t_p = T([[[[0.5, 0.5], [0.5, 0.5]]]]), T([[[[0.8, 0.2], [0.8, 0.2]]]])
    expected = 0.8 * math.log(0.8 / 0.5)
    assert attention_kl(a_s_p, a_t_p, MASK_FIRST).tolist() == pytest.approx([expected])


def test_value_relation_by_hand() -> None:
    v = T([[[1.0, 0.0], [0.0, 1.0]]])  # (1, L=2, D=2)
    a = 1 / math.sqrt(2.0)  # one relation head: V Vᵀ / √2 = [[a, 0], [0, a]]
    p = math.exp(a) / (math.exp(a) + 1)
    got = value_relation(v, 1, None).exp()
    torch.testing.assert_close(got, T([[[[p, 1 - p], [1 - p, p]]]]))
    # two heads of width 1: head 0 sees (1, 0) -> scores [[1, 0], [0, 0]]
    e = math.e / (math.e + 1)
    two = value_relation(v, 2, None).exp()
    torch.testing.assert_close(two[0, 0], T([[e, 1 - e], [0.5, 0.5]]))
    torch.testing.assert_close(two[0, 1], T([[0.5, 0.5], [1 - e, e]]))
    # a padded key gets probability 0, the real one all of it
    torch.testing.assert_close(value_relation(v, 1, MASK_FIRST).exp()[0, 0, :, 1], T([0.0, 0.0]))


def test_resample_tokens_keeps_cls_and_pools_patches() -> None:
    grid = T([[9.0, 1.0, 2.0, 3.0, 4.0]])  # CLS + a 2x2 patch grid -> CLS + 1 patch
    assert resample_tokens(grid, 2, 1).tolist() == [[9.0, 2.5]]
    line = T([[9.0, 1.0, 2.0, 4.0]])  # CLS + 3 patches -> CLS + 2 (windows [0,2), [1,3))
    assert resample_tokens(line, 3, 1).tolist() == [[9.0, 1.5, 3.0]]
    # CLS + 4x4 patches -> CLS + 2x2: each output averages one 2x2 block
    x = torch.cat([T([[0.0]]), torch.arange(16.0)[None]], 1)
    assert resample_tokens(x, 5, 1)[0, 1:].tolist() == [2.5, 4.5, 10.5, 12.5]


def test_different_lengths_pool_the_longer_model() -> None:
    # teacher: CLS + 4 patches, student: CLS + 1 patch, same direction after pooling
    h_t = T([[[1.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 2.0], [0.0, 2.0]]])
    h_s = T([[[2.0, 0.0], [0.0, 5.0]]])
    assert hidden_cosine(h_s, h_t, None).tolist() == pytest.approx([0.0], abs=1e-7)
    a_t = torch.full((1, 1, 5, 5), 0.2)
    a_s = torch.full((1, 1, 2, 2), 0.5)
    # pooled teacher rows [0.2, 0.2] renormalised to [0.5, 0.5]: equal to the student's
    assert attention_mse(a_s, a_t, None).tolist() == pytest.approx([0.0], abs=1e-7)
    with pytest.raises(ConfigError, match="equal lengths"):
        hidden_cosine(h_s, h_t, T([[True, True]]))


# -- the terms: projections, mappings, minilm's relation heads ------------------------------
def test_hidden_cos_follows_the_layer_mapping() -> None:
    same, other = T([[[1.0, 0.0]]]), T([[[0.0, 1.0]]])
    shapes = {"hidden": ([(1, 2)], [(1, 2), (1, 2)])}
    top = TERMS.get("hidden_cos").create(_ctx("top_down", **shapes))
    bottom = TERMS.get("hidden_cos").create(_ctx("bottom_up", **shapes))
    assert isinstance(top.proj[0], torch.nn.Identity)  # equal widths: no projection
    # the one student layer meets teacher layer 2 (top_down) or 1 (bottom_up)
    assert top.compute([same], [other, same], None).tolist() == pytest.approx([0.0])
    assert bottom.compute([same], [other, same], None).tolist() == pytest.approx([1.0])


def test_learned_mapping_weights_get_gradients_and_start_uniform() -> None:
    shapes = ([(2, 3), (2, 3)], [(2, 4)] * 3)
    term = TERMS.get("hidden_cos").create(_ctx("learned", hidden=shapes))
    assert isinstance(term, HiddenCosineLoss) and isinstance(term.proj[0], torch.nn.Linear)
    torch.manual_seed(0)
    s = [torch.randn(3, 2, 3, requires_grad=True) for _ in range(2)]
    t = [torch.randn(3, 2, 4) for _ in range(3)]
    loss = term.compute(s, t, None)
    # uniform weights at start: mean over student layers of the mean over teacher layers
    expected = torch.stack([torch.stack([hidden_cosine(term.proj[i](s[i]), t[j], None)
                                         for j in range(3)]).mean(0) for i in range(2)]).mean(0)
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    assert term.logits.grad is not None and term.logits.grad.abs().sum() > 0
    attn = TERMS.get("tinybert_attn").create(
        _ctx("learned", attention=([(2, 3, 3)], [(2, 3, 3)] * 2)))
    a_s = torch.rand(1, 2, 3, 3, requires_grad=True)
    a_t = [torch.rand(1, 2, 3, 3).softmax(-1), torch.rand(1, 2, 3, 3).softmax(-1)]
    attn.compute([a_s.softmax(-1)], a_t, None).sum().backward()
    assert attn.logits.grad.abs().sum() > 0 and a_s.grad is not None


def test_tinybert_attn_pairs_and_embed_projection() -> None:
    term = TERMS.get("tinybert_attn").create(
        _ctx("uniform", attention=([(1, 2, 2)], [(1, 2, 2), (1, 2, 2)])))
    assert isinstance(term, TinyBERTAttentionLoss) and term.pairs == [(0, 1)]
    a_s = T([[[[1.0, 0.0], [0.5, 0.5]]]])
    far, near = T([[[[0.0, 1.0], [0.0, 1.0]]]]), T([[[[0.5, 0.5], [0.5, 0.5]]]])
    assert term.compute([a_s], [far, near], None).tolist() == pytest.approx([0.125])
    emb = TERMS.get("embed_mse").create(_ctx(embedding=([(2, 3)], [(2, 5)])))
    assert isinstance(emb, EmbeddingMSELoss) and emb.proj.weight.shape == (5, 3)
    assert emb.proj.bias is None  # TinyBERT's E_S W_e has no bias


def test_minilm_by_hand_and_with_other_heads_and_widths() -> None:
    ctx = _ctx(attention=([(2, 2, 2)], [(3, 2, 2)]), values=([(2, 4)], [(2, 6)]))
    term = TERMS.get("minilm").create(ctx)
    assert isinstance(term, MiniLMLoss) and term.relation_heads == 2  # 2 divides 4 and 6
    odd = _ctx(attention=([(2, 2, 2)], [(3, 2, 2)]), values=([(2, 4)], [(2, 5)]))
    assert TERMS.get("minilm").create(odd).relation_heads == 1
    one = MiniLMLoss(1)
    a_s = T([[[[0.25, 0.75], [0.25, 0.75]]]])
    a_t = T([[[[0.5, 0.5], [0.5, 0.5]]]])
    v_t, v_s = T([[[1.0, 0.0], [0.0, 1.0]]]), torch.zeros(1, 2, 2)
    # VR_S is uniform; VR_T rows are (p, 1-p) and (1-p, p): KL = p ln 2p + (1-p) ln 2(1-p)
    p = math.exp(1 / math.sqrt(2)) / (math.exp(1 / math.sqrt(2)) + 1)
    vr = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    at = 0.5 * math.log(4 / 3)
    assert one.compute(a_s, a_t, v_s, v_t, None).tolist() == pytest.approx([at + vr])
    assert one.compute(a_s, a_t, v_t, v_t, None).tolist() == pytest.approx([at])
    # 2 student heads vs 3 teacher heads, widths 4 vs 6: finite, differentiable
    torch.manual_seed(0)
    v = torch.randn(3, 2, 4, requires_grad=True)
    a = torch.randn(3, 2, 2, 2, requires_grad=True)
    out = term.compute(a.softmax(-1), torch.rand(3, 3, 2, 2).softmax(-1), v,
                       torch.randn(3, 2, 6), T([[True, True], [True, False], [True, True]]))
    assert out.shape == (3,) and torch.isfinite(out).all()
    out.sum().backward()
    assert v.grad.abs().sum() > 0 and a.grad.abs().sum() > 0


def test_terms_read_taps_through_the_batch_and_the_recipe() -> None:
    kd = KDConfig(terms={"kl": 0.5, "hidden_cos": 1.0, "minilm": 1.0})
    assert kd.tap_groups() == {"hidden", "attention", "values"}
    assert kd.without_features().weights() == {"kl": 0.5}
    assert "hidden_cos=1.0:uniform" in kd.summary()
    shapes = {"hidden": [(2, 2)], "attention": [(1, 2, 2)], "values": [(2, 2)]}
    loss = DistillLoss(kd, 2, student_tap_shapes=shapes, teacher_tap_shapes=shapes)
    assert loss.tap_groups == {"hidden", "attention", "values"}
    h = torch.randn(4, 2, 2)
    att = torch.rand(4, 1, 2, 2).softmax(-1)
    taps = {"hidden": [h], "attention": [att], "values": [h]}
    logits = torch.randn(4, 2)
    _, parts = loss(logits, T([0, 1, 0, 1]), logits, progress=0.0, student_taps=taps,
                    teacher_taps=taps, mask=torch.ones(4, 2, dtype=torch.bool))
    assert parts["hidden_cos"] == pytest.approx(0.0, abs=1e-6)  # identical states
    assert parts["minilm"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="'attention' taps"):
        loss(logits, T([0, 1, 0, 1]), logits, progress=0.0, student_taps={"hidden": [h]},
             teacher_taps=taps)
    with pytest.raises(ConfigError, match="'values' taps"):
        DistillLoss(kd, 2, student_tap_shapes={"hidden": [(2, 2)], "attention": [(1, 2, 2)]},
                    teacher_tap_shapes=shapes)


def test_batch_features_and_taps_are_one_thing() -> None:
    f = [torch.randn(2, 3)]
    batch = Batch(torch.randn(2, 2), T([0, 1]), student_features=f, teacher_features=f)
    assert batch.student_taps == {"features": f}
    other = Batch(torch.randn(2, 2), T([0, 1]), student_taps={"features": f},
                  teacher_taps={"features": f})
    assert other.student_features is f
    ctx = TermContext(KDConfig(), 2, student_tap_shapes={"features": [(3,)]},
                      teacher_tap_shapes={"features": [(4,)]})
    assert ctx.shapes("fitnet") == ([(3,)], [(4,)])
    with pytest.raises(ConfigError, match="'hidden' taps"):
        ctx.tap_shapes("hidden_cos", "hidden")
