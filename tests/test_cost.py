"""Tests for autokd.cost: exact hand-computed FLOPs, the torch cross-check, size and latency."""

from __future__ import annotations

import logging
import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autokd import cost
from autokd.config import CostConfig
from autokd.errors import ConfigError

# Small, fast latency settings: the tests check the mechanics, not the numbers.
FAST = {"warmup": 1, "repeats": 3, "min_block_s": 0.002}


class Attention(nn.Module):
    """A tiny self-attention block on (B, L, C) using F.scaled_dot_product_attention."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, c = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, L, D)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, D)
        return self.proj(y.transpose(1, 2).reshape(b, length, c))


class MHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


class Probe(nn.Module):
    """Records the state torch is in while the forward runs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.seen: list[tuple[int, bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = (torch.get_num_threads(), self.training, torch.is_inference_mode_enabled())
        self.seen.append(state)
        return self.fc(x)


def small_cnn(width: int = 8) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, 10),
    )


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 32), nn.GELU(), nn.Dropout(0.1), nn.Linear(32, 10))


def conv1d_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(2, 4, 3),
        nn.ReLU(),
        nn.Conv1d(4, 4, 3, padding=1, groups=2),
        nn.Flatten(),
        nn.Linear(32, 5),
    )


# --------------------------------------------------------------------------- exact FLOPs


@pytest.mark.parametrize(
    ("model", "shape", "expected"),
    [
        # output 3x3, 9 MACs each
        (nn.Conv2d(1, 1, 3, bias=False), (1, 5, 5), 81),
        # bias is not counted
        (nn.Conv2d(1, 1, 3), (1, 5, 5), 81),
        (nn.Linear(64, 10), (64,), 640),
        # 4 out channels x 8 positions x (2 in x 3 taps)
        (nn.Conv1d(2, 4, 3), (2, 10), 192),
        # depthwise: 4 channels x 36 positions x 9 taps
        (nn.Conv2d(4, 4, 3, padding=1, groups=4), (4, 6, 6), 1296),
        # stride 2: 2 out x (3x3 positions) x (1 in x 9 taps)
        (nn.Conv2d(1, 2, 3, stride=2, padding=1), (1, 6, 6), 162),
    ],
)
def test_flops_of_single_layers_are_exact(model: nn.Module, shape: tuple, expected: int) -> None:
    assert cost.count_flops(model, shape) == expected


def test_small_cnn_flops_by_hand() -> None:
    conv1 = 8 * (8 * 8) * (3 * 3 * 3)  # out ch x positions x (in ch x taps) = 13824
    conv2 = 16 * (4 * 4) * (8 * 3 * 3)  # after the 2x2 max pool = 18432
    linear = 16 * 10
    # BN, ReLU, max pool and adaptive avg pool cost nothing by convention
    assert cost.count_flops(small_cnn(), (3, 8, 8)) == conv1 + conv2 + linear


def test_conv1d_net_flops_by_hand() -> None:
    conv1 = 4 * 8 * (2 * 3)  # 192
    conv2 = 4 * 8 * (2 * 3)  # groups=2: each output sees 2 input channels
    assert cost.count_flops(conv1d_net(), (2, 10)) == conv1 + conv2 + 32 * 5


def test_attention_flops_by_hand() -> None:
    length, dim, heads, head_dim = 5, 16, 2, 8
    qkv = length * dim * 3 * dim
    sdpa = 2 * heads * length * length * head_dim  # Q K^T and A V
    proj = length * dim * dim
    assert cost.count_flops(Attention(), (length, dim)) == qkv + sdpa + proj


def test_matmul_broadcasts_over_second_operand() -> None:
    class BatchedRight(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 4, 5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.matmul(x[0], self.w)  # (2, 4) @ (3, 4, 5) -> (3, 2, 5)

    assert cost.count_flops(BatchedRight(), (2, 4)) == 3 * 2 * 4 * 5


@pytest.mark.parametrize(
    ("build", "shape"),
    [
        (small_cnn, (3, 8, 8)),
        (mlp, (64,)),
        (conv1d_net, (2, 10)),
        (Attention, (5, 16)),
        (MHA, (5, 16)),
    ],
    ids=["cnn", "mlp", "conv1d", "sdpa", "multihead"],
)
def test_fvcore_count_matches_torch_flop_counter(build, shape: tuple) -> None:
    model = build()
    flops = cost.count_flops(model, shape)
    assert flops > 0
    assert flops == cost.torch_flop_count(model, shape)


def test_flop_count_restores_train_mode_and_running_stats() -> None:
    model = small_cnn().train()
    model[1].eval()  # mixed modes must come back exactly
    before = model[1].running_mean.clone()
    cost.count_flops(model, (3, 8, 8))
    cost.torch_flop_count(model, (3, 8, 8))
    assert model.training and model[0].training and not model[1].training
    assert torch.equal(model[1].running_mean, before)


def test_unknown_contraction_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    class MatVec(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.mv(self.w, x[0])

    with caplog.at_level(logging.WARNING, logger="autokd.cost"):
        cost.count_flops(MatVec(), (4,))
    assert "aten::mv" in caplog.text


def test_bad_input_shape_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="input_shape"):
        cost.count_flops(nn.Linear(4, 2), (0,))


# --------------------------------------------------------------------------- size


def test_count_params_of_known_net() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 10))
    # conv 8*27+8, BN weight+bias 16 (running stats are buffers), linear 80+10
    assert cost.count_params(net) == 224 + 16 + 90


