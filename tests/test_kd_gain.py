"""KD gain over N seeds (--baseline-seeds): the interval math, the lr grid, resuming, reports."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import yaml

from autokd.cli import main
from autokd.config import CostConfig, SearchSettings
from autokd.errors import ConfigError
from autokd.front import pareto_front
from autokd.kd_gain import check_seeds, pick_lr, repeat_seeds, run_baselines
from autokd.paired import gain_summary, t_quantile, wilcoxon_p
from autokd.record import BASELINE_ATTR, repeat_summary
from autokd.report import build_report
from autokd.search import SearchConfig, run_search
from autokd.study import study_paths
from autokd.tables import front_rows
from autokd.teachers import load_teachers
from tests._helpers import TINY_SPACE, quick_teacher

SETTINGS = SearchSettings(cost=CostConfig(latency=False), epochs=2)


def test_interval_matches_a_hand_computation() -> None:
    kd, scratch = [0.90, 0.92, 0.95], [0.88, 0.91, 0.90]
    # by hand: differences 0.02, 0.01, 0.05; mean 0.08/3; deviations -1/150, -1/60, 7/300;
    # variance (sum of squares 0.00086667) / 2 = 0.00043333, sd 0.0208167; se = sd/sqrt(3)
    # = 0.0120185; t(0.975, df 2) = 4.302653 -> half width 0.0517114
    for use_scipy in (True, False):
        s = gain_summary(kd, scratch, use_scipy=use_scipy)
        assert s["gain_mean"] == pytest.approx(0.0266667, abs=1e-6)
        assert s["gain_std"] == pytest.approx(0.0208167, abs=1e-6)
        assert s["ci_low"] == pytest.approx(0.0266667 - 0.0517114, abs=1e-5)
        assert s["ci_high"] == pytest.approx(0.0266667 + 0.0517114, abs=1e-5)
        assert s["kd_mean"] == pytest.approx(0.9233333) and s["scratch_mean"] == pytest.approx(
            0.8966667)
        assert s["wilcoxon_p"] is None and "N = 3 < 6" in s["wilcoxon_note"]


def test_t_table_agrees_with_scipy() -> None:
    for df in range(1, 80):
        assert t_quantile(df, use_scipy=False) == pytest.approx(t_quantile(df), abs=2e-4), df
    with pytest.raises(ValueError):
        t_quantile(0)


def test_wilcoxon_only_from_six_pairs() -> None:
    # six differences of one sign: the exact two-sided p is 2 / 2**6
    p, note = wilcoxon_p([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    assert note is None and p == pytest.approx(2 / 64)
    p, note = wilcoxon_p([0.01, 0.02, 0.03, 0.04, 0.05])
    assert p is None and "0.0625" in note
    assert wilcoxon_p([0.0] * 6) == (1.0, None)


def test_lr_pick_reads_validation_only() -> None:
    grid = {"0.3": {"val_accuracy": 0.80, "test_accuracy": 0.99},
            "1": {"val_accuracy": 0.85, "test_accuracy": 0.50},
            "3": {"val_accuracy": 0.70, "test_accuracy": 0.60}}
    assert pick_lr(grid) == "1"
    grid["1"]["val_accuracy"] = 0.80  # a tie with 0.3: the KD learning rate wins
    assert pick_lr(grid) == "1"
    grid["0.3"]["val_balanced_accuracy"] = 0.9
    grid["1"]["val_balanced_accuracy"] = 0.1
    assert pick_lr(grid, "balanced_accuracy") == "0.3"


@pytest.mark.parametrize("bad", ["0", "1", "-3", "abc", "2.5"])
def test_cli_refuses_bad_seed_counts(bad: str, capsys, tmp_path: Path) -> None:
    assert main(["search", "--baseline-seeds", bad, "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--baseline-seeds" in err and repr(bad) in err
    assert not list(tmp_path.iterdir())  # refused before any work


def test_api_refuses_bad_seed_counts() -> None:
    for bad in (1, -3, True, "3"):
        with pytest.raises(ConfigError, match="baseline-seeds"):
            check_seeds(bad)  # type: ignore[arg-type]
    assert check_seeds(0) == 0 and check_seeds(3) == 3
    assert 7 not in repeat_seeds(7, 5) and len(set(repeat_seeds(7, 5))) == 5


def test_seeded_baseline_records_resumes_and_reports(tmp_path: Path, digits, monkeypatch) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump({**TINY_SPACE, "training": {"lr": 0.03, "epochs": 2}}))
    teacher = str(quick_teacher(tmp_path))
    cfg = SearchConfig(space=str(space), budget=1, name="t", settings=SETTINGS, teacher=[teacher],
                       results=str(tmp_path / "results"), seed=0, device="cpu",
                       baseline_seeds=2)
    # a run killed during the third training of the baseline keeps the first two
    from autokd import kd_gain

    real, calls = kd_gain.run_distillation, []

    def counted(*args, **kwargs):
        calls.append(args[5].seed)
        if len(calls) == 3 and kill["on"]:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    kill = {"on": True}
    monkeypatch.setattr(kd_gain, "run_distillation", counted)
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg)
    study = run_search(dataclasses.replace(cfg)).study  # resumes: nothing is trained twice
    (member,) = pareto_front(study)
    entry = study.user_attrs[BASELINE_ATTR][str(member.number)]
    rep = entry["repeats"]
    # twin + 3 grid runs + 2 KD seeds + 1 scratch seed (seed 1 of scratch is its grid run)
    assert len(calls) == 1 + 3 + 2 + 1 + 1  # + the killed one, trained again on resume
    assert set(rep["lr_grid"]) == {"0.3", "1", "3"}
    assert set(rep["kd"]) == set(rep["scratch"]) == {str(s) for s in rep["seeds"]}
    trial_seed = member.user_attrs["autokd"]["seed"]
    assert rep["seeds"] == repeat_seeds(trial_seed, 2) and trial_seed not in rep["seeds"]
    summary = repeat_summary(entry)
    kd = [rep["kd"][str(s)]["test_accuracy"] for s in rep["seeds"]]
    sc = [rep["scratch"][str(s)]["test_accuracy"] for s in rep["seeds"]]
    assert summary["n"] == 2 and summary["gain_mean"] == pytest.approx(
        (kd[0] - sc[0] + kd[1] - sc[1]) / 2)
    half = 12.7062 * abs((kd[0] - sc[0]) - (kd[1] - sc[1])) / math.sqrt(2) / math.sqrt(2)
    assert summary["ci_high"] - summary["gain_mean"] == pytest.approx(half, rel=1e-4)

    # the CLI summary, report.md and report.html carry it; an old single-twin entry reads too
    assert front_rows(study)[0]["kd_gain_seeds"]["n"] == 2
    paths = study_paths("t", tmp_path / "results")
    data = build_report(study, paths)
    (row,) = data["kd_gain"]
    assert row["seeds_n"] == 2 and row["seeds_gain"] == pytest.approx(summary["gain_mean"])
    md = (paths.root / "report.md").read_text()
    assert "95 % CI" in md and "Wilcoxon signed-rank test: not computed for N = 2 < 6" in md
    assert "95 % CI" in (paths.root / "report.html").read_text()
    assert repeat_summary({"val_accuracy": 0.9, "test_accuracy": 0.9}) is None

    # scratch's lr is chosen on validation: poisoned test labels change no choice
    kill["on"] = False
    before = study.user_attrs[BASELINE_ATTR]
    kept = {**entry, "repeats": {**rep, "lr_grid": {}, "scratch": {}}}  # KD runs are kept
    study.set_user_attr(BASELINE_ATTR, {str(member.number): kept})
    poisoned = dataclasses.replace(digits, y_test=(digits.y_test + 1) % digits.num_classes)
    run_baselines(study, poisoned, load_teachers([teacher], data=digits), SETTINGS, seeds=2)
    after = study.user_attrs[BASELINE_ATTR][str(member.number)]["repeats"]
    old = before[str(member.number)]["repeats"]
    assert after["scratch_lr"] == old["scratch_lr"]
    for f in ("0.3", "1", "3"):
        assert after["lr_grid"][f]["val_accuracy"] == old["lr_grid"][f]["val_accuracy"]
        assert after["lr_grid"][f]["test_accuracy"] != old["lr_grid"][f]["test_accuracy"]
