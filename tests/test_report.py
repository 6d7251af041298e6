"""``autokd report`` on hand-built studies: every section checked against hand-computed values.

The studies are written exactly as the trial-record contract says a controller writes them
(user attributes, values, constraints), so these tests need no training and run in seconds.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import stat
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from autokd.cli import main
from autokd.config import OBJECTIVES
from autokd.pipeline import compare
from autokd.record import SearchRecord
from autokd.report import build_report, claim_table, fmt, plot_objectives, storage_label
from autokd.study import StudyPaths, storage_url

TEACHER = {"name": "teacher.pt", "hash": "t0", "val_accuracy": 0.98, "test_accuracy": 0.96,
           "params": 100_000, "flops": 1_000_000, "bytes": 400_000, "latency_ms": 1.0,
           "latency_ms_batch": 8.0}
DISTRIBUTIONS = {"depth": IntDistribution(1, 3), "widths_0": CategoricalDistribution([4, 8, 16]),
                 "alpha": FloatDistribution(0.1, 1.0)}


def make_study(root: Path, objectives: tuple[str, ...] = ("accuracy", "flops"),
               storage: str | None = None, name: str = "syn") -> tuple[optuna.Study, StudyPaths]:
    """A study with the user attributes ``autokd.search`` records."""
    paths = StudyPaths(root / name)
    paths.root.mkdir(parents=True)
    directions = ([OBJECTIVES[o][1] for o in objectives] if objectives != ("score",)
                  else ["minimize"])
    study = optuna.create_study(study_name=name, storage=storage_url(paths, None),
                                directions=directions)
    attrs = {"objectives": list(objectives), "mode": "score" if objectives == ("score",)
             else "pareto", "dataset": {"name": "digits", "kind": "image", "input_shape": [1, 8, 8],
                                        "num_classes": 10, "split_hash": "abc",
                                        "sizes": {"train": 1167, "val": 270, "test": 360}},
             "dataset_hash": "abc", "teacher": TEACHER, "teacher_hash": "t0",
             "teacher_ref": "teacher.pt", "limits": {}, "budget": {"trials": 12, "seconds": None},
             "settings": {"epochs": 5, "train": {"epochs": 40}}}
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    if storage:
        paths.config.write_text(yaml.safe_dump({"storage": storage}))
    return study, paths


def add_trial(study: optuna.Study, val: float, test: float, params: int, flops: int,
              latency: float = 0.1, state: TrialState = TrialState.COMPLETE,
              depth: int = 1, width: int = 8, alpha: float = 0.5, **extra: Any) -> None:
    attrs: dict[str, Any] = {
        "strategy": "optuna", "family": "cnn", "spec": {"depth": depth, "widths": [width]},
        "recipe": {"soft_loss": "kl", "alpha": alpha, "temperature": 4.0,
                   "t_schedule": "constant"}, "train": {"lr": 0.003},
        "val_accuracy": val, "test_accuracy": test, "params": params, "flops": flops,
        "bytes": 4 * params, "latency_ms": latency, "constraints": [0.0] * 4}
    attrs.update(compare(attrs, TEACHER))
    attrs.update(extra)
    names = SearchRecord.of(study).objectives
    keys = [OBJECTIVES[n][0] if n in OBJECTIVES else n for n in names]
    values = [attrs[k] for k in keys] if state == TrialState.COMPLETE else None
    study.add_trial(optuna.trial.create_trial(
        state=state, values=values, user_attrs=attrs, distributions=DISTRIBUTIONS,
        params={"depth": depth, "widths_0": width, "alpha": alpha}))


def standard_trials(study: optuna.Study) -> None:
    add_trial(study, 0.95, 0.94, 5_000, 10_000, depth=2, width=8, alpha=0.3)      # 0 front
    add_trial(study, 0.90, 0.86, 12_000, 20_000, depth=2, width=16, alpha=0.9)    # 1 dominated
    add_trial(study, 0.97, 0.95, 30_000, 50_000, depth=3, width=16, alpha=0.5)    # 2 front
    add_trial(study, 0.80, 0.82, 1_000, 2_000, depth=1, width=4, alpha=0.7)       # 3 front
    add_trial(study, 0.0, 0.0, 1, 1, state=TrialState.FAIL,
              fail_reason="training diverged: loss became nan at epoch 3 step 4")  # 4
    add_trial(study, 0.0, 0.0, 1, 1, state=TrialState.FAIL,
              fail_reason="training diverged: loss became inf at epoch 7 step 1")  # 5
    add_trial(study, 0.0, 0.0, 1, 1, state=TrialState.PRUNED,
              prune_reason="pareto: at epoch 4 the optimistic accuracy 0.5 is below 0.9")  # 6
    add_trial(study, 0.93, 0.955, 4_000, 30_000, depth=2, width=4, alpha=0.2)     # 7 dominated


class _Refs(HTMLParser):
    """Collects every src/href attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.script_src: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("src", "href") and value:
                self.refs.append(value)
                if tag == "script":
                    self.script_src.append(value)


