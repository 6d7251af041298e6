"""The teacher's fast inference path (``autokd.inference``): its BatchNorm-folded
channels-last graph must give eager's logits, and must be refused when it would not."""

from __future__ import annotations

import torch
from torch import nn

from autokd.inference import fast_inference


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
