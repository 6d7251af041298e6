"""``benchmarks/workers.py --quick``: both configurations run end to end and are decomposed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._bench import benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_workers_quick(digits_teacher: object) -> None:
    path = benchmark("_common").result_path("workers", quick=True)
    path.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "workers.py"), "--quick"],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    saved = json.loads(path.read_text())
    assert saved["repeats"] == 1 and saved["trials"] == 2
    assert saved["workers_end_to_end_ratio"] > 0
    one, two = saved["runs"]["one_worker"][0], saved["runs"]["two_workers"][0]
    assert one["trials"] == two["trials"] == 2 and one["failed"] == two["failed"] == 0
    assert len(one["startup_s"]) == 1 and len(two["startup_s"]) == two["workers_seen"] == 2
    assert all(0 < s < two["end_to_end_s"] for s in two["startup_s"])
    assert two["tail_s"] >= 0
