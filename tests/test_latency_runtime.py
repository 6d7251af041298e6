"""Latency in the runtime a student deploys in: option, exported-graph timing, when it is
measured in a search, resume refusal, per-runtime tables, and the report naming the runtime."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from autokd import runtime_front
from autokd.cli import main
from autokd.config import CostConfig, SearchSettings
from autokd.errors import ConfigError, StudyError
from autokd.latency_table import TableSettings, device_tag
from autokd.models import build_student
from autokd.quant import deploy
from autokd.quant.deploy import runtime_cost, runtime_module
from autokd.quant.onnx_int8 import OrtModel
from autokd.record import TrialRecord
from autokd.report import front_columns, report_data
from autokd.report.axes import axis_label
from autokd.report.format import teacher_columns
from autokd.report.front import front_records
from autokd.report.trials import trial_points
from autokd.runtime_front import RUNTIME_ATTR
from autokd.search import SearchConfig, run_search
from autokd.study import study_paths
from tests._helpers import TINY_SPACE

FAST = {"warmup": 1, "repeats": 2, "min_block_s": 0.001, "batch_size": 4}


def _mlp() -> torch.nn.Module:
    return build_student("mlp", {}, (64,), 10).eval()


# -- the option ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["search", "--latency-runtime", "tensorrt"],
    ["distill", "--latency-runtime", "tensorrt"],
    ["teacher", "train", "--out", "/nonexistent/t.pt", "--latency-runtime", "TORCH"],
])
def test_bad_runtime_is_one_line_exit_2(argv, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runtime" in err[0], err


def test_onnxruntime_asked_for_but_missing_is_refused(monkeypatch, capsys) -> None:
    monkeypatch.setattr(deploy, "onnxruntime_available", lambda: False)
    assert deploy.default_runtime() == "torch"  # the default falls back quietly
    assert main(["search", "--latency-runtime", "onnxruntime", "--budget", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install onnx onnxruntime" in err[0]


def test_config_validates_runtime() -> None:
    with pytest.raises(ConfigError, match="unknown latency runtime"):
        SearchSettings(cost=CostConfig(runtime="tvm")).validate()
    with pytest.raises(ConfigError, match="times on the CPU"):
        CostConfig(runtime="onnxruntime", device="cuda").validate()
    assert deploy.default_runtime("cuda") == "torch"
    assert CostConfig(runtime="onnxruntime", defer_runtime=True).trial_runtime == "torch"


# -- timing the exported graph ------------------------------------------------------------
@pytest.mark.parametrize("runtime", ["torchscript", "onnxruntime"])
def test_runtime_module_runs_the_exported_graph(runtime) -> None:
    model = _mlp()
    x = torch.randn(3, 64)
    with runtime_module(model, (64,), runtime) as runner:
        assert runner is not model
        assert isinstance(runner, OrtModel) == (runtime == "onnxruntime")
        with torch.no_grad():
            assert torch.allclose(runner(x), model(x), atol=1e-4)
    cost = runtime_cost(model, (64,), CostConfig(runtime=runtime, **FAST))
    eager = runtime_cost(model, (64,), CostConfig(**FAST))
    assert cost.latency_runtime == runtime and eager.latency_runtime == "torch"
    assert cost.latency_ms > 0 and cost.latency_ms != eager.latency_ms
    assert cost.flops == eager.flops and cost.bytes == eager.bytes  # only latency changes


def test_export_failure_falls_back_to_torch_with_reason(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no symbolic for aten::weird")

    monkeypatch.setattr(deploy, "export_float_onnx", broken)
    cost = runtime_cost(_mlp(), (64,), CostConfig(runtime="onnxruntime", **FAST))
    assert cost.latency_runtime == "torch" and cost.latency_ms > 0
    assert "onnxruntime export failed: no symbolic for aten::weird" in cost.latency_fallback


def test_teacher_that_cannot_export_keeps_torch_and_says_so(monkeypatch, digits,
                                                            digits_teacher) -> None:
    from autokd import pipeline

    monkeypatch.setattr(pipeline, "_PROFILE_CACHE", {})  # this profile must not be reused
    monkeypatch.setattr(deploy, "export_float_onnx", lambda *a, **k: 1 / 0)
    profile = pipeline.teacher_profile(digits_teacher, digits,
                                       CostConfig(runtime="onnxruntime", **FAST))
    assert profile["latency_runtime"] == "torch" and profile["latency_ms"] > 0
    assert "onnxruntime export failed: division by zero" in profile["latency_fallback"]
    labels = [c[0] for c in teacher_columns(profile)]
    assert "latency ms (torch)" in labels and "latency timed in torch because" in labels


def test_latency_table_path_is_per_runtime() -> None:
    assert device_tag("cpu", 1, "onnxruntime") == device_tag("cpu", 1) + "-onnxruntime"
    ort = TableSettings.from_cost(CostConfig(runtime="onnxruntime"))
    assert ort.runtime == "onnxruntime"
    assert TableSettings.from_cost(CostConfig(runtime="onnxruntime",
                                              defer_runtime=True)).runtime == "torch"
    from autokd.latency_table import _default_measure

    ms = _default_measure(dataclasses.replace(ort, repeats=1, min_block_s=0.001), "cpu", 1)(
        torch.nn.Linear(8, 4), (8,))
    assert ms > 0


# -- in a search --------------------------------------------------------------------------
def _search(tmp_path: Path, teacher: object, runtime: str, budget: int = 2,
            **settings: object) -> object:
    """A 2-trial, 1-epoch search with the session's cached default teacher."""
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump({**TINY_SPACE, "training": {"lr": 0.005, "epochs": 1}}))
    cost = CostConfig.for_search(runtime=runtime, batch_size=4)
    cfg = SearchConfig(space=str(space), budget=budget, name="rt",
                       settings=SearchSettings(cost=cost, **settings),
                       results=str(tmp_path / "results"), seed=0, device="cpu")
    return run_search(cfg)