def test_count_params_counts_shared_weights_once() -> None:
    layer = nn.Linear(4, 4)
    assert cost.count_params(nn.Sequential(layer, layer)) == 20


def test_serialized_bytes_exceed_raw_weights_and_grow_with_width() -> None:
    small, large = small_cnn(4), small_cnn(8)
    assert cost.serialized_bytes(small) > 4 * cost.count_params(small)
    assert cost.serialized_bytes(large) > cost.serialized_bytes(small)


def test_cpu_peak_memory_estimate_is_params_input_and_outputs() -> None:
    net = nn.Sequential(nn.Linear(64, 10), nn.ReLU(inplace=True))
    # weights (640 + 10) + input 64 + one output 10 (in-place ReLU and the container reuse it)
    assert cost.measure_peak_memory(net, (64,)) == 4 * (650 + 64 + 10)


# --------------------------------------------------------------------------- latency


def test_latency_is_positive_and_finite() -> None:
    ms, cv = cost.measure_latency(small_cnn(), (3, 8, 8), batch_size=4, **FAST)
    assert math.isfinite(ms) and ms > 0
    assert math.isfinite(cv) and cv >= 0


def test_latency_pins_threads_and_restores_them() -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        probe = Probe()
        cost.measure_latency(probe, (4,), threads=1, **FAST)
        assert {threads for threads, _, _ in probe.seen} == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_latency_runs_eval_inference_and_restores_train_mode() -> None:
    probe = Probe().train()
    cost.measure_latency(probe, (4,), **FAST)
    assert probe.seen and all(not training and inference for _, training, inference in probe.seen)
    assert probe.training and probe.fc.training


def test_latency_blocks_last_min_block_s() -> None:
    probe = Probe()
    cost.measure_latency(probe, (4,), warmup=1, repeats=2, min_block_s=0.01)
    # one warm-up call, then two blocks of many calls each (a forward is far below 10 ms)
    assert len(probe.seen) > 5


@pytest.mark.parametrize(
    "kwargs", [{"batch_size": 0}, {"repeats": 0}, {"warmup": -1}, {"min_block_s": 0.0}]
)
def test_latency_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        cost.measure_latency(nn.Linear(4, 2), (4,), **kwargs)


def test_fix_allocator_is_idempotent() -> None:
    first = cost.fix_allocator()
    assert isinstance(first, bool)
    assert cost.fix_allocator() is first


# --------------------------------------------------------------------------- report


def test_measure_cost_without_latency_leaves_latency_fields_none() -> None:
    model = small_cnn()
    for report in (
        cost.measure_cost(model, (3, 8, 8), latency=False),
        cost.measure_cost(model, (3, 8, 8), CostConfig(latency=False)),
    ):
        assert report.latency_ms is None and report.latency_ms_batch is None
        assert report.latency_cv is None
        assert report.flops == cost.count_flops(model, (3, 8, 8))
        assert report.params == cost.count_params(model)


def test_measure_cost_is_fast_and_fills_every_field() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10)
    )
    start = time.perf_counter()
    report = cost.measure_cost(model, (1, 8, 8))
    assert time.perf_counter() - start < 1.0
    assert report.latency_batch_size == CostConfig().batch_size
    assert report.latency_fallback is None  # eager PyTorch was asked for and used
    assert all(value is not None for key, value in report.to_dict().items()
               if key != "latency_fallback")
    assert report.latency_runtime == "torch"
    assert report.latency_ms_batch > report.latency_ms  # 64 samples take longer than one


def test_report_to_dict_keys() -> None:
    report = cost.measure_cost(nn.Linear(4, 2), (4,), latency=False)
    assert set(report.to_dict()) == {
        "params",
        "flops",
        "bytes",
        "latency_ms",
        "latency_ms_batch",
        "latency_batch_size",
        "latency_cv",
        "peak_memory_bytes",
        "latency_runtime",
        "latency_fallback",
    }
    assert report.to_dict()["params"] == 10
