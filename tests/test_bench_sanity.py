"""The ``--quick`` runs of the sanity benchmarks (MNIST-1D paper table, KD vs scratch).

Why: these scripts are run by hand for the committed numbers; their smoke modes are what keeps
them working, so each must run end to end and write the document the README quotes from.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from tests.test_benchmarks import _run_quick

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _mnist1d_paper import PaperCNN, build
from mnist1d_sanity import PUBLISHED, STEPS


def test_paper_models_have_the_published_sizes() -> None:
    """The paper's MLP has 15210 parameters and its CNN 5210 (as the mnist1d notebook
    prints); a wrong kernel, stride or head would change the count."""
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(build("mlp", 0)) == 15210
    assert count(build("cnn", 0)) == 5210
    assert count(build("logistic", 0)) == 410
    assert count(PaperCNN(head="gap")) == 5210 - 125 * 10 + 25 * 10


@pytest.mark.slow
def test_mnist1d_sanity_quick_shape(tmp_path: Path) -> None:
    out = _run_quick("mnist1d_sanity.py", tmp_path)
    assert out["quick"] and out["setup"]["seeds"] == [0]
    steps = {(m, s) for m, s, _, _ in STEPS}
    assert {(r["model"], r["step"]) for r in out["summary"]} == steps
    assert {(r["model"], r["step"]) for r in out["rows"]} == steps
    for row in out["summary"]:
        acc = row["test_accuracy"]
        assert acc["n"] == 1 and 0.0 <= acc["mean"] <= 1.0, row
        assert row["published_test_accuracy"] == PUBLISHED[row["model"]]
        assert math.isclose(row["gap_to_published"], acc["mean"] - PUBLISHED[row["model"]])
    first = {r["model"]: r for r in out["summary"] if r["step"] == "published"}
    assert all(first[m]["change_from_previous_step"] is None for m in PUBLISHED)
    assert {r["params"] for r in out["summary"] if r["step"] == "published"} == {410, 15210, 5210}
    machine = out["machine"]
    assert len(machine["loadavg_before"]) == 3 and machine["cpu_seconds"] > 0


@pytest.mark.slow
def test_kd_vs_scratch_quick_shape(tmp_path: Path) -> None:
    out = _run_quick("kd_vs_scratch.py", tmp_path)
    assert out["quick"] and out["seeds"] == [0]
    assert set(out["results"]) == {"digits", "mnist1d"}
    for name, res in out["results"].items():
        assert res["epochs"] == 1 and set(res["runs"]) == {"kd", "scratch"}, name
        assert [r["seed"] for r in res["runs"]["kd"]] == [0] == [r["seed"] for r in
                                                                 res["runs"]["scratch"]]
        for arm in ("kd", "scratch"):
            acc = res[arm]["test_accuracy"]
            assert acc["n"] == 1 and 0.0 <= acc["mean"] <= 1.0, (name, arm)
        gain = res["kd_gain_test"]["mean"]
        assert gain == pytest.approx(res["kd"]["test_accuracy"]["mean"]
                                     - res["scratch"]["test_accuracy"]["mean"])
        assert res["student"]["flops_compression"] >= 10.0, name
    assert out["results"]["mnist1d"]["dataset"]["sizes"]["test"] == 200  # the 1000-sample cut
