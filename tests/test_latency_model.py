"""The latency table's correction and its held-out error (``autokd.latency_model``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from autokd.errors import ConfigError
from autokd.latency_model import fit_correction, held_out_errors
from autokd.latency_table import build_table, load_table
from autokd.models.supernet import Supernet
from autokd.report.text import latency_text

ROOT = Path(__file__).resolve().parents[1]
DECISIONS = {"depth": [1, 2], "widths_0": [4, 8, 16], "widths_1": [8, 16]}


def _net() -> Supernet:
    return Supernet("cnn", DECISIONS, {"batch_norm": True}, (1, 8, 8), 10)


def _noisy_measure() -> Any:
    """Ops: 1 ms per 1000 params + 0.01; whole models (``Cnn``) also a seeded 'noise' term,
    so no correction fits every model exactly."""
    rng = np.random.default_rng(0)

    def measure(module: torch.nn.Module, shape: tuple[int, ...]) -> float:
        base = 0.01 + sum(p.numel() for p in module.parameters()) / 1000
        whole = hasattr(module, "stem") or hasattr(getattr(module, "module", None), "stem")
        return base * (0.8 + 0.1 * rng.random()) + (0.05 * rng.random() if whole else 0.0)

    return measure


def test_error_is_of_models_the_fit_never_saw() -> None:
    table = build_table(_net(), "tiny", settings=None, measure=_noisy_measure())
    rows = table.calibration
    parts = [r["parts_ms"] for r in rows]
    ops = [r["n_ops"] for r in rows]
    measured = [r["measured_ms"] for r in rows]
    for k, row in enumerate(rows):  # each row's error is that of a fit without it
        others = [j for j in range(len(rows)) if j != k]
        fit = fit_correction([parts[j] for j in others], [ops[j] for j in others],
                             [measured[j] for j in others])
        want = 100 * (fit.predict(parts[k], ops[k]) - measured[k]) / measured[k]
        assert row["loo_error_pct"] == pytest.approx(want)
    # had the evaluated model been in the fit, the error would be the in-sample one: smaller
    full = fit_correction(parts, ops, measured)
    in_sample = np.mean([abs(full.predict(p, o) - m) / m * 100
                         for p, o, m in zip(parts, ops, measured)])
    err = table.error()
    assert err["n"] == len(rows) >= 12 and err["mean_abs_pct"] > in_sample
    assert err["deploy"]["n"] == len(rows) and err["1"]["run_to_run_cv_pct"] is not None


def test_correction_recovers_a_linear_truth_and_falls_back_when_flat() -> None:
    parts, ops = [1.0, 1.5, 2.0, 2.5, 1.2, 3.0, 0.9], [3, 4, 5, 6, 3, 7, 5]
    truth = [0.7 * p + 0.02 * o + 0.1 for p, o in zip(parts, ops)]
    fit = fit_correction(parts, ops, truth)
    assert (fit.scale, fit.per_op, fit.intercept) == pytest.approx((0.7, 0.02, 0.1))
    assert max(abs(e) for e in held_out_errors(parts, ops, truth)) < 1e-9
    flat = fit_correction(parts, ops, [0.5] * 7)  # time unrelated to the ops': no scale
    assert flat.scale == 0 and flat.predict(9.0, 3) == pytest.approx(0.5)
    assert held_out_errors([1.0], [3], [2.0]) == [None]


def test_old_damaged_or_foreign_tables_are_refused(tmp_path: Path) -> None:
    table = build_table(_net(), "tiny", measure=_noisy_measure())
    path = table.save(tmp_path / "t.json")
    again = load_table(path)
    assert again.correction == table.correction and again.error() == table.error()
    raw = json.loads(path.read_text())
    cases = {"version 1, this autokd reads version 2": {**raw, "version": 1},
             "is not an autokd latency table": {**raw, "format": "other"},
             "is damaged": {k: v for k, v in raw.items() if k != "entries_batch"},
             "is damaged \\(TypeError": {**raw, "entries": {"conv": "fast"}}}
    for message, content in cases.items():
        path.write_text(json.dumps(content))
        with pytest.raises(ConfigError, match=message):
            load_table(path)
    path.write_text("{")
    with pytest.raises(ConfigError, match="cannot read"):
        load_table(path)


def test_report_shows_the_table_error() -> None:
    table = build_table(_net(), "tiny", measure=_noisy_measure())
    err = table.error()
    lp = {"rows": [{"trial": 0}], "mean_abs_error_pct": 5.0, "max_abs_error_pct": 7.0,
          "table_error": err}
    text = latency_text(lp)
    assert f"error on {err['n']} held-out" in text
    assert f"at batch 64 mean {err['deploy']['mean_abs_pct']:.1f} %" in text
    assert f"run-to-run variation {err['1']['run_to_run_cv_pct']:.1f} %" in text
    assert "held-out" not in latency_text({**lp, "table_error": None})


@pytest.mark.parametrize("script", ["latency_model.py", "latency_stability.py"])
def test_benchmark_quick(script: str, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(script[:-3], ROOT / "benchmarks" / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # in process: a second interpreter costs seconds
    module.main(["--quick", "--out", str(tmp_path)])
    result = json.loads((tmp_path / script.replace(".py", ".json")).read_text())
    assert result["quick"] and len(result["loadavg_before"]) == 3 and result["cpu_s"] > 0
    if script == "latency_model.py":
        for key in ("mean_error_deploy_batch", "max_error_deploy_batch", "mean_error_batch1",
                    "run_to_run_cv_batch1"):
            assert isinstance(result[key], float) and result[key] >= 0
        assert result["families"]["mlp"]["heldout"] == 4
        assert set(result["targets"]) == {"mean_deploy_le_10pct", "mean_batch1_le_2x_cv",
                                          "max_le_25pct"}
    else:
        assert set(result["cv_of_medians"]) == {"1", "64"} and result["runs"] == 3
