"""KD losses: hand-computed values, properties, and the composed ``DistillLoss``."""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import product

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from autokd.distill import (
    TERMS,
    AttentionLoss,
    DistillLoss,
    EmbeddingMSELoss,
    FitNetLoss,
    GramLoss,
    HardCELoss,
    HiddenCosineLoss,
    KDConfig,
    KLDivergenceLoss,
    LogitCosineLoss,
    LogitMSELoss,
    MiniLMLoss,
    RKDLoss,
    TinyBERTAttentionLoss,
    importance_weights,
    kd_divergence,
    teacher_soft_targets,
)
from autokd.errors import ConfigError


def _softmax(xs: list[float], T: float = 1.0) -> list[float]:
    exps = [math.exp(x / T) for x in xs]
    return [e / sum(exps) for e in exps]


# ---------------------------------------------------------------------------------------------
# Registry: every loss builds, runs, and back-propagates finite gradients
# ---------------------------------------------------------------------------------------------

B, K = 4, 5


def _smoke_inputs(name: str) -> tuple[torch.nn.Module, Callable[[Tensor], tuple], int]:
    """(module, args built from a student tensor, student tensor size) for a registered loss."""
    zt = torch.randn(B, K)
    feat_t = [torch.randn(B, 6, 4, 4)]
    att_s, att_t = torch.randn(B, 2, 5, 5).softmax(-1), torch.randn(B, 2, 5, 5).softmax(-1)
    cases = {
        "kl": (KLDivergenceLoss(), lambda s: (s, zt.softmax(-1), 2.0), (B, K)),
        "mse": (LogitMSELoss(), lambda s: (s, zt), (B, K)),
        "cosine": (LogitCosineLoss(), lambda s: (s, zt), (B, K)),
        "ce": (HardCELoss(0.1), lambda s: (s, torch.arange(B) % K), (B, K)),
        "fitnet": (FitNetLoss([(3, 8, 8)], [(6, 4, 4)]), lambda s: ([s], feat_t), (B, 3, 8, 8)),
        "rkd": (RKDLoss(), lambda s: (s, torch.randn(B, 9)), (B, 7)),
        "gram": (GramLoss(), lambda s: (s, torch.randn(B, 9)), (B, 7)),
        "attention": (AttentionLoss(), lambda s: ([s], feat_t), (B, 3, 8, 8)),
        # transformer terms: hidden (B, L, D), attention (B, H, L, L), values (B, L, D)
        "hidden_cos": (HiddenCosineLoss([(5, 3)], [(5, 6)]),
                       lambda s: ([s], [torch.randn(B, 5, 6)], None), (B, 5, 3)),
        "tinybert_attn": (TinyBERTAttentionLoss(1, 2, "top_down"),
                          lambda s: ([s.softmax(-1)], [att_t, att_t], None), (B, 2, 5, 5)),
        "embed_mse": (EmbeddingMSELoss(3, 6), lambda s: (s, torch.randn(B, 5, 6), None),
                      (B, 5, 3)),
        "minilm": (MiniLMLoss(2), lambda s: (att_s, att_t, s, torch.randn(B, 5, 6), None),
                   (B, 5, 4)),
    }
    return cases[name]


@pytest.mark.parametrize("name", TERMS.names())
def test_every_registered_loss_runs_and_backpropagates(name: str) -> None:
    torch.manual_seed(0)
    module, make_args, shape = _smoke_inputs(name)
    assert isinstance(module, TERMS.get(name))
    student = torch.randn(*shape, requires_grad=True)
    out = module.compute(*make_args(student))
    assert out.shape in ((B,), ())
    out.sum().backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert student.grad.abs().sum() > 0


def test_registry_names_and_unknown_lookup() -> None:
    expected = {"kl", "mse", "cosine", "ce", "fitnet", "rkd", "gram", "attention", "hidden_cos",
                "tinybert_attn", "embed_mse", "minilm"}
    assert set(TERMS.names()) == expected
    with pytest.raises(ConfigError, match="did you mean 'rkd'"):
        TERMS.get("rdk")


# ---------------------------------------------------------------------------------------------
# Response losses
# ---------------------------------------------------------------------------------------------


