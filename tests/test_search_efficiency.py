"""benchmarks/search_efficiency.py: its scoring on hand-made traces, and a --quick run.

Why test a benchmark: its numbers decide the default strategy; an AUC that favours the wrong
curve or a p-value read from too few pairs would decide it wrongly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _efficiency_run import sweep_widths
from _efficiency_score import (
    auc,
    cpu_to_reach,
    curve,
    dominated,
    paired_test,
    reference,
    value_at,
)

from autokd.pareto import FrontScale
from autokd.space import load_space

SCALE = FrontScale((0.1, 1.0), {"flops": (100.0, 10_000.0)})


def _events(rows: list[tuple[str, float | None, float]]) -> list[list]:
    """(state, val accuracy, cumulative CPU) -> event rows; FLOPs 1,000, test = val."""
    return [[i, s, v, v, 1000, cpu, cpu, 1.0, 1.0] for i, (s, v, cpu) in enumerate(rows)]


def test_auc_is_zero_for_a_curve_that_never_rises() -> None:
    flat = curve(_events([("C", 0.1, 1.0), ("P", None, 2.0), ("F", None, 3.0)]), SCALE)
    assert auc(flat, 4.0) == 0.0
    assert auc(curve([], SCALE), 4.0) == 0.0


def test_auc_ranks_a_strictly_better_curve_higher() -> None:
    slow = curve(_events([("C", 0.5, 2.0), ("C", 0.8, 3.0)]), SCALE)
    fast = curve(_events([("C", 0.5, 1.0), ("C", 0.8, 2.0)]), SCALE)
    assert 0.0 < auc(slow, 4.0) < auc(fast, 4.0) <= 1.0
    # by hand: HV(0.5) on [2, 3), HV(0.8) on [3, 4], over a horizon of 4
    hv5, hv8 = value_at(slow, 2.5), value_at(slow, 3.5)
    assert auc(slow, 4.0) == pytest.approx((hv5 + hv8) / 4.0)
    # a search that ended before the horizon keeps its last value; after it, nothing counts
    assert auc(fast, 10.0) == pytest.approx((hv5 * 1 + hv8 * 8) / 10.0)
    assert auc(slow, 1.0) == 0.0


def test_cpu_to_reach_and_reference_point() -> None:
    events = _events([("C", 0.5, 1.0), ("P", None, 2.0), ("C", 0.8, 3.0)])
    c = curve(events, SCALE)
    ref = reference(events, c, 2)  # the 2nd counted trial is the pruned one
    assert ref == {"cpu_s": 2.0, "hv_val": value_at(c, 1.0), "hv_test": value_at(c, 1.0, "test")}
    assert cpu_to_reach(c, value_at(c, 3.0)) == 3.0
    assert cpu_to_reach(c, 1.0) is None  # censored: never reached
    assert reference(events, c, 5) is None


def test_wilcoxon_below_six_pairs_is_descriptive() -> None:
    five = paired_test({s: 1.0 + s for s in range(5)}, dict.fromkeys(range(5), 0.0))
    assert five["descriptive"] and five["n"] == 5 and five["wins"] == 5
    assert five["p"] > 0.05  # all five pairs agree, yet two-sided p = 0.0625
    eight = paired_test({s: 1.0 + s for s in range(8)}, dict.fromkeys(range(8), 0.0))
    assert not eight["descriptive"] and eight["p"] < 0.05
    tie = paired_test(dict.fromkeys(range(6), 1.0), dict.fromkeys(range(6), 1.0))
    assert tie["p"] == 1.0
    assert paired_test({0: 1.0}, {1: 1.0})["n"] == 0


def test_dominated_counts_sweep_points_on_test_or_validation() -> None:
    front = [[0.90, 0.80, 1000.0], [0.95, 0.85, 5000.0]]  # [val, test, flops]
    sweep = [[0.85, 0.75, 1000.0], [0.96, 0.84, 6000.0], [0.90, 0.80, 1000.0]]
    assert dominated(front, sweep) == 2  # on test: the first two; an equal point is not
    assert dominated(front, sweep, column=0) == 1  # on validation the second one is better


def test_sweep_widths_spread_over_the_space() -> None:
    assert sweep_widths(load_space("cnn1d")) == [4, 8, 16, 24, 48, 64]
    assert sweep_widths(load_space("cnn")) == [4, 8, 12, 24, 32, 48]


@pytest.mark.slow
def test_quick_run_writes_scores_and_resumes(tmp_path: Path) -> None:
    import search_efficiency

    out = tmp_path / "eff.json"
    doc = search_efficiency.main(["--quick", "--out", str(out)])
    assert set(doc["cells"]) == {"digits/random/0", "digits/asha/0", "digits/sweep/0"}
    assert doc["default_method"] == "asha"  # autokd's default strategy (tpe sampler)
    assert doc["horizons"]["digits"]["cpu_s"] > 0
    assert isinstance(doc["default_cpu_fraction_of_random"], float)
    for cell in doc["cells"].values():
        cpus = [e[5] for e in cell["events"]]
        assert cpus == sorted(cpus) and all(e[7] is not None for e in cell["events"])
    assert doc["summary"][1]["wilcoxon_auc_val_vs_random"]["descriptive"]
    assert out.with_suffix(".png").exists()
    again = search_efficiency.main(["--quick", "--out", str(out)])
    assert again["cells"] == doc["cells"] and len(again["runs"]) == 2  # nothing re-ran


def test_censored_seeds_sort_last_and_rank_as_the_largest_loss() -> None:
    from _efficiency_summary import _censored_logs, _censored_median

    cells = {0: {"cpu_fraction_of_random": 0.2, "censored": False},
             1: {"cpu_fraction_of_random": 0.5, "censored": False},
             2: {"cpu_fraction_of_random": 1.1, "censored": True}}
    assert _censored_median(cells) == {"value": 0.5, "lower_bound": False, "n": 3}
    cells[1] = {"cpu_fraction_of_random": 0.3, "censored": True}
    assert _censored_median(cells)["lower_bound"]  # the middle seed never reached the target
    logs = _censored_logs(cells)
    assert logs[1] == logs[2] > abs(logs[0]) > 0


def test_horizon_waits_for_every_random_cell_then_takes_their_median() -> None:
    from _efficiency_run import Cell
    from search_efficiency import fix_horizon

    def done(seed: int, cpu: float) -> dict:
        events = _events([("C", 0.5, cpu / 2), ("P", None, cpu), ("C", 0.6, 2 * cpu)])
        return {"cell": {"dataset": "d", "method": "random", "seed": seed}, "events": events}

    state = {"horizons": {}, "cells": {"d/random/0": done(0, 10.0), "d/random/1": done(1, 30.0)}}
    running = [Cell("d", "random", 2, 1, "t.pt", 9, reference_trials=2)]
    fix_horizon(state, "d", running, 2)
    assert state["horizons"] == {}  # seed 2 still runs: the horizon must not be fixed yet
    state["cells"]["d/random/2"] = done(2, 14.0)
    fix_horizon(state, "d", [Cell("d", "tpe", 0, 1, "t.pt", 9)], 2)
    assert state["horizons"]["d"]["cpu_s"] == 14.0  # the median CPU at the 2nd counted trial
    fix_horizon(state | {"cells": {}}, "d", [], 2)  # frozen: a later call changes nothing
    assert state["horizons"]["d"]["cpu_s"] == 14.0


@pytest.mark.slow
def test_sweep_that_reaches_its_cpu_cap_is_a_finished_cell() -> None:
    """The CPU cap ends a sweep the way it ends a search: the trials so far are the result."""
    from _common import teacher_for
    from _efficiency_run import Cell, run_cell

    from autokd.config import DataConfig
    from autokd.data import load_data

    _, path = teacher_for(load_data(DataConfig(source="digits")), quick=True)
    out = run_cell(Cell("digits", "sweep", 0, 1, str(path), 6, cpu_limit=1e-6))
    assert "error" not in out, out.get("error")
    assert len(out["events"]) == 1 and out["stopped"].startswith("cpu >=")


def test_every_method_is_also_tested_against_the_default() -> None:
    from _efficiency_summary import _rows, table

    def score(auc: float) -> dict[str, float]:
        return {"auc_val": auc, "auc_test": auc - 0.01}

    scores = {(m, s): score(base + 0.01 * s + (0.05 if m == "asha" else 0.0))
              for m, base in (("random", 0.5), ("tpe", 0.55), ("asha", 0.55)) for s in range(8)}
    rows = {r["method"]: r for r in _rows("mnist1d", scores, "tpe")}
    assert "versus_default" not in rows["random"] and "versus_default" not in rows["tpe"]
    vs = rows["asha"]["wilcoxon_auc_val_vs_default"]
    assert rows["asha"]["versus_default"] == "tpe" and vs["wins"] == 8 and vs["p"] < 0.05
    assert rows["asha"]["wilcoxon_auc_test_vs_default"]["wins"] == 8
    lines = {line.split(" ")[1]: line for line in table(list(rows.values()))}
    assert "vs tpe: val p=" in lines["asha"] and "vs tpe" not in lines["random"]
    assert all("versus_default" not in r for r in _rows("mnist1d", scores, None))
