"""``benchmarks/int8.py --quick``: the INT8 benchmark's plumbing, end to end, on digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _quick(tmp: Path) -> dict[str, Any]:
    env = {**os.environ, "HOME": str(tmp), "TMPDIR": str(tmp),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "benchmarks/int8.py", "--quick", "--datasets",
                           "digits"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads((tmp / "autokd-bench-quick" / "int8.json").read_text())
    assert json.loads(proc.stdout) == written  # stdout is the one JSON document
    return written


@pytest.mark.slow
def test_int8_quick_compares_qat_float_and_ptq(tmp_path: Path) -> None:
    out = _quick(tmp_path)
    run = out["runs"]["digits/0"]
    assert run["front"]["int8_trials"] >= 1 and run["best_int8"]["quantize"] == "int8"
    assert any(m["quantize"] == "int8" for m in run["front"]["members"]) == \
        (run["front"]["int8_members"] > 0)
    check = run["export"]
    assert check["int8_equals_card"] and check["card_test_accuracy"] == check["search_test_accuracy"]
    assert max(check["float_parity_max_abs_diff"].values()) <= check["tolerance"]
    for name in ("float_twin", "qat_int8", "ptq_int8"):
        for batch in ("1", "64"):
            t = run["latency"][name][batch]
            assert len(t["rounds_ms"]) >= 5 and t["min_ms"] <= t["median_ms"] <= t["max_ms"]
    sizes = run["bytes"]["qat_int8"]
    assert sizes["float_initializer_bytes"] > 3 * sizes["initializer_bytes"]  # ~4x on weights
    summary = out["datasets"]["digits"]
    assert summary["test_accuracy"]["qat_int8"]["n"] == 1
    assert run["latency"]["loadavg_before"] and run["cpu_s"] > 0
    again = _quick(tmp_path)  # resumes: nothing is run again
    assert again["runs"] == out["runs"]