def test_kl_hand_value() -> None:
    T = 2.0
    z_s, z_t = [0.0, 1.0, -1.0], [1.0, 0.0, 0.5]
    q_s, q_t = _softmax(z_s, T), _softmax(z_t, T)
    expected = T * T * sum(t * math.log(t / s) for t, s in zip(q_t, q_s, strict=True))
    q_t_tensor = teacher_soft_targets(torch.tensor([z_t]), T, "mean")
    got = KLDivergenceLoss().compute(torch.tensor([z_s]), q_t_tensor, T)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kl_is_zero_iff_student_matches_teacher() -> None:
    torch.manual_seed(0)
    z = torch.randn(6, 10)
    q = teacher_soft_targets(z, 3.0, "mean")
    assert torch.allclose(KLDivergenceLoss().compute(z, q, 3.0), torch.zeros(6), atol=1e-5)
    assert (KLDivergenceLoss().compute(z + torch.randn(6, 10), q, 3.0) > 1e-4).all()


def test_kl_handles_zero_teacher_probabilities() -> None:
    q_t = torch.tensor([[1.0, 0.0, 0.0]])
    z_s = torch.tensor([[2.0, 0.0, 0.0]])
    expected = -math.log(_softmax([2.0, 0.0, 0.0])[0])  # 0·log 0 terms vanish
    assert KLDivergenceLoss().compute(z_s, q_t, 1.0).item() == pytest.approx(expected, rel=1e-5)


def _kl_grad_norm(z_s: Tensor, z_t: Tensor, T: float, *, scaled: bool) -> float:
    z = z_s.clone().requires_grad_(True)
    loss = KLDivergenceLoss().compute(z, teacher_soft_targets(z_t, T, "mean"), T).mean()
    (loss if scaled else loss / T**2).backward()
    assert z.grad is not None
    return z.grad.norm().item()


def test_t_squared_keeps_gradient_scale_across_temperatures() -> None:
    # Near agreement d KL/d z_S ≈ J (z_S − z_T) / T², so without T² the gradient at T=8 is
    # ~16x smaller than at T=2; with T² the two stay within a small factor (Hinton 2015, §2).
    torch.manual_seed(0)
    z_t = torch.randn(16, 10)
    z_s = z_t + 0.05 * torch.randn(16, 10)
    scaled = _kl_grad_norm(z_s, z_t, 2.0, scaled=True) / _kl_grad_norm(z_s, z_t, 8.0, scaled=True)
    raw = _kl_grad_norm(z_s, z_t, 2.0, scaled=False) / _kl_grad_norm(z_s, z_t, 8.0, scaled=False)
    assert 1 / 2.5 < scaled < 2.5
    assert raw > 8.0  # the check above would fail without the T² factor


def test_logit_mse_hand_value() -> None:
    got = LogitMSELoss().compute(torch.tensor([[1.0, 2.0], [0.0, 0.0]]),
                                 torch.tensor([[3.0, 2.0]] * 2))
    assert got.tolist() == pytest.approx([(4 + 0) / 2, (9 + 4) / 2])


def test_cosine_hand_values() -> None:
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 0.0]])
    got = LogitCosineLoss().compute(s, t)
    assert got.tolist() == pytest.approx([0.0, 1.0, 2.0, 1 - 1 / math.sqrt(2)], abs=1e-6)


_finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_finite, _finite), min_size=3, max_size=3))
def test_cosine_is_in_0_2(pairs: list[tuple[float, float]]) -> None:
    s = torch.tensor([[p[0] for p in pairs]])
    t = torch.tensor([[p[1] for p in pairs]])
    value = LogitCosineLoss().compute(s, t).item()
    assert 0.0 <= value <= 2.0


def test_hard_ce_label_smoothing_hand_value() -> None:
    # p = softmax([0, ln 3]) = [1/4, 3/4]; target 1, eps 0.2, K 2 -> y' = [0.1, 0.9]
    logits = torch.tensor([[0.0, math.log(3.0)]])
    expected = -(0.1 * math.log(0.25) + 0.9 * math.log(0.75))
    got = HardCELoss(0.2).compute(logits, torch.tensor([1]))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    plain = HardCELoss(0.0).compute(logits, torch.tensor([1])).item()
    assert plain == pytest.approx(-math.log(0.75))


