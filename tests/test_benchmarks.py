"""The DARTS protocol benchmarks: their ``--quick`` runs and how censored runs are summarised.

Why: the benchmark scripts are only run by hand for real, so their smoke modes are what keeps
them working; the summary rules (censored runs at their cap, the headline ratio's caveats) are
checked on hand-made cells without training anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _ttfs_summary import break_even, headline_ratio, paired_tests, summarise


def _run_quick(script: str, tmp: Path, *extra: str) -> dict[str, Any]:
    """Run ``benchmarks/<script> --quick`` with HOME and TMPDIR in ``tmp``; its JSON."""
    env = {**os.environ, "HOME": str(tmp), "TMPDIR": str(tmp),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, f"benchmarks/{script}", "--quick", *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = script.removesuffix(".py")
    written = json.loads((tmp / "autokd-bench-quick" / f"{name}.json").read_text())
    assert json.loads(proc.stdout) == written  # stdout is the one JSON document
    return written


@pytest.mark.slow
def test_reference_quick_fixes_a_threshold(tmp_path: Path) -> None:
    out = _run_quick("darts_reference.py", tmp_path)
    entry = out["thresholds"]["digits"]["0.1"]
    assert out["complete"] and out["remaining"] == []
    assert entry["threshold"] == pytest.approx(out["threshold_factor"] * entry["best_val_accuracy"])
    assert entry["best_flops"] <= entry["max_flops"]


@pytest.mark.slow
def test_darts_vs_multitrial_quick_shape(tmp_path: Path) -> None:
    out = _run_quick("darts_vs_multitrial.py", tmp_path)
    assert "darts_time_to_success_ratio" in out  # None: the quick run has no MNIST-1D cells
    ran = {c["method"] for c in out["cells"]}
    assert ran | set(out["methods_unavailable"]) == {"darts", "tpe", "random", "asha",
                                                     "nni_darts"}
    for cell in out["cells"]:
        assert isinstance(cell["reached"], bool) and cell["cpu_s"] > 0 and cell["wall_s"] > 0
        if cell["reached"]:
            assert cell["success"]["flops"] <= cell["max_flops"]
            assert cell["success"]["val_accuracy"] >= cell["threshold"]
    rows = {r["method"]: r for r in out["summary"]}
    assert set(rows) == ran and all(r["cpu_s"]["n"] == 1 for r in rows.values())
    assert not (tmp_path / "nni-experiments").exists()  # NNI wrote nothing under HOME


@pytest.mark.slow
def test_unreachable_threshold_is_censored_not_a_success(tmp_path: Path) -> None:
    out = _run_quick("darts_vs_multitrial.py", tmp_path, "--threshold", "1.01",
                     "--methods", "tpe", "--cap-cpu", "3")
    (cell,) = out["cells"]
    assert not cell["reached"] and cell["status"].startswith("censored")
    assert "success" not in cell and cell["cpu_s"] >= 3.0
    (row,) = out["summary"]
    assert row["successes"] == "0/1"
    assert row["cpu_s"]["median"] == 3.0 and row["cpu_s"]["median_censored"]


def _cell(method: str, seed: int, cpu: float, reached: bool = True,
          dataset: str = "mnist1d") -> dict[str, Any]:
    return {"dataset": dataset, "target": 0.03, "method": method, "seed": seed,
            "reached": reached, "cpu_s": cpu, "wall_s": 2 * cpu, "cap_cpu_s": 100.0,
            "trials": 1}


def test_censored_runs_count_at_their_cap() -> None:
    cells = [_cell("darts", 0, 10.0), _cell("darts", 1, 140.0, reached=False),
             _cell("darts", 2, 30.0)]
    (row,) = summarise(cells)
    assert row["successes"] == "2/3"
    assert row["cpu_s_per_seed"] == [10.0, 100.0, 30.0]  # the cap, not the 140 s it ran
    assert row["cpu_s"]["median"] == 30.0 and not row["cpu_s"]["median_censored"]
    assert row["cpu_s"]["max"] == 100.0


def test_headline_ratio_takes_the_best_multi_trial_method_and_flags_censoring() -> None:
    cells = [_cell("darts", s, 10.0) for s in range(3)]
    cells += [_cell("tpe", s, 40.0) for s in range(3)] + [_cell("random", s, 80.0)
                                                           for s in range(3)]
    head = headline_ratio(summarise(cells))
    assert head["best_multi_trial"] == "tpe" and head["ratio"] == pytest.approx(0.25)
    assert not head["target_met"] and head["note"] == "both medians are observed successes"
    censored = [_cell("darts", s, 150.0, reached=False) for s in range(3)] + cells[3:]
    head = headline_ratio(summarise(censored))
    assert head["ratio"] == pytest.approx(2.5) and "lower bound" in head["note"]


def test_paired_comparison_is_descriptive_below_six_seeds_and_tested_above() -> None:
    few = [_cell("darts", s, 10.0) for s in range(3)] + [_cell("tpe", s, 20.0) for s in range(3)]
    (entry,) = paired_tests(few, summarise(few))
    assert entry["darts_faster_on"] == "3/3" and entry["test"].startswith("descriptive")
    many = [_cell("darts", s, 10.0 + s) for s in range(7)]
    many += [_cell("tpe", s, 30.0 + 2 * s) for s in range(7)]
    (entry,) = paired_tests(many, summarise(many))
    assert entry["test"].startswith("wilcoxon") and entry["p_value"] < 0.05


def test_break_even_says_how_many_trials_darts_would_have_to_save() -> None:
    darts = [_cell("darts", s, 60.0) | {"trained": 2} for s in range(3)]  # 30 s a candidate
    tpe = [_cell("tpe", s, 20.0) | {"trained": 10} for s in range(3)]  # 2 s a trial
    cells = darts + tpe + [_cell("tpe", 3, 100.0, reached=False) | {"trained": 7}]
    (entry,) = break_even(cells, summarise(cells))
    assert entry["versus"] == "tpe" and entry["darts_candidate_in_trials"] == 15.0
    assert entry["best_cpu_s_per_trial"] == 2.0  # the censored run's rate is left out
    assert entry["darts_candidates_to_success"] == 2 and entry["best_trials_to_success"] == 10
    assert entry["trials_needed_for_factor"] == pytest.approx(60.0 / 0.2 / 2.0)
    assert break_even(tpe, summarise(tpe)) == []


@pytest.mark.slow
def test_families_quick_scores_every_space_on_one_scale(tmp_path: Path) -> None:
    out = _run_quick("families.py", tmp_path, "--datasets", "mnist1d")
    summary = out["datasets"]["mnist1d"]
    assert set(summary["spaces"]) == {"cnn1d", "mbv2", "resnet"}
    assert set(out["runs"]) == {f"mnist1d/{s}/0" for s in ("cnn1d", "mbv2", "resnet")}
    for name, space in summary["spaces"].items():
        assert space["hv_val"]["n"] == 1 and 0.0 <= space["hv_val"]["mean"] <= 1.0, name
    assert summary["spaces"]["mbv2"]["vs_cnn1d"]["descriptive"]
    again = _run_quick("families.py", tmp_path, "--datasets", "mnist1d")  # resumes: no reruns
    assert again["runs"] == out["runs"]


@pytest.mark.slow
def test_families_quick_takes_the_spaces_to_compare(tmp_path: Path) -> None:
    out = _run_quick("families.py", tmp_path, "--datasets", "mnist1d", "--spaces", "cnn1d",
                     "transformer")
    spaces = out["datasets"]["mnist1d"]["spaces"]
    assert set(spaces) == {"cnn1d", "transformer"} and "vs_cnn1d" in spaces["transformer"]
    assert set(out["runs"]) == {"mnist1d/cnn1d/0", "mnist1d/transformer/0"}


@pytest.mark.slow
def test_transformer_recipe_quick_pairs_every_condition_by_seed(tmp_path: Path) -> None:
    out = _run_quick("transformer_recipe.py", tmp_path)
    conditions = {f"{t}/{i}" for t in ("logits", "hidden+attention") for i in ("random", "teacher")}
    assert set(out["summary"]) == conditions
    assert set(out["runs"]) == {f"{c}/0" for c in conditions}
    for run in out["runs"].values():
        assert 1 <= run["epoch_to_95"] <= len(run["val_curve"]) == out["protocol"]["epochs"]
        assert 0.0 <= run["test_accuracy"] <= 1.0
    assert out["summary"]["logits/teacher"]["vs_random_init"]["n"] == 1
    again = _run_quick("transformer_recipe.py", tmp_path)  # resumes: nothing re-runs
    assert again["runs"] == out["runs"]


@pytest.mark.slow
def test_image_folder_search_quick_runs_every_step_in_both_modes(tmp_path: Path) -> None:
    """The image-folder path end to end (teacher, mbv2 search, report, export) in memory and
    streamed, through the CLI; both modes must see the same split."""
    out = _run_quick("image_folder_search.py", tmp_path)
    assert out["all_ok"] and out["same_split_hash"]
    for mode in ("memory", "streamed"):
        step = out["steps"][mode]
        assert step["summary"]["finished_trials"] == 2 and step["onnx_written"]


# -- the protocol on another space (--space) ---------------------------------------------------


def _run_quick_stub(module: str, tmp: Path, space: Path, *extra: str) -> dict[str, Any]:
    """``benchmarks/<module>.py --quick --space <space>`` with HOME and TMPDIR in ``tmp``; its
    JSON. A ``sitecustomize`` registers the test-only ``mbv2_stub`` family in the script and
    in every worker process it spawns."""
    space.write_text(yaml.safe_dump(_stub_space(), sort_keys=False))
    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text("import tests._mbv2_stub  # noqa: F401\n")
    env = {**os.environ, "HOME": str(tmp), "TMPDIR": str(tmp),
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, f"benchmarks/{module}.py", "--quick", "--space",
                           str(space), *extra], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads((tmp / "autokd-bench-quick" / f"{module}_{space.stem}.json").read_text())
    assert json.loads(proc.stdout) == written
    assert not (tmp / "autokd-bench-quick" / f"{module}.json").exists()  # defaults untouched
    return written


def _stub_space() -> dict[str, Any]:
    from tests.test_darts_mbv2 import STUB_SPACE

    return STUB_SPACE


@pytest.mark.slow
def test_reference_and_protocol_quick_on_another_space(tmp_path: Path) -> None:
    space = tmp_path / "mbv2_stub.yaml"
    ref = _run_quick_stub("darts_reference", tmp_path, space)
    assert ref["benchmark"] == "darts_reference_mbv2_stub" and ref["complete"]
    assert ref["setup"]["space"] == str(space)
    out = _run_quick_stub("darts_vs_multitrial", tmp_path, space, "--methods", "darts", "tpe",
                          "nni_darts")
    assert out["benchmark"] == "darts_vs_multitrial_mbv2_stub"
    assert out["setup"]["space"] == str(space) and "nni_darts" in out["methods_unavailable"]
    assert {c["method"] for c in out["cells"]} == {"darts", "tpe"}
    for cell in out["cells"]:
        assert cell["space"] == str(space) and cell["cpu_s"] > 0
        if cell["reached"]:
            assert cell["success"]["flops"] <= cell["max_flops"]


@pytest.mark.slow
def test_hf_recipe_quick_runs_the_hf_path_and_verifies_the_export(tmp_path: Path) -> None:
    """Teacher, teacher- and random-init students, search, report and export through the CLI
    on the generated sentiment CSV; the exported ONNX student scores what its card says."""
    pytest.importorskip("transformers")
    out = _run_quick("hf_recipe.py", tmp_path)
    assert set(out["runs"]) == {"kl+ce/teacher/0", "kl+ce/random/0"}
    for key, run in out["runs"].items():
        assert run["rc"] == 0 and run["cpu_s"] > 0 and run["wall_s"] > 0, key
        assert run["init"] == key.split("/")[1]
        assert run["retention"] == pytest.approx(run["test_accuracy"] / out["teacher_test_accuracy"])
    checks = out["checks"]
    assert checks["same_teacher_accuracy"] and checks["one_split_hash"]
    assert checks["onnx_rerun_matches_card"]
    pipe = out["pipeline"]
    assert pipe["verified"] and pipe["report"]["written"]
    assert {s: r["finished_trials"] for s, r in pipe["searches"].items()} == {"hf": 1,
                                                                            "hf_2_layers": 1}
    assert pipe["card"]["spec"]["layers"] == 2 and pipe["card"]["recipe"]["init"] == "teacher"
    assert {"onnx", "hf_onnx"} <= set(pipe["max_abs_diff"])
    assert 0.0 <= out["export_max_abs_diff"] <= 1e-4
    assert pipe["onnx_rerun"]["inputs"] == ["attention_mask", "input_ids"]
    assert all(pipe["artifact_bytes"][a] > 0 for a in ("student.onnx", "student.hf.onnx",
                                                        "hf_model"))
    for key in ("retention_teacher_init_mean", "retention_random_init_mean",
                "bow_floor_test_accuracy"):
        assert isinstance(out[key], float), key
    teacher = Path(out["teacher"]["dir"])  # saved once per protocol, reused by reruns
    assert (teacher / "config.json").is_file() and (teacher / "tokenizer.json").is_file()