def test_front_is_retimed_after_search_once(tmp_path, digits_teacher, monkeypatch) -> None:
    study = _search(tmp_path, digits_teacher, "onnxruntime").study  # latency ranks nothing
    recs = [TrialRecord.of(t) for t in study.trials]
    assert {r.get("latency_runtime") for r in recs} == {"torch"}  # trials stay eager
    stored = study.user_attrs[RUNTIME_ATTR]
    assert stored["runtime"] == "onnxruntime"
    assert stored["teacher"]["latency_runtime"] == "onnxruntime"
    assert stored["trials"] and all(e["latency_runtime"] == "onnxruntime" and e["latency_ms"] > 0
                                    for e in stored["trials"].values())
    # a rerun measures nothing again; a different runtime is refused in one line
    monkeypatch.setattr(runtime_front, "measure_student_cost", lambda *a, **k: 1 / 0)
    again = _search(tmp_path, digits_teacher, "auto").study
    assert again.user_attrs[RUNTIME_ATTR] == stored
    with pytest.raises(StudyError, match="timed latency in onnxruntime, not torch"):
        _search(tmp_path, digits_teacher, "torch")
    # the report names both runtimes
    data = report_data(again, study_paths("rt", str(tmp_path / "results")))
    front = front_records(again, data["teacher"], floor=False)  # 1-epoch students: no floor
    labels = [c[0] for c in front_columns(front)]
    assert "latency ms (torch)" in labels and "latency ms (onnxruntime)" in labels
    assert axis_label("latency", trial_points(again, set())) == "latency ms (batch 1, torch)"
    assert "latency ms (onnxruntime)" in [c[0] for c in teacher_columns(data["teacher"])]
    assert data["latency_runtime"] == {"runtime": "onnxruntime", "trials": "torch",
                                       "front_after_search": True}


def test_latency_objective_times_every_trial_in_runtime(tmp_path, digits_teacher) -> None:
    study = _search(tmp_path, digits_teacher, "onnxruntime",
                    objectives=["accuracy", "latency"]).study
    recs = [TrialRecord.of(t) for t in study.trials]
    assert {r.get("latency_runtime") for r in recs} == {"onnxruntime"}
    assert RUNTIME_ATTR not in study.user_attrs  # nothing left to re-time
    teacher = study.user_attrs["autokd_search"]["teacher"]
    assert teacher["latency_runtime"] == "onnxruntime"  # speed-ups compare like with like


# -- the benchmark's quick mode -------------------------------------------------------------
@pytest.mark.slow
def test_latency_runtime_benchmark_quick(tmp_path) -> None:
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "benchmarks/latency_runtime.py", "--quick"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "autokd-bench-quick" / "latency_runtime.json").read_text())
    assert json.loads(proc.stdout) == out
    rows = out["per_trial"]
    assert out["quick"] and out["complete_trials"] == len(rows) >= 3
    numbers = {t["trial"] for t in rows}
    for t in rows:
        for runtime in ("torch", "onnxruntime"):
            for batch in ("1", "64"):
                s = t["latency"][runtime][batch]
                assert 0 < s["min"] <= s["median"] <= s["max"]
    for key in ("spearman_rho_batch1", "spearman_rho_deploy_batch"):
        assert -1.0 <= out[key] <= 1.0
    for key in ("front_batch1", "front_deploy_batch"):
        f = out[key]
        assert f["torch"] and f["onnxruntime"] and set(f["torch"]) | set(f["onnxruntime"]) <= numbers
        assert f["differ"] == len(set(f["torch"]) ^ set(f["onnxruntime"]))
    assert out["retime_front_members"] == len(out["retimed"]) >= 1
    assert {e["latency_runtime"] for e in out["retimed"].values()} == {"onnxruntime"}
    assert out["eager_over_onnxruntime_batch1"]["min"] > 0
    assert len(out["loadavg_start"]) == 3 and out["cpu_seconds"] > 0 and out["wall_seconds"] > 0


def test_table_times_the_deploy_batch_in_the_runtime() -> None:
    """A deploy-batch timing (``AtBatch``) is exported as the network at that batch: exported
    as it is, the wrapper's fixed batch becomes a constant and the graph has no input at all."""
    from torch import nn

    from autokd.latency_model import AtBatch
    from autokd.latency_table import TableSettings, _default_measure

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    measure = _default_measure(TableSettings(runtime="onnxruntime", warmup=1,
                                             min_block_s=0.002), "cpu", 1)
    one = measure(net, (1, 8, 8))
    batch = measure(AtBatch(net, (1, 8, 8), 256), (1, 8, 8))
    assert batch > 3 * one  # 256 samples cost more than one