# ---------------------------------------------------------------------------------------------
# Teachers and importance
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weighting", ["mean", "confidence"])
def test_soft_targets_rows_sum_to_one(weighting: str) -> None:
    torch.manual_seed(0)
    q = teacher_soft_targets(torch.randn(3, 7, 5) * 4, 2.5, weighting)
    assert q.shape == (7, 5)
    assert torch.allclose(q.sum(-1), torch.ones(7), atol=1e-6)
    assert (q >= 0).all()


@pytest.mark.parametrize("weighting", ["mean", "confidence"])
def test_single_teacher_soft_targets_are_softmax_at_t(weighting: str) -> None:
    z = [2.0, -1.0, 0.5]
    expected = _softmax(z, 4.0)
    assert teacher_soft_targets(torch.tensor([z]), 4.0, weighting)[0].tolist() == pytest.approx(
        expected, rel=1e-6
    )
    stacked = teacher_soft_targets(torch.tensor([[z]]), 4.0, weighting)  # (M=1, B=1, K)
    assert stacked[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_mean_ensemble_hand_value() -> None:
    z = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])  # (M=2, B=1, K=2)
    # softmaxes [1/2, 1/2] and [3/4, 1/4]; mean [5/8, 3/8]
    assert teacher_soft_targets(z, 1.0, "mean")[0].tolist() == pytest.approx([0.625, 0.375])


def test_confidence_weighting_favours_the_confident_teacher() -> None:
    confident = [8.0, 0.0, 0.0]  # nearly one-hot on class 0
    unsure = [0.0, 0.3, 0.0]  # nearly uniform, slightly class 1
    z = torch.tensor([[confident], [unsure]])  # (2, 1, 3)
    mean = teacher_soft_targets(z, 1.0, "mean")[0]
    selective = teacher_soft_targets(z, 1.0, "confidence")[0]
    assert selective[0] > mean[0] > 0.5
    # and the weights are exactly softmax over teachers of max probability at T=1
    w = _softmax([max(_softmax(confident)), max(_softmax(unsure))])
    expected = [
        w[0] * a + w[1] * b for a, b in zip(_softmax(confident), _softmax(unsure), strict=True)
    ]
    assert selective.tolist() == pytest.approx(expected, rel=1e-5)


def test_soft_targets_reject_bad_shape_and_weighting() -> None:
    with pytest.raises(ConfigError):
        teacher_soft_targets(torch.zeros(5), 1.0, "mean")
    with pytest.raises(ConfigError, match="known: confidence, mean"):
        teacher_soft_targets(torch.zeros(2, 3), 1.0, "vote")


def test_importance_weights() -> None:
    probs = torch.tensor([[0.98, 0.01, 0.01], [1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1]])
    ce = torch.tensor([0.5, 1.0, 2.5], requires_grad=True)
    none = importance_weights("none", probs, None)
    assert none.tolist() == [1.0, 1.0, 1.0]
    ent = importance_weights("entropy", probs, None)
    assert ent.mean().item() == pytest.approx(1.0)
    assert ent[0] > ent[2] > ent[1] > 0  # certain > medium > uniform, which is still > 0
    loss_w = importance_weights("student_loss", None, ce)
    # ∝ CE, up to the small floor that keeps weights positive
    assert loss_w.tolist() == pytest.approx([0.5 / 4 * 3, 1.0 / 4 * 3, 2.5 / 4 * 3], rel=5e-3)
    assert not loss_w.requires_grad
    with pytest.raises(ConfigError):
        importance_weights("entropy", None, ce)
    with pytest.raises(ConfigError, match="known"):
        importance_weights("focal", probs, ce)


# ---------------------------------------------------------------------------------------------
# Feature, relation and attention losses
# ---------------------------------------------------------------------------------------------


def test_fitnet_projection_shapes_per_rank() -> None:
    fit = FitNetLoss([(4, 8, 8), (4, 7), (6,)], [(8, 4, 4), (10, 7), (12,)])
    conv2d, conv1d, linear = fit.proj
    assert isinstance(conv2d, torch.nn.Conv2d) and conv2d.weight.shape == (8, 4, 1, 1)
    assert isinstance(conv1d, torch.nn.Conv1d) and conv1d.weight.shape == (10, 4, 1)
    assert isinstance(linear, torch.nn.Linear) and linear.weight.shape == (12, 6)
    s = [torch.randn(2, 4, 8, 8), torch.randn(2, 4, 7), torch.randn(2, 6)]
    t = [torch.randn(2, 8, 4, 4), torch.randn(2, 10, 7), torch.randn(2, 12)]
    assert fit.compute(s, t).shape == (2,)


