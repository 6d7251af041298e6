"""The CUDA paths that can be checked without a GPU: device choice and its errors, what the
trainer moves once and in which layout, and CUDA-event latency timing with stand-in events.

None of this runs a kernel on a GPU; ``benchmarks/gpu.py`` is the check for a CUDA machine.
"""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from autokd import device as device_mod
from autokd import train
from autokd.cli import main
from autokd.config import TrainConfig
from autokd.cost import latency
from autokd.data import DataSplits
from autokd.device import resolve_device, to_device, uses_channels_last
from autokd.distill import KDConfig
from autokd.errors import ConfigError
from autokd.models import build_student

NO_CUDA = "no CUDA device is available"


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_picks_cuda_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"


def test_cuda_without_a_device_is_a_config_error(no_cuda: None) -> None:
    with pytest.raises(ConfigError, match=NO_CUDA):
        resolve_device("cuda:0")


@pytest.mark.parametrize("argv", [
    ["distill", "--dataset", "wine", "--device", "cuda", "--epochs", "1"],
    ["distill", "--dataset", "wine", "--device", "cpu", "--latency-device", "cuda"],
    ["teacher", "train", "--dataset", "wine", "--device", "cuda", "--out", "unused.pt"],
    ["search", "--dataset", "wine", "--device", "cuda", "--budget", "1"],
    ["worker", "unused", "--storage", "sqlite:///unused.db", "--device", "cuda"],
])
def test_cli_cuda_without_a_device_is_one_line_exit_2(capsys: pytest.CaptureFixture,
                                                      no_cuda: None,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      argv: list[str]) -> None:
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("data was loaded before the device was checked")

    monkeypatch.setattr("autokd.data.load_data", refuse)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autokd: error: ") and NO_CUDA in err[0]


def test_channels_last_only_for_images_on_cuda() -> None:
    images, table = torch.zeros(2, 3, 4, 4), torch.zeros(2, 5)
    assert uses_channels_last(torch.device("cuda"), images)
    assert not uses_channels_last(torch.device("cpu"), images)
    assert not uses_channels_last(torch.device("cuda"), table)


def test_to_device_on_cpu_is_free_and_keeps_the_layout() -> None:
    x = torch.randn(4, 3, 5, 5)
    assert to_device(x, torch.device("cpu")) is x
    nhwc = to_device(x, torch.device("cpu"), channels_last=True)
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nhwc, x)


def test_to_an_accelerator_goes_through_pinned_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """``meta`` stands in for the GPU: the copy must be pinned and asynchronous."""
    pinned, moves = [], []
    real_to = torch.Tensor.to

    def fake_pin(self: torch.Tensor) -> torch.Tensor:
        pinned.append(self.shape)
        return self

    def spy_to(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        moves.append(kwargs.get("non_blocking", False))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    monkeypatch.setattr(torch.Tensor, "to", spy_to)
    out = device_mod.to_device(torch.randn(4, 3, 5, 5), torch.device("meta"), channels_last=True)
    assert out.device.type == "meta" and pinned == [(4, 3, 5, 5)] and moves == [True]
    assert out.is_contiguous(memory_format=torch.channels_last)


def _train_cnn(data: DataSplits, layouts: list[bool] | None = None) -> train.TrainResult:
    torch.manual_seed(0)
    model = build_student("cnn", {"depth": 2, "widths": [4, 8]}, data.input_shape,
                          data.num_classes)
    if layouts is not None:
        model.register_forward_pre_hook(lambda m, args: layouts.append(
            args[0].is_contiguous(memory_format=torch.channels_last) and args[0].shape[2] > 1)
            if m.training else None)
    trainer = train.Trainer(model, data, TrainConfig(epochs=2, batch_size=64),
                            KDConfig(soft_loss="none", alpha=0.0))
    assert trainer.channels_last == (layouts is not None)
    return trainer.fit()


def test_trainer_feeds_channels_last_batches_and_hands_back_the_usual_layout(
        digits: DataSplits, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA layout choice, forced on the CPU (where channels-last convolutions also run):
    same student as the default layout, every training batch NHWC, NCHW weights at the end."""
    plain = _train_cnn(digits)
    monkeypatch.setattr(train, "uses_channels_last", lambda device, x: x.ndim == 4)
    layouts: list[bool] = []
    nhwc = _train_cnn(digits, layouts)
    assert layouts and all(layouts)
    conv = next(m for m in nhwc.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous()  # NCHW again for CPU latency and export
    assert nhwc.val["accuracy"] == pytest.approx(plain.val["accuracy"], abs=0.02)
    for a, b in zip(plain.model.state_dict().values(), nhwc.model.state_dict().values()):
        torch.testing.assert_close(a.float(), b.float(), atol=1e-3, rtol=1e-3)


class _FakeEvent:
    """Behaves like ``torch.cuda.Event`` for a CPU model: host clock at ``record``."""

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.t: float | None = None
        self.synced = False

    def record(self) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        self.synced = True

    def elapsed_time(self, end: _FakeEvent) -> float:
        assert end.synced, "read before the end event completed"
        return (end.t - self.t) * 1e3


class _Sleeper(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.002)
        return x


def test_cuda_event_timer_reports_seconds_per_forward() -> None:
    seconds = latency._time_block_cuda(_Sleeper(), torch.zeros(1), 5, torch.device("cpu"),
                                       event=_FakeEvent)
    assert 0.0019 < seconds < 0.02


def test_latency_picks_cuda_events_on_cuda_only() -> None:
    assert latency.block_timer(torch.device("cuda:0")) is latency._time_block_cuda
    assert latency.block_timer(torch.device("cpu")) is latency._time_block
