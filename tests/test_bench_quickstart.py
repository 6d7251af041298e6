"""``benchmarks/quickstart.py``: the README's quick-start timing, in its smoke mode.

Why: the README quotes this benchmark's numbers; the smoke run keeps the script working and
checks that a cold run really trains the teacher (and a warm one does not), that the wall time
is split into parts that add up, and that a failing search is an error, not a timing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import quickstart


@pytest.mark.slow
def test_quickstart_quick_shape(tmp_path: Path) -> None:
    result = quickstart.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "quickstart.json").read_text())
    assert saved["repeats"] == json.loads(json.dumps(result["repeats"], default=str))
    assert saved["install_time_included"] is False
    assert saved["cores"] >= 1 and saved["versions"]["torch"]
    (pair,) = saved["repeats"]
    cold, warm = pair["cold"], pair["warm"]
    assert cold["teacher_train_s"] is not None  # an empty cache trains the default teacher
    assert warm["teacher_train_s"] is None  # ... and the second search reuses it
    for run in (cold, warm):
        assert run["trials_total"] == 2 and 1 <= run["trials_complete"] <= 2
        assert run["cpu_s"] > 0 and run["trials_s"] > 0
        parts = run["before_trials_s"] + run["trials_s"] + run["after_trials_s"]
        assert parts == pytest.approx(run["wall_s"], abs=0.05)
        assert len(run["load_average_before"]) == 3 == len(run["load_average_after"])
    assert cold["teacher_done_at_s"] <= cold["before_trials_s"]
    assert saved["cold"]["wall_s"]["median"] == cold["wall_s"]


def test_failed_search_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited 2"):
        quickstart.run_once(["search", "--budget", "0"], tmp_path / "cache", tmp_path / "w")


def test_summary_is_min_median_max() -> None:
    runs = [{"wall_s": w, "cpu_s": w / 2, "load_average_before": [1.0, 0, 0],
             "load_average_after": [l_, 0, 0]} for w, l_ in ((3.0, 2.0), (1.0, 4.0), (2.0, 3.0))]
    summary = quickstart._summary(runs)
    assert summary["wall_s"] == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert summary["cpu_s"]["median"] == 1.0
    assert summary["load_average_1min"] == {"min": 1.0, "max": 4.0}
    assert "teacher_train_s" not in summary