def test_fitnet_hand_value_with_pooling() -> None:
    fit = FitNetLoss([(1, 2, 2)], [(1, 1, 1)])
    with torch.no_grad():
        fit.proj[0].weight.fill_(2.0)
        fit.proj[0].bias.fill_(1.0)
    h_s = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])  # pools to 3 -> φ = 2·3 + 1 = 7
    h_t = torch.tensor([[[[4.0]]]])
    assert fit.compute([h_s], [h_t]).item() == pytest.approx((7.0 - 4.0) ** 2)
    # the teacher is the larger map here: pooled 2x2 -> 1x1
    fit_rev = FitNetLoss([(1, 1, 1)], [(1, 2, 2)])
    with torch.no_grad():
        fit_rev.proj[0].weight.fill_(1.0)
        fit_rev.proj[0].bias.zero_()
    assert fit_rev.compute([h_t], [h_s]).item() == pytest.approx((3.0 - 4.0) ** 2)


def test_fitnet_pools_pairs_of_different_rank() -> None:
    fit = FitNetLoss([(2, 3, 3), (5,)], [(4,), (2, 2, 2)])
    assert [tuple(p.weight.shape) for p in fit.proj] == [(4, 2), (2, 5)]  # linear on vectors
    with torch.no_grad():
        fit.proj[0].weight.zero_()
        fit.proj[0].bias.zero_()
    h_t = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # φ(h_S) = 0 -> mse = (1 + 4 + 9 + 16) / 4
    s_feats = [torch.randn(1, 2, 3, 3), torch.zeros(1, 5)]
    t_feats = [h_t, torch.zeros(1, 2, 2, 2)]
    fit.proj[1].bias.data.zero_()
    assert fit.compute(s_feats, t_feats).item() == pytest.approx(7.5)
    with pytest.raises(ConfigError, match="hint features"):
        FitNetLoss([(1, 2, 3, 4)], [(1, 2, 3, 4)])


def _rkd_by_loops(s: list[list[float]], t: list[list[float]]) -> tuple[float, float]:
    """Independent RKD distance and angle losses, written with plain Python loops."""
    n = len(s)

    def dist(e: list[list[float]], i: int, j: int) -> float:
        return math.dist(e[i], e[j])

    def huber(x: float) -> float:
        return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5

    def angle(e: list[list[float]], i: int, j: int, k: int) -> float:
        a = [x - y for x, y in zip(e[i], e[j], strict=True)]
        c = [x - y for x, y in zip(e[k], e[j], strict=True)]
        na, nc = math.hypot(*a), math.hypot(*c)
        if na == 0 or nc == 0:
            return 0.0
        return sum(x * y for x, y in zip(a, c, strict=True)) / (na * nc)

    pairs = [(i, j) for i, j in product(range(n), repeat=2) if i != j]
    mu_s = sum(dist(s, i, j) for i, j in pairs) / len(pairs)
    mu_t = sum(dist(t, i, j) for i, j in pairs) / len(pairs)
    d = sum(huber(dist(s, i, j) / mu_s - dist(t, i, j) / mu_t) for i, j in pairs) / len(pairs)
    triples = list(product(range(n), repeat=3))
    a = sum(huber(angle(s, *ijk) - angle(t, *ijk)) for ijk in triples) / len(triples)
    return d, a


def test_rkd_matches_loop_implementation() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(5, 3), torch.randn(5, 4) * 3
    d, a = _rkd_by_loops(s.tolist(), t.tolist())
    assert RKDLoss.distance_loss(s, t).item() == pytest.approx(d, rel=1e-4)
    assert RKDLoss.angle_loss(s, t).item() == pytest.approx(a, rel=1e-4)
    assert RKDLoss().compute(s, t).item() == pytest.approx(d + 2 * a, rel=1e-4)


