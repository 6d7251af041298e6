"""Per-block latency tables for mbv2 and resnet students (``autokd.block_latency``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from torch import nn

from autokd.block_latency import build_block_table, predict_latency, student_units
from autokd.errors import ConfigError
from autokd.latency_table import TableSettings, load_table
from autokd.models import build_student

SHAPE, K = (1, 16, 16), 10
SPECS = {
    "mbv2": [{"stages": 2, "depths": [1, 2], "widths": [8, 16], "kernel": [3, 5]},
             {"stages": 2, "depths": [2, 1], "widths": [16, 16], "se": True,
              "activation": "hardswish", "expansion": [1, 6], "head_width": 32}],
    "resnet": [{"stages": 2, "widths": [8, 16]},
               {"stem": "conv3x3", "stages": 3, "depths": [1, 2, 1], "widths": [8, 8, 16]}],
}
FAST = TableSettings(warmup=1, repeats=1, min_block_s=0.0005, passes=1)


def _by_params(module: nn.Module, shape: tuple[int, ...]) -> float:
    """A deterministic stand-in for timing: 1 ms per 1000 parameters, plus 0.01 ms."""
    return 0.01 + sum(p.numel() for p in module.parameters()) / 1000


@pytest.mark.parametrize("family", ["mbv2", "resnet"])
def test_table_covers_every_unit_and_sums(family: str) -> None:
    table = build_block_table(family, SPECS[family], SHAPE, K, measure=_by_params,
                              settings=FAST)
    for spec in SPECS[family]:
        model = build_student(family, spec, SHAPE, K)
        units = student_units(model, SHAPE)
        assert all(u.key in table.entries for u in units)
        # units partition the model: their parameters add up to the whole
        assert sum(sum(p.numel() for p in u.module.parameters()) for u in units) == sum(
            p.numel() for p in model.parameters())
        parts = sum(table.entries[u.key] for u in units)
        assert predict_latency(table, model, SHAPE) == pytest.approx(max(
            table.fix("1").predict(parts, len(units)), max(table.entries[u.key] for u in units)))
    assert len(table.calibration) == len(SPECS[family])


def test_keys_tell_kernel_stride_se_and_activation_apart() -> None:
    keys = set()
    for spec in ({}, {"kernel": 5}, {"se": True}, {"activation": "hardswish"},
                 {"expansion": 6}):
        model = build_student("mbv2", {"stages": 1, "depths": 1, **spec}, SHAPE, K)
        keys.add(student_units(model, SHAPE)[1].key)  # the one block
    assert len(keys) == 5
    model = build_student("mbv2", {"stages": 2, "depths": 1, "widths": 16}, SHAPE, K)
    first, second = student_units(model, SHAPE)[1:3]
    assert first.in_shape == (16, 16, 16) and second.in_shape == (16, 8, 8)


def test_missing_entry_and_unsupported_layout_are_config_errors() -> None:
    table = build_block_table("resnet", SPECS["resnet"][:1], SHAPE, K, measure=_by_params,
                              settings=FAST)
    other = build_student("resnet", {"stages": 2, "widths": [8, 24]}, SHAPE, K)
    with pytest.raises(ConfigError, match="no entry for BasicBlock"):
        predict_latency(table, other, SHAPE)
    with pytest.raises(ConfigError, match="stem/stages/classifier"):
        student_units(build_student("cnn", {}, SHAPE, K), SHAPE)
    with pytest.raises(ConfigError, match="at least one"):
        build_block_table("mbv2", [], SHAPE, K)


def test_measured_prediction_is_sane(tmp_path: Path) -> None:
    """Real timings: positive and finite, and within a loose factor of the whole model."""
    table = build_block_table("mbv2", SPECS["mbv2"], SHAPE, K, settings=FAST)
    table.save(tmp_path / "t.json")
    again = load_table(tmp_path / "t.json")
    for row in again.calibration:
        model = build_student("mbv2", row["spec"], SHAPE, K)
        predicted = predict_latency(again, model, SHAPE)
        assert math.isfinite(predicted) and predicted > 0
        assert 0.1 < predicted / row["measured_ms"] < 10


def test_cli_builds_a_block_table_for_resnet(capsys, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from autokd.cli import main

    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path))
    assert main(["latency-table", "--dataset", "digits", "--space", "resnet",
                 "--calibration", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["space"] == "resnet" and out["ops"] > 0 and not out["cached"]
    assert Path(out["path"]).exists() and "blocks" in out["path"]
    assert main(["latency-table", "--dataset", "digits", "--space", "resnet",
                 "--calibration", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cached"]
