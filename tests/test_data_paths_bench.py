"""``benchmarks/data_paths.py --quick``: the decode and in-memory/streamed comparison runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_data_paths_quick(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "benchmarks/data_paths.py", "--quick"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out == json.loads((tmp_path / "autokd-bench-quick" / "data_paths.json").read_text())
    assert out["same_val_accuracy"] == 1.0 and out["decode"]["images"] == 300
    for mode in ("memory", "stream_w0", "stream_w2"):
        wall = out["trial"][mode]["wall_s"]
        assert wall["n"] == 5 and wall["min"] <= wall["median"] <= wall["max"]
    assert len(out["loadavg_before"]) == 3 and out["decode_images_per_s"] > 0