def external_refs(text: str) -> list[str]:
    parser = _Refs()
    parser.feed(text)
    return [r for r in parser.refs if r.startswith(("http:", "https:", "//"))] + parser.script_src


@pytest.fixture(scope="module")
def standard(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, StudyPaths,
                                                                 dict[str, Any]]:
    """One report shared by the read-only tests (building it is the slow part)."""
    study, paths = make_study(tmp_path_factory.mktemp("standard"))
    standard_trials(study)
    return study, paths, build_report(study, paths)


def test_front_and_ratios_match_hand_computed_values(standard: Any) -> None:
    _, _, data = standard
    assert [r["trial"] for r in data["front"]] == [2, 0, 3]
    member = data["front"][1]
    assert member["retention"] == pytest.approx(0.94 / 0.96)
    assert member["val_retention"] == pytest.approx(0.95 / 0.98)
    assert member["params_compression"] == pytest.approx(20.0)
    assert member["flops_compression"] == pytest.approx(100.0)
    assert member["latency_speedup"] == pytest.approx(10.0)
    assert member["selection_gap"] == pytest.approx(0.01)
    assert member["recipe"]["alpha"] == 0.3 and "kl" in member["recipe_summary"]


def test_counts_and_grouped_failure_reasons(standard: Any) -> None:
    _, _, data = standard
    counts = data["counts"]
    assert (counts["complete"], counts["fail"], counts["pruned"], counts["total"]) == (5, 2, 1, 8)
    assert len(data["failures"]) == 1
    assert data["failures"][0]["count"] == 2 and data["failures"][0]["trials"] == [4, 5]
    assert data["pruned"][0]["trials"] == [6]
    assert data["status"]["note"] == "search finished"


def test_claim_table_picks_by_validation_and_reports_test(standard: Any) -> None:
    _, _, data = standard
    rows = {r["band"]: r for r in data["claim"]}
    top = rows[">16×"]
    # trial 7 has the better test retention, but trial 0 the better validation retention
    assert top["trials"] == 3 and top["best_trial"] == 0
    assert top["retention"] == pytest.approx(0.94 / 0.96)
    assert top["verdict"] == "better than claimed"
    assert rows["2-4×"]["best_trial"] == 2
    assert rows["8-16×"]["retention"] == pytest.approx(0.86 / 0.96)
    assert rows["8-16×"]["verdict"] == "as claimed"
    assert rows["4-8×"]["verdict"] == "no student in this band"


def test_claim_verdict_below_claim() -> None:
    point = {"trial": 1, "params_compression": 3.0, "val_retention": 0.9, "retention": 0.9}
    assert claim_table([point])[0]["verdict"] == "worse than claimed"