def test_rkd_zero_for_identical_and_scale_invariant() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(6, 4), torch.randn(6, 4)
    assert RKDLoss().compute(s, s.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert RKDLoss().compute(s, t).item() > 1e-3
    for part in (RKDLoss.distance_loss, RKDLoss.angle_loss):
        assert part(s * 7.5, t).item() == pytest.approx(part(s, t).item(), rel=1e-4)
        assert part(s, t * 0.1).item() == pytest.approx(part(s, t).item(), rel=1e-4)


def test_rkd_single_sample_is_zero_not_nan() -> None:
    s = torch.randn(1, 4, requires_grad=True)
    loss = RKDLoss().compute(s, torch.randn(1, 4))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(s.grad).all()


def test_gram_hand_value_and_zero_for_identical() -> None:
    h_s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # ψ = I
    h_t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # ψ off-diagonal 1/√2
    expected = 2 * (1 / math.sqrt(2)) ** 2 / 2**2
    assert GramLoss().compute(h_s, h_t).item() == pytest.approx(expected, rel=1e-6)
    torch.manual_seed(0)
    h = torch.randn(5, 3, 2, 2)
    assert GramLoss().compute(h, h.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # cosine ignores scale
    assert GramLoss().compute(h * 4, h).item() == pytest.approx(0.0, abs=1e-6)


def test_attention_hand_value() -> None:
    h_s = torch.tensor([[[[1.0, 0.0]]]])  # Q = [1, 0]
    h_t = torch.tensor([[[[0.0, 2.0]]]])  # Q = [0, 4] -> [0, 1]
    assert AttentionLoss().compute([h_s], [h_t]).item() == pytest.approx(math.sqrt(2))
    seq_s = torch.tensor([[[1.0, 1.0], [1.0, 1.0]]])  # (B=1, C=2, L=2): Q = [1, 1]/√2
    seq_t = torch.tensor([[[3.0, 0.0]]])  # Q = [1, 0]
    expected = math.hypot(1 / math.sqrt(2) - 1, 1 / math.sqrt(2))
    assert AttentionLoss().compute([seq_s], [seq_t]).item() == pytest.approx(expected, rel=1e-6)


def test_attention_zero_for_identical_with_finite_gradient() -> None:
    torch.manual_seed(0)
    h = torch.randn(3, 4, 6, 6, requires_grad=True)
    loss = AttentionLoss().compute([h], [h.detach().clone() * 2]).mean()  # channel scale cancels
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(h.grad).all()


def test_attention_pools_mismatched_spatial_sizes() -> None:
    torch.manual_seed(0)
    small = torch.randn(2, 5, 4, 4)
    big = small.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # same map at 8x8
    out = AttentionLoss().compute([big, torch.randn(2, 3, 8)], [small, torch.randn(2, 7, 5)])
    assert out.shape == (2,) and torch.isfinite(out).all()
    assert AttentionLoss.pair(big, small).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    with pytest.raises(ConfigError):
        AttentionLoss.pair(big, torch.randn(2, 3, 8))


# ---------------------------------------------------------------------------------------------
# DistillLoss
# ---------------------------------------------------------------------------------------------


Batch = tuple[Tensor, Tensor, Tensor]  # student logits (B, K), targets (B,), teacher (B, K)


@pytest.fixture
def batch() -> Batch:
    torch.manual_seed(0)
    return torch.randn(8, K, requires_grad=True), torch.arange(8) % K, torch.randn(8, K) * 2


def test_scratch_equals_plain_cross_entropy(batch: Batch) -> None:
    logits, y, teacher = batch
    loss = DistillLoss(KDConfig(soft_loss="none", alpha=0.0), K)
    for t in (None, teacher):
        total, parts = loss(logits, y, t, progress=0.5)
        assert total.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
        assert set(parts) == {"ce", "total"}


def test_no_teacher_gives_hard_term_full_weight(batch: Batch) -> None:
    logits, y, _ = batch
    total, parts = DistillLoss(KDConfig(alpha=0.9), K)(logits, y, None, progress=0.0)
    assert "kl" not in parts
    assert total.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_kl_composition_matches_independent_formula(batch: Batch) -> None:
    logits, y, teacher = batch
    kd = KDConfig(alpha=0.7, temperature=3.0, label_smoothing=0.1)
    total, parts = DistillLoss(kd, K)(logits, y, teacher, progress=0.3)
    log_q_s, q_t = F.log_softmax(logits / 3.0, -1), F.softmax(teacher / 3.0, -1)
    soft = F.kl_div(log_q_s, q_t, reduction="batchmean") * 9.0
    hard = F.cross_entropy(logits, y, label_smoothing=0.1)
    assert parts["kl"] == pytest.approx(soft.item(), rel=1e-5)
    assert parts["ce"] == pytest.approx(hard.item(), rel=1e-5)
    assert total.item() == pytest.approx(0.7 * soft.item() + 0.3 * hard.item(), rel=1e-5)
    assert parts["total"] == pytest.approx(total.item())


def test_temperature_follows_progress(batch: Batch) -> None:
    logits, y, teacher = batch
    loss = DistillLoss(KDConfig(temperature=5.0, t_schedule="linear"), K)
    _, end = loss(logits, y, teacher, progress=1.0)  # linear schedule ends at T = 1
    at_t1 = F.kl_div(F.log_softmax(logits, -1), F.softmax(teacher, -1), reduction="batchmean")
    assert end["kl"] == pytest.approx(at_t1.item(), rel=1e-5)
    _, start = loss(logits, y, teacher, progress=0.0)
    assert start["kl"] != pytest.approx(end["kl"], rel=1e-3)


def test_multi_teacher_mean_in_distill_loss(batch: Batch) -> None:
    logits, y, teacher = batch
    teachers = torch.stack([teacher, -teacher, teacher * 0.5])  # (M=3, B, K)
    _, parts = DistillLoss(KDConfig(temperature=2.0), K)(logits, y, teachers, progress=0.0)
    target = torch.stack([F.softmax(t / 2.0, -1) for t in teachers]).mean(0)
    expected = F.kl_div(F.log_softmax(logits / 2.0, -1), target, reduction="batchmean") * 4.0
    assert parts["kl"] == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("soft", ["mse", "cosine"])
def test_logit_soft_losses_in_distill_loss(soft: str, batch: Batch) -> None:
    logits, y, teacher = batch
    total, parts = DistillLoss(KDConfig(soft_loss=soft, alpha=0.5), K)(
        logits, y, teacher, progress=0.0
    )
    expected = TERMS.get(soft)().compute(logits, teacher).mean().item()
    assert parts[soft] == pytest.approx(expected, rel=1e-6)
    total.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_importance_weights_scale_per_sample_terms(batch: Batch) -> None:
    logits, y, teacher = batch
    kd = KDConfig(importance="student_loss", alpha=0.5)
    _, parts = DistillLoss(kd, K)(logits, y, teacher, progress=0.0)
    ce = F.cross_entropy(logits, y, reduction="none").detach()
    w = ce / ce.mean()
    assert parts["ce"] == pytest.approx((w * ce).mean().item(), rel=1e-2)
    assert parts["ce"] > F.cross_entropy(logits, y).item()  # hard samples weigh more


def test_entropy_importance_weights_the_soft_term(batch: Batch) -> None:
    logits, y, teacher = batch
    kd = KDConfig(importance="entropy", temperature=2.0)
    _, parts = DistillLoss(kd, K)(logits, y, teacher, progress=0.0)
    p = F.softmax(teacher, -1)
    w = 1 - (-(p * p.log()).sum(-1)) / math.log(K)
    w = w / w.mean()
    per_sample = 4.0 * F.kl_div(
        F.log_softmax(logits / 2.0, -1), F.softmax(teacher / 2.0, -1), reduction="none"
    ).sum(-1)
    assert parts["kl"] == pytest.approx((w * per_sample).mean().item(), rel=1e-2)
    assert parts["kl"] != pytest.approx(per_sample.mean().item(), rel=2e-2)


def test_entropy_importance_without_teacher_falls_back(batch: Batch) -> None:
    logits, y, _ = batch
    total, _ = DistillLoss(KDConfig(importance="entropy"), K)(logits, y, None, progress=0.0)
    assert total.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


S_SHAPES = [(4, 8, 8), (8, 4, 4), (16,)]
T_SHAPES = [(6, 8, 8), (12, 4, 4), (10, 2, 2), (20,)]


def _features(shapes: list[tuple[int, ...]], grad: bool) -> list[Tensor]:
    return [torch.randn(8, *s, requires_grad=grad) for s in shapes]


@pytest.mark.parametrize("mapping", ["uniform", "bottom_up", "top_down", "learned"])
def test_feature_terms_backpropagate_to_student_and_projections(
    mapping: str, batch: Batch
) -> None:
    logits, y, teacher = batch
    kd = KDConfig(
        hint_weight=1.0,
        hint_mapping=mapping,
        relation="rkd",
        relation_weight=0.5,
        attention_weight=2.0,
    )
    loss = DistillLoss(kd, K, S_SHAPES, T_SHAPES)
    s_feats, t_feats = _features(S_SHAPES, True), _features(T_SHAPES, True)
    total, parts = loss(
        logits, y, teacher, progress=0.5, student_features=s_feats, teacher_features=t_feats
    )
    assert set(parts) == {"kl", "ce", "fitnet", "rkd", "attention", "total"}
    expected = 0.9 * parts["kl"] + 0.1 * parts["ce"] + parts["fitnet"]
    expected += 0.5 * parts["rkd"] + 2.0 * parts["attention"]
    assert total.item() == pytest.approx(expected, rel=1e-5)
    total.backward()
    assert logits.grad is not None and all(f.grad is not None for f in s_feats)
    params = list(loss.parameters())
    assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert all(f.grad is None for f in t_feats)  # the teacher is never trained


def test_pairs_follow_the_mapping() -> None:
    kd = KDConfig(hint_weight=1.0, hint_mapping="top_down", attention_weight=1.0)
    loss = DistillLoss(kd, K, S_SHAPES, T_SHAPES)
    assert loss.terms["fitnet"].pairs == [(0, 1), (1, 2), (2, 3)]
    assert loss.terms["attention"].pairs == [(0, 1), (1, 2)]  # (16,) -> (20,): no spatial dims
    assert len(loss.terms["fitnet"].proj) == 3


def test_missing_shapes_raise_at_construction() -> None:
    for kd in (
        KDConfig(hint_weight=1.0),
        KDConfig(relation="gram", relation_weight=1.0),
        KDConfig(attention_weight=1.0),
    ):
        with pytest.raises(ConfigError, match="feature shapes"):
            DistillLoss(kd, K)
    DistillLoss(KDConfig(relation="gram", relation_weight=0.0), K)  # weight 0: nothing needed


def test_attention_without_spatial_pairs_raises() -> None:
    with pytest.raises(ConfigError, match="spatial"):
        DistillLoss(KDConfig(attention_weight=1.0), K, [(16,)], [(20,)])


def test_missing_or_miscounted_features_raise(batch: Batch) -> None:
    logits, y, teacher = batch
    loss = DistillLoss(KDConfig(relation="gram", relation_weight=1.0), K, S_SHAPES, T_SHAPES)
    with pytest.raises(ConfigError, match="features"):
        loss(logits, y, teacher, progress=0.0)
    with pytest.raises(ConfigError, match="features"):
        loss(
            logits,
            y,
            teacher,
            progress=0.0,
            student_features=_features(S_SHAPES[:2], False),
            teacher_features=_features(T_SHAPES, False),
        )


def test_teacher_shape_mismatch_raises(batch: Batch) -> None:
    logits, y, _ = batch
    with pytest.raises(ConfigError, match="do not match"):
        DistillLoss(KDConfig(), K)(logits, y, torch.randn(8, K + 1), progress=0.0)


def test_invalid_recipe_raises() -> None:
    with pytest.raises(ConfigError):
        DistillLoss(KDConfig(alpha=1.5), K)


def test_kd_divergence_values() -> None:
    z = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]])
    assert kd_divergence(z, z, 4.0) == pytest.approx(0.0, abs=1e-6)
    z_t = torch.tensor([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    expected = 0.0
    for s_row, t_row in zip(z.tolist(), z_t.tolist(), strict=True):
        q_s, q_t = _softmax(s_row, 2.0), _softmax(t_row, 2.0)
        expected += 4.0 * sum(t * math.log(t / s) for t, s in zip(q_t, q_s, strict=True)) / 2
    assert kd_divergence(z, z_t, 2.0) == pytest.approx(expected, rel=1e-5)
    assert kd_divergence(z, z_t.unsqueeze(0), 2.0) == pytest.approx(expected, rel=1e-5)


def test_student_logits_must_match_num_classes(batch: Batch) -> None:
    logits, y, _ = batch
    with pytest.raises(ConfigError, match=f"\\(B, {K + 1}\\)"):
        DistillLoss(KDConfig(), K + 1)(logits, y, None, progress=0.0)
