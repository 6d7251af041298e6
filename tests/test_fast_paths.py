"""The trainer's fast paths compute exactly what the plain paths compute.

- ``autokd.distill.fused``: Hinton KD + CE as one autograd node (value and gradient in closed
  form) must equal the term-by-term loss for every temperature, weight, smoothing and teacher
  count, and must not be used where the recipe has anything else.
- ``autokd.inference``: a teacher's BatchNorm-folded channels-last graph must give eager's
  logits, and must be refused when it would not.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autokd.distill import DistillLoss, KDConfig
from autokd.inference import fast_inference


def _both(loss: DistillLoss, z: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
          ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    z = z.clone().requires_grad_(True)
    fused = loss.total(z, y, t, progress=0.4)
    g_fused, = torch.autograd.grad(fused, z)
    keep, loss._fused = loss._fused, None
    try:
        plain = loss.total(z, y, t, progress=0.4)
    finally:
        loss._fused = keep
    g_plain, = torch.autograd.grad(plain, z)
    return (fused, g_fused), (plain, g_plain)


@pytest.mark.parametrize(("T", "alpha", "smoothing", "teachers"),
                         [(4.0, 0.9, 0.0, 1), (1.0, 0.5, 0.1, 1), (2.5, 1.0, 0.0, 2),
                          (3.0, 0.3, 0.2, 3), (8.0, 0.05, 0.0, 1)])
def test_fused_kd_equals_the_terms(T: float, alpha: float, smoothing: float,
                                   teachers: int) -> None:
    torch.manual_seed(0)
    loss = DistillLoss(KDConfig(temperature=T, alpha=alpha, label_smoothing=smoothing), 7)
    assert loss._fused is not None
    z, y = torch.randn(33, 7) * 3, torch.randint(0, 7, (33,))
    t = torch.randn(teachers, 33, 7) * 3
    (fv, fg), (pv, pg) = _both(loss, z, y, t)
    assert torch.allclose(fv, pv, rtol=1e-6, atol=1e-6)
    assert torch.allclose(fg, pg, rtol=1e-5, atol=1e-8)


def test_fused_kd_is_seen_to_differ_when_a_weight_is_wrong() -> None:
    """The comparison above can fail: the fused node with another CE weight disagrees."""
    loss = DistillLoss(KDConfig(temperature=4.0, alpha=0.9), 5)
    z, y, t = torch.randn(16, 5), torch.randint(0, 5, (16,)), torch.randn(1, 16, 5)
    loss._fused = (0.9, 0.2)
    (_, fg), (_, pg) = _both(loss, z, y, t)
    assert not torch.allclose(fg, pg, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kd", [KDConfig(soft_loss="mse"), KDConfig(importance="entropy"),
                                KDConfig(soft_loss="none")])
def test_fused_kd_only_for_plain_hinton_kd(kd: KDConfig) -> None:
    assert DistillLoss(kd, 5)._fused is None


def test_fused_kd_without_teacher_logits_is_plain_cross_entropy() -> None:
    loss = DistillLoss(KDConfig(temperature=4.0, alpha=0.9), 5)
    z, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert torch.allclose(loss.total(z, y, None, progress=0.0),
                          nn.functional.cross_entropy(z, y))


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    for m in net.modules():  # non-trivial running statistics, so folding changes weights
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return net.eval()


def test_folded_teacher_matches_eager() -> None:
    net, x = _cnn(), torch.randn(32, 1, 8, 8)
    fast = fast_inference(net, x[:8])
    assert fast is not None and fast is not net
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())  # folded away
    with torch.no_grad():
        assert torch.allclose(fast(x), net(x), atol=1e-5)


def test_folded_teacher_is_refused_when_it_differs_or_cannot_help() -> None:
    net, x = _cnn(), torch.randn(8, 1, 8, 8)
    assert fast_inference(net, x) is not None
    assert fast_inference(net, x, tol=0.0) is None  # folding rounds: not bit-equal, refused
    assert fast_inference(net.train(), x) is None  # training mode: statistics still move
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    assert fast_inference(plain, x) is None  # nothing to fold

    class Branchy(nn.Module):  # data-dependent control flow: fx cannot trace it
        def __init__(self) -> None:
            super().__init__()
            self.body = _cnn()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x) if x.sum() > 0 else -self.body(x)

    assert fast_inference(Branchy().eval(), x) is None


def test_teacher_outputs_use_the_folded_graph_and_equal_eager() -> None:
    from autokd.teachers import _Member

    net, x = _cnn(), torch.randn(40, 1, 8, 8)
    member = _Member("t", "module", "h", module=net)
    got = member.logits(x, batch=16)
    assert member._fast["cpu"] is not net
    with torch.no_grad():
        assert torch.allclose(got, net(x), atol=1e-5)