def test_files_written_and_html_is_self_contained(standard: Any) -> None:
    _, paths, data = standard
    html_text = (paths.root / "report.html").read_text()
    assert external_refs(html_text) == []
    assert html_text.count("Plotly.newPlot") == 4  # front, val vs test, hypervolume, importances
    assert "data:image/png;base64," in html_text
    assert (paths.root / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (paths.root / "report.md").read_text()
    assert "| teacher.pt | 98.0 % | 96.0 %" in md and "![Pareto front](pareto.png)" in md
    assert "95-98 %" in md and "270 validation samples" in md
    pareto_csv = (paths.root / "pareto.csv").read_text().splitlines()
    assert len(pareto_csv) == 4 and set(data["files"]) >= {"html", "png", "markdown"}



@pytest.mark.parametrize(("umask", "mode"), [(0o077, 0o600), (0o022, 0o644)],
                         ids=["umask-077", "umask-022"])
def test_report_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """A private study's report stays private: every file gets the same, umask-given mode."""
    study, paths = make_study(tmp_path)
    add_trial(study, 0.9, 0.9, 5_000, 10_000)
    previous = os.umask(umask)
    try:
        build_report(study, paths)
    finally:
        os.umask(previous)
    names = ("report.html", "report.md", "pareto.png", "trials.csv")
    modes = {n: stat.S_IMODE((paths.root / n).stat().st_mode) for n in names}
    assert modes == dict.fromkeys(names, mode)

def test_hypervolume_never_decreases_and_importances_split(standard: Any) -> None:
    _, _, data = standard
    hv = [c["hypervolume"] for c in data["hypervolume"]]
    assert len(hv) == 8 and all(b >= a for a, b in itertools.pairwise(hv)) and 0 < hv[-1] <= 1
    imp = data["importances"]
    assert set(imp["accuracy"]["values"]) == {"depth", "widths_0", "alpha"}
    assert set(imp["cost"]["values"]) == {"depth", "widths_0"}  # alpha cannot change FLOPs
    assert imp["cost_metric"] == "flops"


def test_selection_section(standard: Any) -> None:
    _, _, data = standard
    sel = data["selection"]
    p = (0.97 + 0.95 + 0.80) / 3
    assert sel["val_size"] == 270
    assert sel["val_accuracy_se"] == pytest.approx(math.sqrt(p * (1 - p) / 270))
    assert sel["mean_gap"] == pytest.approx((0.02 + 0.01 - 0.02) / 3)


def test_zero_complete_trials(tmp_path: Path) -> None:
    study, paths = make_study(tmp_path)
    add_trial(study, 0.0, 0.0, 1, 1, state=TrialState.FAIL, fail_reason="out of memory")
    data = build_report(study, paths)
    assert data["front"] == [] and data["status"]["note"].startswith("no complete trials")
    assert "no complete trials yet" in (paths.root / "report.md").read_text()
    assert (paths.root / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert data["importances"]["accuracy"]["unavailable"]


def test_running_study_reports_finished_trials(tmp_path: Path) -> None:
    study, paths = make_study(tmp_path)
    standard_trials(study)
    study.ask()  # a trial another worker is still training
    data = build_report(study, paths)
    assert data["counts"]["running"] == 1 and "still running" in data["status"]["note"]
    assert [r["trial"] for r in data["front"]] == [2, 0, 3]


def test_darts_predicted_latency(tmp_path: Path) -> None:
    study, paths = make_study(tmp_path, objectives=("accuracy", "latency"))
    add_trial(study, 0.9, 0.9, 5_000, 10_000, latency=0.10, strategy="darts",
              predicted_latency_ms=0.12)
    add_trial(study, 0.8, 0.8, 1_000, 2_000, latency=0.05, strategy="darts",
              predicted_latency_ms=0.04)
    data = build_report(study, paths)
    lp = data["latency_prediction"]
    assert [r["error_pct"] for r in lp["rows"]] == [pytest.approx(20.0), pytest.approx(-20.0)]
    assert lp["mean_abs_error_pct"] == pytest.approx(20.0)
    assert data["counts"]["strategies"] == {"darts": 2}
    assert data["front"][0]["latency_error_pct"] == pytest.approx(20.0)
    assert "Predicted vs measured latency" in (paths.root / "report.html").read_text()


def test_three_objectives_get_pairs_and_3d(tmp_path: Path) -> None:
    study, paths = make_study(tmp_path, objectives=("accuracy", "flops", "latency"))
    standard_trials(study)
    build_report(study, paths)
    html_text = (paths.root / "report.html").read_text()
    assert html_text.count("Plotly.newPlot") == 3 + 1 + 3 and "scatter3d" in html_text


def test_score_mode_plots_accuracy_vs_flops(tmp_path: Path) -> None:
    study, paths = make_study(tmp_path, objectives=("score",))
    add_trial(study, 0.9, 0.9, 5_000, 10_000, score=0.4)
    add_trial(study, 0.8, 0.8, 1_000, 2_000, score=0.3)
    data = build_report(study, paths)
    assert data["plot_objectives"] == ["accuracy", "flops"]
    assert [r["trial"] for r in data["front"]] == [1]
    assert plot_objectives(["accuracy", "kd_loss"]) == ["accuracy", "kd_loss"]


def test_kd_gain_from_baseline(tmp_path: Path) -> None:
    study, paths = make_study(tmp_path)
    standard_trials(study)
    study.set_user_attr("baseline", {"0": {"val_accuracy": 0.90, "test_accuracy": 0.89}})
    data = build_report(study, paths)
    gain = {r["trial"]: r for r in data["kd_gain"]}
    assert list(gain) == [0] and gain[0]["kd_gain"] == pytest.approx(0.05)
    assert "+5.0 pp" in (paths.root / "report.md").read_text()


def test_credentials_never_reach_the_report(tmp_path: Path) -> None:
    on_disk, paths = make_study(tmp_path, storage="postgresql://alice:s3cret@db.example/ak")
    standard_trials(on_disk)
    study = optuna.create_study(directions=on_disk.directions)  # storage known only from yaml
    study.add_trials(on_disk.trials)
    for key, value in on_disk.user_attrs.items():
        study.set_user_attr(key, value)
    data = build_report(study, paths)
    text = (paths.root / "report.html").read_text() + (paths.root / "report.md").read_text()
    assert "s3cret" not in text + json.dumps(data)
    assert "postgresql://***@db.example/ak" in text
    remote = SimpleNamespace(_storage=SimpleNamespace(url="postgresql://bob:pw@h:5432/db"))
    assert storage_label(remote, paths) == "postgresql://***@h:5432/db"  # type: ignore[arg-type]
    assert storage_label(on_disk, paths) == "sqlite (study.db in the results directory)"


def test_cli_json_prints_the_front(tmp_path: Path, capsys: Any) -> None:
    study, paths = make_study(tmp_path)
    standard_trials(study)
    assert main(["report", str(paths.root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["trial"] for r in out["front"]] == [2, 0, 3]
    assert out["teacher"]["params"] == 100_000 and "points" not in out


def test_cli_unknown_study_is_one_line_exit_2(tmp_path: Path, capsys: Any) -> None:
    assert main(["report", "nope", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autokd: error: no study 'nope'")


def test_fmt_kinds() -> None:
    assert fmt(0.9876, "pct") == "98.8 %" and fmt(0.012, "pp") == "+1.2 pp"
    assert fmt(12.34, "x") == "12.3×" and fmt(12345, "int") == "12,345"
    assert fmt(None) == "-" and fmt(float("nan"), "pct") == "-"


def test_architecture_labels_name_transformer_and_hf_students() -> None:
    """Reports tell transformer and hf students apart (their keys are not cnn's)."""
    from autokd.models.transformer import normalise_spec
    from autokd.tables import spec_summary

    patches = normalise_spec({"layers": 3, "hidden": 48, "heads": 4, "mlp_ratio": 4, "patch": 5,
                              "pooling": "mean"})
    assert spec_summary(patches) == "L3 D48 H4 m4 p5 mean"
    ids = normalise_spec({"layers": 1, "hidden": 16, "heads": 2, "patch": None,
                          "vocab_size": 100, "pad_id": 0})
    assert spec_summary(ids) == "L1 D16 H2 m2 cls"
    hf = {"base": "teacher", "config": {"model_type": "bert"}, "layers": 2, "hidden_scale": 1.0,
          "intermediate_scale": 0.5, "vocab_size": 200, "pad_id": 0}  # as a trial stores it
    assert spec_summary(hf) == "L2 Dx1.0 Fx0.5"
    assert spec_summary({"depth": 2, "widths": [8, 16], "kernel": 3}) == "d2 w8/16 k3"
