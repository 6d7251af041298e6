"""``benchmarks/trainer.py --quick`` runs every method and writes the headline fields."""

from __future__ import annotations

import json
from pathlib import Path

from tests._bench import benchmark


def test_trainer_quick(tmp_path: Path) -> None:
    trainer = benchmark("trainer")
    result = trainer.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "trainer.json").read_text())
    assert saved["autokd_fit_vs_cached_loop"] == result["autokd_fit_vs_cached_loop"] > 0
    for clock in ("wall_clock", "cpu_time"):
        seconds = saved[clock]["seconds"]
        assert set(seconds) == {"autokd_fit", "autokd_fit_warm", "hand_cached_loop",
                                "hand_cached_loop_fused", "bare_step", "bare_step_fused",
                                "cached_kd_step", "plain_kd_loop", "autokd_train_loop"}
        assert all(0 < s["min"] <= s["median"] <= s["max"] for s in seconds.values())
        assert saved[clock]["bare_reference"] in ("bare_step", "bare_step_fused")
    assert set(saved["meets_targets"]) == set(saved["targets"])
    assert saved["setup"]["threads"] == 1 and saved["quick"] is True
