"""``benchmarks/gpu.py``: its ``--quick`` run without Optuna, fvcore or pandas (as on the lent
GPU machine), and the clean skip on a machine without CUDA."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"

# Imports of these fail as if they were not installed; probes (find_spec) still see them,
# since torch itself probes for optional packages without importing them.
_WITHOUT = """
import importlib.machinery, runpy, sys
BLOCKED = {"optuna", "fvcore", "pandas"}
class Missing(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] not in BLOCKED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None:
            spec.loader = cls
        return spec
    @staticmethod
    def create_module(spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)
sys.meta_path.insert(0, Missing)
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp), "HOME": str(tmp),
           "PYTHONPATH": ""}
    return subprocess.run([sys.executable, "-c", _WITHOUT, str(SCRIPT), *args], cwd=tmp,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def test_quick_runs_without_optuna_fvcore_pandas(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--quick")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out == json.loads((tmp_path / "autokd-bench-quick" / "gpu.json").read_text())
    for mode in ("fp32", "bf16_autocast"):
        rate = out["throughput"][mode]["samples_per_s"]
        assert rate["n"] >= 5 and 0 < rate["min"] <= rate["median"] <= rate["max"]
        assert out["throughput"][mode]["cpu_s"]["n"] == rate["n"]
    assert out["throughput"][mode]["amp_active"] is False  # autocast is CUDA-only
    table = out["latency_table"]
    assert table["ops"] > 0 and len(table["held_out"]) >= 3
    for row in table["held_out"]:
        assert row["predicted_ms"] > 0 and row["measured_ms"] > 0
        assert math.isclose(row["error_pct"], 100 * (row["predicted_ms"] - row["measured_ms"])
                            / row["measured_ms"])
    assert "stand-in" in out["student"] or "mbv2" in out["student"]
    assert len(out["environment"]["loadavg"]) == 3 and "host_syncs" not in out
    assert not (ROOT / "results" / "benchmarks" / "gpu.json").exists() or \
        json.loads((ROOT / "results" / "benchmarks" / "gpu.json").read_text())["quick"] is False


def test_without_cuda_it_says_so_and_exits_0(tmp_path: Path) -> None:
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == {"benchmark": "gpu", "skipped": "no CUDA device"}
    assert not (tmp_path / "results").exists()
