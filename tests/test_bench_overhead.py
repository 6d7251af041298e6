"""``benchmarks/search_overhead.py --quick`` splits every trial's span into its parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._bench import benchmark


@pytest.mark.slow
def test_search_overhead_quick(tmp_path: Path, digits_teacher: object) -> None:
    search_overhead = benchmark("search_overhead")
    result = search_overhead.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "search_overhead.json").read_text())
    assert saved["overhead_share_per_trial_median"] == result["overhead_share_per_trial_median"]
    run = saved["samplers"]["tpe"]
    assert run["trials"] == 3 and len(run["rows"]) == 3
    for row in run["rows"]:
        for clock in ("wall", "cpu"):
            part = row[clock]
            assert part["train_s"] > 0 and part["cost_s"] > 0  # both probes saw the trial
            assert part["span_s"] >= part["train_s"] + part["cost_s"] - 1e-6
            assert part["overhead_s"] == pytest.approx(
                part["span_s"] - part["train_s"] - part["cost_s"], abs=2e-4)
    assert 0 < run["wall"]["overhead_share_per_trial"]["median"] < 1
    # the probes are removed afterwards: the objective is the library's again
    import autokd.objective as objective_module
    from autokd.pipeline import run_distillation
    assert objective_module.run_distillation is run_distillation
