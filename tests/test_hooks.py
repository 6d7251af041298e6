"""Feature capture by module path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autokd.distill.hooks import FeatureHooks
from autokd.errors import ConfigError


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1)
        )
        self.rnn = nn.GRU(8, 6, batch_first=True)  # returns a tuple
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)  # (B, 8, 4, 4)
        seq, _ = self.rnn(h.flatten(2).transpose(1, 2))  # (B, 16, 6)
        return self.head(seq.mean(1))  # (B, 3)


@pytest.fixture
def model() -> _Tiny:
    torch.manual_seed(0)
    return _Tiny()


def test_captures_shapes_in_path_order(model: _Tiny) -> None:
    x = torch.randn(2, 1, 8, 8)
    with FeatureHooks(model, ["head", "body.0", "body.2", "rnn"]) as hooks:
        model(x)
        shapes = [tuple(f.shape) for f in hooks.features]
    assert shapes == [(2, 3), (2, 4, 8, 8), (2, 8, 4, 4), (2, 16, 6)]


def test_captured_values_are_the_module_outputs(model: _Tiny) -> None:
    x = torch.randn(2, 1, 8, 8)
    with FeatureHooks(model, ["body.0", ""]) as hooks:  # "" is the model itself
        out = model(x)
        first, whole = hooks.features
    assert torch.equal(first, model.body[0](x))
    assert torch.equal(whole, out)


def test_features_keep_the_graph_for_students(model: _Tiny) -> None:
    with FeatureHooks(model, ["body.2"]) as hooks:
        model(torch.randn(2, 1, 8, 8))
        (feat,) = hooks.features
    feat.pow(2).mean().backward()
    assert model.body[2].weight.grad is not None


def test_works_under_no_grad_and_keeps_latest_forward(model: _Tiny) -> None:
    with FeatureHooks(model, ["body.0"]) as hooks, torch.no_grad():
        model(torch.zeros(1, 1, 8, 8))
        model(torch.ones(3, 1, 8, 8))
        (feat,) = hooks.features
    assert feat.shape == (3, 4, 8, 8)  # the second (latest) forward
    assert not feat.requires_grad


def test_exit_removes_hooks_and_features_stay_readable(model: _Tiny) -> None:
    with FeatureHooks(model, ["body.0"]) as hooks:
        model(torch.zeros(1, 1, 8, 8))
    assert not model.body[0]._forward_hooks
    model(torch.zeros(5, 1, 8, 8))  # not captured any more
    assert hooks.features[0].shape[0] == 1


def test_clear_then_missing_forward_raises(model: _Tiny) -> None:
    hooks = FeatureHooks(model, ["body.0"])
    model(torch.zeros(1, 1, 8, 8))
    hooks.clear()
    with pytest.raises(ConfigError, match="did not run"):
        _ = hooks.features
    hooks.remove()
    hooks.remove()  # idempotent
    assert not model.body[0]._forward_hooks


def test_unknown_path_lists_valid_names(model: _Tiny) -> None:
    with pytest.raises(ConfigError) as err:
        FeatureHooks(model, ["body.9"])
    message = str(err.value)
    assert "body.9" in message and "body.0" in message and "head" in message
    assert not model.body[0]._forward_hooks  # nothing registered on failure
